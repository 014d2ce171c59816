"""Runs lint and the test suite once per Keras backend, in tiers.

Usage: python tools/run_tests.py [--all] [--backends jax,torch,tensorflow]
       [--workers N] [--no-lint] [-- extra pytest args]

- default (`make test`): lint, every fast test on every backend, and each
  test marked `large` once, on the backend it is about (`--run_large=once`).
- `--all` (`make test-all`, CI): everything on every backend, `large` and
  `extra_large` included.

Each backend runs in its own process (KERAS_BACKEND is read at import).
Prints the 15 slowest tests per backend, a per-backend table and a closing
"N passed, N failed" line; exits non-zero if lint or any backend failed.
"""

import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINT_PATHS = ["keras_aim", "tests", "tools", "examples", "benchmarks"]
COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)")


def run_lint():
    paths = [p for p in LINT_PATHS if os.path.exists(os.path.join(ROOT, p))]
    ruff = [sys.executable, "-m", "ruff"]
    ok = True
    for args in (["check", *paths], ["format", "--check", *paths]):
        result = subprocess.run(ruff + args, cwd=ROOT)
        ok = ok and result.returncode == 0
    return ok


def tier_options(run_all):
    if run_all:
        return ["--run_large=all", "--run_extra_large"]
    return ["--run_large=once"]


def run_backend(backend, workers, options, fast_xla):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    if fast_xla:  # JAX reads it at import, here and in every subprocess
        env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
    command = [sys.executable, "-m", "pytest", "tests", "-q", "-ra"]
    command += ["--durations=15", "--durations-min=1.0"]
    if workers > 1:
        command += ["-n", str(workers), "--dist", "loadfile"]
    command += options
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
    parser.add_argument(
        "--all",
        action="store_true",
        help="every tier on every backend (large and extra_large included)",
    )
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]

    start = time.time()
    lint_ok = True if args.no_lint else run_lint()
    results = {}
    options = tier_options(args.all) + extra
    for backend in args.backends.split(","):
        results[backend] = run_backend(
            backend, args.workers, options, fast_xla=not args.all
        )

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
    tier = "all tiers" if args.all else "fast + large once"
    print(f"wall time: {time.time() - start:.0f} s ({tier})")
    failed = totals["failed"] + totals["errors"] + (0 if lint_ok else 1)
    print(
        f"{totals['passed']} passed, {failed} failed, "
        f"{totals['skipped']} skipped"
    )
    return 0 if ok and totals["passed"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
