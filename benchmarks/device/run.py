"""The prepared accelerator run: every device number in one go.

    benchmarks/device/run.sh              # on a lent GPU (jax and torch)
    benchmarks/device/run.sh --dry-run    # the same code path, CPU, tiny

Parts, each in a fresh process with its own time limit (so one that hangs
or runs out of memory costs only its own slot), for each backend in
`--backends` that is installed:

- `train`: the pre-training step (`AIMPretrainer`, prefix-causal mask,
  pixel head, AdamW recipe) at aim_600m geometry in bfloat16 mixed
  precision, at the largest batch of `--batches` that fits: seconds per
  step, images/s, model FLOPs utilisation and peak device memory.
- `inference`: trunk throughput (float32 and bfloat16).
- `kernel`: the attention kernel that actually ran for the masked
  (training) and unmasked (inference) calls: torch from the profiler's op
  names, jax from the compiled HLO's custom calls.
- `parity`: bfloat16 against float32 on one fixed batch (tokens).

Model FLOPs per training step: `6 * P * T * B` for the matmuls (P trunk +
head parameters, T tokens, B images: forward 2, backward 4) plus
attention, `12 * L * T^2 * D * B` (QK^T and AV, forward and backward).
MFU divides that by the step time and `--peak_tflops` (the device's dense
bfloat16 peak; 989 for an H200 SXM, from NVIDIA's data sheet).

Writes `--output` (JSON) and the same path with `.md` (a table).
"""

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))  # benchmarks/: shared helpers
import bench_utils  # noqa: E402
import parts  # noqa: E402

GEOMETRY = {  # aim_600m, and the tiny dry-run stand-in
    "full": dict(
        image_size=224,
        patch_size=14,
        hidden_dim=1536,
        num_layers=24,
        num_heads=12,
        head_hidden_dim=2048,
        head_num_layers=12,
    ),
    "dry": dict(
        image_size=32,
        patch_size=8,
        hidden_dim=64,
        num_layers=2,
        num_heads=2,
        head_hidden_dim=64,
        head_num_layers=1,
    ),
}
REQUIRED = ("keras", "numpy", "absl", "keras_aim")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--backends", default="jax,torch")
    parser.add_argument("--batches", default="256,128,64,32,16,8")
    parser.add_argument("--peak_tflops", type=float, default=989.0)
    parser.add_argument("--part_timeout", type=int, default=150)
    parser.add_argument(
        "--budget", type=int, default=450, help="seconds for the whole run"
    )
    parser.add_argument("--parts", default="kernel,parity,inference,train")
    parser.add_argument(
        "--output", default=os.path.join(ROOT, "benchmarks/results/device")
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.dry_run:
        args.batches = "4,2"
    return args


def installed(name):
    return importlib.util.find_spec(name) is not None


def check_installed(backends):
    """What the run needs: refuse early and say what is missing."""
    missing = [name for name in REQUIRED if not installed(name)]
    if missing:
        raise SystemExit(
            f"ERROR: missing {missing}; install the bundle first: "
            "pip install --no-index --find-links device-bundle keras-aim"
        )
    usable = [b for b in backends if installed(b)]
    skipped = sorted(set(backends) - set(usable))
    if not usable:
        raise SystemExit(f"ERROR: none of the backends {backends} is installed")
    return usable, skipped


def run_parts(names, backend, args, timeout):
    """Runs parts in one fresh process under a time limit; `{part: dict}`.

    On a device each part gets its own process (an out-of-memory or a hang
    costs only its slot); the dry run shares one process per backend, so
    that it stays within two minutes on a CPU.
    """
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=ROOT)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    command = [sys.executable, os.path.abspath(__file__), "--worker"]
    command.append(",".join(names))
    command += ["--batches", args.batches]
    if args.dry_run:
        command.append("--dry-run")
    begin = time.time()
    try:
        result = subprocess.run(
            command,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {n: {"error": f"timed out after {timeout} s"} for n in names}
    seconds = round(time.time() - begin, 1)
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("{")]
    if result.returncode != 0 or not lines:
        error = {"error": result.stderr[-1500:], "seconds": seconds}
        return {n: error for n in names}
    out = json.loads(lines[-1])
    for got in out.values():
        got["seconds"] = seconds if len(names) == 1 else None
    return out


def main(argv=None):
    args = parse_args(argv)
    geometry = GEOMETRY["dry" if args.dry_run else "full"]
    if args.worker:
        batches = [int(b) for b in args.batches.split(",")]
        out = {}
        for name in args.worker.split(","):
            try:
                out[name] = parts.run(name, geometry, batches)
            except Exception as error:  # one part's failure is reported
                out[name] = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(out))
        return 0
    backends, skipped = check_installed(args.backends.split(","))
    results = {
        "dry_run": args.dry_run,
        "geometry": geometry,
        "peak_tflops": args.peak_tflops,
        "machine": {
            "python": platform.python_version(),
            "processor": platform.processor(),
            "cpu": bench_utils.cpu_info(),
            "cpus": os.cpu_count(),
        },
        "skipped_backends": skipped,
        "backends": {},
    }
    begin = time.time()
    names = args.parts.split(",")
    groups = [names] if args.dry_run else [[n] for n in names]
    for index, backend in enumerate(backends):
        got = {}
        for position, group in enumerate(groups):
            left = args.budget - (time.time() - begin)
            if left < 10:
                got.update({n: {"error": "no time left"} for n in group})
                continue
            # Share what is left between this backend's remaining parts
            # and the backends after it.
            later = (len(backends) - index - 1) * len(groups)
            share = left / (len(groups) - position + later)
            timeout = int(max(10, min(share, args.part_timeout * len(group))))
            got.update(run_parts(group, backend, args, timeout))
            for name in group:
                print(f"{backend} {name}: {json.dumps(got[name])[:300]}")
        train = got.get("train", {})
        if "seconds_per_step" in train:
            flops = train["flops_per_step"] / train["seconds_per_step"]
            train["mfu"] = flops / (args.peak_tflops * 1e12)
        results["backends"][backend] = got
    results["wall_seconds"] = round(time.time() - begin, 1)
    write(results, args.output + (".dry" if args.dry_run else ""))
    return 0


def write(results, stem):
    os.makedirs(os.path.dirname(stem), exist_ok=True)
    with open(stem + ".json", "w") as f:
        json.dump(results, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(parts.markdown(results))
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    sys.exit(main())
