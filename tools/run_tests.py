"""Runs lint and the test suite once per Keras backend, in tiers.

Usage: python tools/run_tests.py [--all] [--backends jax,torch,tensorflow]
       [--workers N] [--in-turn] [--no-lint] [-- extra pytest args]

- default (`make test`): lint, every fast test on every backend, and each
  test marked `large` once, on the backend it is about (`--run_large=once`).
- `--all` (`make test-all`, CI): everything on every backend, `large` and
  `extra_large` included.

Each backend runs in its own pytest session (KERAS_BACKEND is read at
import): by default the three at once, one process each; with `--all` or
`--in-turn` one after another, with two xdist workers each.
Prints the 15 slowest tests per backend, a per-backend table and a closing
"N passed, N failed" line; exits non-zero if lint or any backend failed.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINT_PATHS = ["keras_aim", "tests", "tools", "examples", "benchmarks"]
COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)")
SUMMARY = re.compile(
    r"\d+ (passed|failed|skipped|errors?)\b.* in \d+(\.\d+)?s\b"
)


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


def start_backend(backend, workers, options, fast_xla, log):
    """Starts one backend's pytest session, its output into `log`."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    if fast_xla:  # JAX reads it at import, here and in every subprocess
        env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
    command = [sys.executable, "-m", "pytest", "tests", "-q", "-ra"]
    command += ["--durations=15", "--durations-min=1.0"]
    if workers > 1:
        command += ["-n", str(workers), "--dist", "loadfile"]
    command += options
    header = f"\n===== KERAS_BACKEND={backend}: {' '.join(command[2:])}\n"
    # Run at once on 2 cores, the three sessions share the CPU; jax's is the
    # longest (534-601 s against 468-514 s on fresh clones, 2026-12-06),
    # so it ran alone at the end while a core idled. A slightly lower
    # priority for the others lets it keep a core when all three compete.
    lower = concurrent_priority(backend, workers)
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=(lambda: os.nice(lower)) if lower else None,
    )
    return header, process


LONGEST_SESSION = "jax"


def concurrent_priority(backend, workers):
    """The `nice` increment of a backend's session: 2 for all but the
    longest one when the sessions share the cores (one worker each)."""
    return 2 if workers == 1 and backend != LONGEST_SESSION else 0


def finish_backend(backend, header, process, log, start, end=None):
    """Waits for a session; prints its output; returns its results."""
    code = process.wait()
    seconds = (end or time.time()) - start
    log.seek(0)
    output = log.read().decode("utf-8", "replace")
    sys.stdout.write(header + output)
    sys.stdout.flush()
    # pytest's closing line ("N passed, N skipped ... in 12.3s"): the last
    # such line, since a library may log after it while the process exits.
    summaries = [line for line in output.splitlines() if SUMMARY.search(line)]
    summary = summaries[-1] if summaries else ""
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    for number, kind in COUNT.findall(summary):
        key = "errors" if kind.startswith("error") else kind
        if key in counts:
            counts[key] += int(number)
    if code != 0 and counts["failed"] + counts["errors"] == 0:
        # The session died before its summary (a signal, a crash in native
        # code): that is a failure even though no test was counted as one.
        counts["errors"] += 1
        print(
            f"\n!!!!! the {backend} session ended with status {code} "
            "before its summary"
        )
    return code, counts, seconds


def run_backends(backends, workers, options, fast_xla, concurrent):
    """Runs each backend's session, one after another or all at once.

    At once (`make test`): three single-process sessions share the cores,
    so no core idles while one backend imports, collects or runs its last
    slow test; one after another (`make test-all`): each session with
    `workers` xdist workers.
    """
    results = {}
    if concurrent:
        started = []
        for backend in backends:
            log = tempfile.TemporaryFile()
            started.append(
                (
                    backend,
                    log,
                    *start_backend(backend, workers, options, fast_xla, log),
                    time.time(),
                )
            )
        ends = {}
        while len(ends) < len(started):  # each session's own end time
            for backend, _, _, process, _ in started:
                if backend not in ends and process.poll() is not None:
                    ends[backend] = time.time()
            time.sleep(0.5)
        for backend, log, header, process, start in started:
            with log:
                results[backend] = finish_backend(
                    backend, header, process, log, start, ends[backend]
                )
        return results
    for backend in backends:
        with tempfile.TemporaryFile() as log:
            start = time.time()
            header, process = start_backend(
                backend, workers, options, fast_xla, log
            )
            print(header, end="", flush=True)
            results[backend] = finish_backend(backend, "", process, log, start)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="jax,torch,tensorflow")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="xdist workers per backend (default: 1 at once, 2 in turn)",
    )
    parser.add_argument(
        "--in-turn",
        action="store_true",
        help="one backend after another (the default with --all) instead "
        "of all at once",
    )
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
    options = tier_options(args.all) + extra
    concurrent = not (args.all or args.in_turn)
    workers = args.workers or (1 if concurrent else 2)
    results = run_backends(
        args.backends.split(","),
        workers,
        options,
        fast_xla=not args.all,
        concurrent=concurrent,
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
