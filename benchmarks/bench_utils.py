"""Shared pieces of the speed benchmarks: timing, workers, tables.

Every contender runs in its own fresh process (the Keras backend is fixed
at import), the contenders are interleaved round by round, and each
reports the median of its repeats after warm-up: these machines are
noisy, so only ratios measured in the same run mean much.
"""

import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(function, warmup, repeats):
    """Median and all times (s) of `function()` after `warmup` calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        function()
        times.append(time.perf_counter() - begin)
    return statistics.median(times), times


def peak_rss_bytes():
    """This process's high-water resident memory (`VmHWM`)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def matmul_peak(dtype="float32", size=2048, repeats=5, threads=None):
    """Measured torch matmul FLOP/s on this machine (the roofline)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    kind = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    a = torch.randn(size, size).to(kind)
    b = torch.randn(size, size).to(kind)
    median, _ = timed(lambda: torch.mm(a, b), 2, repeats)
    return 2 * size**3 / median


def run_worker(script, backend, args, timeout=1800):
    """Runs `script --worker ...` in a fresh process; returns its JSON."""
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    if backend:
        env["KERAS_BACKEND"] = backend
    result = subprocess.run(
        [sys.executable, script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{os.path.basename(script)} {' '.join(args)} failed "
            f"({backend}):\n{result.stderr[-3000:]}"
        )
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1])


def write_json(path, payload):
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)


def environment():
    import platform
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version

    versions = {}
    for name in ("keras", "jax", "torch", "tensorflow-cpu", "tensorflow"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu": cpu_info(),
        "load_average": list(os.getloadavg()),
        "versions": versions,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


# The CPU features that decide bfloat16 speed: native bfloat16 dot
# products (AVX-512 BF16) and tile matrix units (AMX), against AVX2 only.
CPU_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


def cpu_info(path="/proc/cpuinfo"):
    """The CPU's model name and which of `CPU_FLAGS` it has."""
    model, present = platform_processor(), set()
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and value.strip():
                    model = value.strip()
                elif key == "flags":
                    present = set(value.split())
                if key == "" and present:
                    break  # the first processor is enough
    except OSError:
        pass
    flags = {name: name in present for name in CPU_FLAGS}
    return {
        "model": model,
        "flags": flags,
        "native_bfloat16": flags["avx512_bf16"] or flags["amx_bf16"],
        # oneDNN's ISA cap, when set, decides whether AMX can be used.
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA")
        or os.environ.get("DNNL_MAX_CPU_ISA"),
        # TensorFlow's inter-op threads: unset here means 1 in keras_aim's
        # TensorFlow workers (`import keras_aim` sets it) and TensorFlow's
        # default in the plain-PyTorch peers' data-free processes.
        "tf_num_interop_threads": os.environ.get(
            "TF_NUM_INTEROP_THREADS", "unset (keras_aim's TensorFlow: 1)"
        ),
    }


def platform_processor():
    import platform

    return platform.processor() or platform.machine()


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)
