"""Runs lint and the whole test suite once per Keras backend.

Usage: python tests/run_all_backends.py [--backends jax,torch,tensorflow]
       [--workers N] [--run-slow] [extra pytest args]

Each backend runs in its own process (KERAS_BACKEND is read at import).
Prints a per-backend table and a closing "N passed, N failed" line; exits
non-zero if lint or any backend failed.
"""

import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINT_PATHS = ["keras_aim", "tests", "examples", "benchmarks"]
COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)")


def run_lint():
    paths = [p for p in LINT_PATHS if os.path.exists(os.path.join(ROOT, p))]
    ruff = [sys.executable, "-m", "ruff"]
    ok = True
    for args in (["check", *paths], ["format", "--check", *paths]):
        result = subprocess.run(ruff + args, cwd=ROOT)
        ok = ok and result.returncode == 0
    return ok


def run_backend(backend, workers, extra):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, "-m", "pytest", "tests", "-q", "-ra"]
    if workers > 1:
        command += ["-n", str(workers), "--dist", "loadfile"]
    command += extra
    print(
        f"\n===== KERAS_BACKEND={backend}: {' '.join(command[2:])}", flush=True
    )
    start = time.time()
    process = subprocess.run(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    sys.stdout.write(process.stdout)
    sys.stdout.flush()
    lines = [line for line in process.stdout.splitlines() if line.strip()]
    summary = lines[-1] if lines else ""
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    for number, kind in COUNT.findall(summary):
        key = "errors" if kind.startswith("error") else kind
        if key in counts:
            counts[key] += int(number)
    return process.returncode, counts, time.time() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="jax,torch,tensorflow")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-lint", action="store_true")
    args, extra = parser.parse_known_args()

    lint_ok = True if args.no_lint else run_lint()
    results = {}
    for backend in args.backends.split(","):
        results[backend] = run_backend(backend, args.workers, extra)

    print("\n===== per-backend results")
    print(
        f"{'backend':<12}{'passed':>8}{'failed':>8}{'errors':>8}"
        f"{'skipped':>9}{'seconds':>9}"
    )
    totals = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    ok = lint_ok
    for backend, (code, counts, seconds) in results.items():
        print(
            f"{backend:<12}{counts['passed']:>8}{counts['failed']:>8}"
            f"{counts['errors']:>8}{counts['skipped']:>9}{seconds:>9.0f}"
        )
        for key in totals:
            totals[key] += counts[key]
        ok = ok and code == 0
    print(f"lint: {'ok' if lint_ok else 'FAILED'}")
    failed = totals["failed"] + totals["errors"] + (0 if lint_ok else 1)
    print(
        f"{totals['passed']} passed, {failed} failed, "
        f"{totals['skipped']} skipped"
    )
    return 0 if ok and totals["passed"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
