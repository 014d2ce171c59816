"""Peak memory of loading and converting a released AIM checkpoint.

`keras_aim.convert` streams a checkpoint into a Keras model one tensor
at a time, so its peak memory should stay near ONE copy of the model (one
bfloat16 copy when `dtype="bfloat16"`, with no float32 copy). This script
writes a random checkpoint in the released hub layout (`config.json` +
`model.safetensors`), then runs every case in a fresh process and records
its peak resident memory:

    import          import keras_aim and the backend, nothing else
    build_f32       AIMBackbone.from_preset(folder, load_weights=False):
                    the baseline, one float32 copy of the model
    from_preset_f32 AIMBackbone.from_preset(folder)
    build_cfg_f32   build_f32, then model.get_config(): the convert
                    baseline (see below)
    convert_f32     python -m keras_aim.convert folder --output preset
    build_bf16      as build_f32 with dtype="bfloat16" (bfloat16 baseline)
    from_preset_bf16  AIMBackbone.from_preset(folder, dtype="bfloat16")
    build_cfg_bf16  build_bf16, then model.get_config()
    convert_bf16    python -m keras_aim.convert ... --dtype bfloat16
    keras_f32       AIMBackbone.from_preset(keras preset): the float32
                    Keras preset that keras_aim.convert writes (converted
                    once, before the cases)
    keras_bf16      the same preset loaded with dtype="bfloat16"
    naive_f32       the peer: safetensors.numpy.load_file (the whole state
                    dict in memory), then build and assign

Peak RSS is the kernel's high-water mark of the case's process (`VmHWM`,
read by the process itself as it ends: a parent's `ru_maxrss` for a child
can be the parent's own high-water mark, which `exec` carries over). The
convert cases run `keras_aim.convert` through `runpy`, as `python -m`
does, so that they can report it too. Peak RSS counts anonymous memory
(the model, any copies) and the pages of memory-mapped files the process
touched (the naive peer's `load_file` maps the whole file; keras_aim reads
tensor by tensor without a map): clean page cache that the kernel can drop
at any time. The parent therefore also samples the child's
`/proc/<pid>/status` every few milliseconds and reports the peaks of the
anonymous part (`RssAnon`) and of the file-backed part (`RssFile`);
short spikes between two samples can be missed there, never in the peak
RSS column.

Keras's `serialize_keras_object` (called by `get_config`, hence by
`save_to_preset`) imports TensorFlow whenever it is installed, which adds
about 0.5 GB of RSS on the jax and torch backends whatever the model size;
the convert cases are compared with `build_cfg_*`, which pays the same.

Usage:

    python benchmarks/conversion_memory.py                  # jax, 0.23B
    python benchmarks/conversion_memory.py --backend jax,torch,tensorflow
    python benchmarks/conversion_memory.py --preset-size aim_600m

The default checkpoint has aim_600m's width (1536, patch 14, 12 heads) but
8 blocks instead of 24 (0.23B parameters, 0.9 GB in float32) and runs in
about three minutes per backend on 2 CPU cores; `--preset-size aim_600m`
gives the full 0.68B trunk (2.7 GB). Results are printed as a Markdown
table and written to `benchmarks/results/conversion_memory_<backend>.md`
(`..._<backend>_<preset>.md` with `--preset-size`).
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import threading
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("jax", "torch", "tensorflow")
GB = 1e9
KERAS_PRESET = "keras_preset"

# case: (what it does, model dtype, baseline case)
CASES = {
    "import": ("import keras_aim", None, None),
    "build_f32": (
        "build, load_weights=False (one float32 copy)",
        "float32",
        None,
    ),
    "from_preset_f32": ("from_preset(hub folder)", "float32", "build_f32"),
    "build_cfg_f32": (
        "build_f32 + get_config() (see note)",
        "float32",
        None,
    ),
    "convert_f32": (
        "python -m keras_aim.convert (load + save preset)",
        "float32",
        "build_cfg_f32",
    ),
    "build_bf16": (
        'build, load_weights=False, dtype="bfloat16"',
        "bfloat16",
        None,
    ),
    "from_preset_bf16": (
        'from_preset(hub folder, dtype="bfloat16")',
        "bfloat16",
        "build_bf16",
    ),
    "build_cfg_bf16": (
        "build_bf16 + get_config() (see note)",
        "bfloat16",
        None,
    ),
    "convert_bf16": (
        "python -m keras_aim.convert --dtype bfloat16",
        "bfloat16",
        "build_cfg_bf16",
    ),
    "keras_f32": (
        "from_preset(converted Keras preset)",
        "float32",
        "build_f32",
    ),
    "keras_bf16": (
        'from_preset(converted Keras preset, dtype="bfloat16")',
        "bfloat16",
        "build_bf16",
    ),
    "naive_f32": (
        "peer: safetensors load_file (whole dict), then build + assign",
        "float32",
        "build_f32",
    ),
}


def _parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Peak memory of loading/converting an AIM checkpoint."
    )
    parser.add_argument(
        "--backend",
        default="jax",
        help="Keras backend(s), comma-separated: jax, torch, tensorflow",
    )
    parser.add_argument(
        "--preset-size",
        help="build the checkpoint with a released size (e.g. aim_600m) "
        "instead of --width/--blocks/--patch/--num-heads",
    )
    parser.add_argument("--width", type=int, default=1536)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--patch", type=int, default=14)
    parser.add_argument("--num-heads", type=int, default=12)
    parser.add_argument(
        "--checkpoint-dtype",
        default="float32",
        choices=("float32", "bfloat16"),
        help="dtype of the tensors in model.safetensors",
    )
    parser.add_argument(
        "--cases",
        default=",".join(CASES),
        help=f"comma-separated subset of {', '.join(CASES)}",
    )
    parser.add_argument(
        "--workdir",
        default="/tmp/bench_conversion_memory",
        help="scratch folder for the checkpoint and converted presets",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the scratch folder (and reuse its checkpoint next time)",
    )
    parser.add_argument(
        "--results-dir",
        default=os.path.join(REPO, "benchmarks", "results"),
        help="where conversion_memory_<backend>.md is written",
    )
    parser.add_argument(
        "--sample-ms",
        type=float,
        default=5.0,
        help="interval of the /proc/<pid>/status sampling",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    for backend in backends:
        if backend not in BACKENDS:
            parser.error(
                f"--backend must list some of {', '.join(BACKENDS)}; got "
                f"{backend!r}."
            )
    args.backends = backends
    args.case_list = [c.strip() for c in args.cases.split(",") if c.strip()]
    for case in args.case_list:
        if case not in CASES:
            parser.error(
                f"--cases must list some of {', '.join(CASES)}; got {case!r}."
            )
    if args.preset_size is not None:
        sys.path.insert(0, REPO)
        from keras_aim.models.aim.aim_presets import PRESETS

        if args.preset_size not in PRESETS:
            parser.error(
                f"--preset-size must be one of {', '.join(PRESETS)}; got "
                f"{args.preset_size!r}."
            )
        arch = PRESETS[args.preset_size]["backbone"]
        args.width = arch["hidden_dim"]
        args.blocks = arch["num_layers"]
        args.patch = arch["patch_size"]
        args.num_heads = arch["num_heads"]
    return args


# ---------------------------------------------------------------------------
# Writing the checkpoint, one tensor at a time.
# ---------------------------------------------------------------------------


def _tensor_plan(width, blocks, num_heads, patch):
    """`[(key, shape, mean, std)]` in the released layout.

    Key names, shapes and value statistics come from the test reference's
    `random_state_dict`, built with one block; the other blocks reuse block
    0's names and statistics.
    """
    sys.path.insert(0, REPO)
    from tests.reference import random_state_dict

    template = random_state_dict(width, 1, num_heads, patch)
    plan = []
    for key, value in template.items():
        stats = (float(value.mean()), float(value.std()))
        if key.startswith("trunk.blocks.0."):
            suffix = key[len("trunk.blocks.0.") :]
            for i in range(blocks):
                name = f"trunk.blocks.{i}.{suffix}"
                plan.append((name, value.shape) + stats)
        else:
            plan.append((key, value.shape) + stats)
    return plan


def write_safetensors(path, plan, dtype="float32", seed=0):
    """Writes random tensors to `path`, holding one tensor at a time.

    `safetensors.numpy.save_file` needs the whole dict in memory, so the
    file (8-byte header size, JSON header, raw little-endian data) is
    written directly; `safe_open` reads it back in the benchmark.
    """
    code, itemsize = {"float32": ("F32", 4), "bfloat16": ("BF16", 2)}[dtype]
    header, offset = {}, 0
    for key, shape, _, _ in plan:
        size = int(np.prod(shape, dtype=np.int64)) * itemsize
        header[key] = {
            "dtype": code,
            "shape": [int(s) for s in shape],
            "data_offsets": [offset, offset + size],
        }
        offset += size
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, shape, mean, std in plan:
            value = rng.standard_normal(shape, dtype=np.float32)
            value *= std
            value += mean
            if dtype == "bfloat16":
                import ml_dtypes

                value = value.astype(ml_dtypes.bfloat16).view(np.uint16)
            f.write(value.astype(value.dtype.newbyteorder("<")).tobytes())
            del value
    return offset


def prepare_checkpoint(args):
    """Writes (or reuses) the hub folder; returns `(folder, spec)`."""
    sys.path.insert(0, REPO)
    from tests.reference import hub_config

    spec = {
        "width": args.width,
        "blocks": args.blocks,
        "patch": args.patch,
        "num_heads": args.num_heads,
        "dtype": args.checkpoint_dtype,
    }
    folder = os.path.join(args.workdir, "hub")
    marker = os.path.join(folder, "benchmark_spec.json")
    if os.path.isfile(marker):
        with open(marker) as f:
            stored = json.load(f)
        if {k: stored.get(k) for k in spec} == spec:
            print(f"Reusing checkpoint {folder}", file=sys.stderr)
            return folder, stored
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(os.path.join(args.workdir, KERAS_PRESET), ignore_errors=True)
    os.makedirs(folder)
    start = time.perf_counter()
    plan = _tensor_plan(args.width, args.blocks, args.num_heads, args.patch)
    shapes = {k: np.broadcast_to(np.float32(0), s) for k, s, _, _ in plan}
    config = hub_config(shapes, args.num_heads)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    path = os.path.join(folder, "model.safetensors")
    write_safetensors(path, plan, args.checkpoint_dtype)
    spec["parameters"] = sum(int(np.prod(s)) for _, s, _, _ in plan)
    spec["file_bytes"] = os.path.getsize(path)
    with open(marker, "w") as f:
        json.dump(spec, f)
    print(
        f"Wrote {path}: {spec['parameters'] / 1e9:.3f}B parameters, "
        f"{spec['file_bytes'] / GB:.2f} GB, "
        f"{time.perf_counter() - start:.0f} s",
        file=sys.stderr,
    )
    return folder, spec


# ---------------------------------------------------------------------------
# One case, in its own process.
# ---------------------------------------------------------------------------


def _model_bytes(model):
    total = 0
    for variable in model.weights:
        itemsize = 2 if "16" in str(variable.dtype) else 4
        total += int(np.prod(variable.shape)) * itemsize
    return total


def _peak_rss():
    """This process's high-water RSS (`VmHWM`), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmHWM line.")


def _run_convert_cli(folder, output, dtype):
    """Runs `python -m keras_aim.convert` in this process, as `-m` does."""
    import runpy

    sys.argv = ["keras_aim.convert", folder, "--output", output]
    sys.argv += ["--dtype", dtype]
    try:
        runpy.run_module("keras_aim.convert", run_name="__main__")
    except SystemExit as exit:
        if exit.code not in (0, None):
            raise
    with open(os.path.join(output, "metadata.json")) as f:
        parameters = json.load(f)["parameter_count"]
    shutil.rmtree(output, ignore_errors=True)
    itemsize = 2 if dtype == "bfloat16" else 4
    return {"parameters": parameters, "model_bytes": parameters * itemsize}


def run_worker(case, folder, workdir):
    """Runs `case` in this process and prints a JSON line about it."""
    if case.startswith("convert"):
        dtype = CASES[case][1]
        output = os.path.join(workdir, f"converted_{dtype}")
        shutil.rmtree(output, ignore_errors=True)
        info = _run_convert_cli(folder, output, dtype)
        info["peak_rss"] = _peak_rss()
        print(json.dumps(info))
        return

    import keras_aim

    model = None
    dtype = CASES[case][1]
    dtype = None if dtype == "float32" else dtype
    if case.startswith("build"):
        model = keras_aim.AIMBackbone.from_preset(
            folder, load_weights=False, dtype=dtype
        )
        if case.startswith("build_cfg"):
            model.get_config()
    elif case.startswith("from_preset"):
        model = keras_aim.AIMBackbone.from_preset(folder, dtype=dtype)
    elif case.startswith("keras"):
        preset = os.path.join(workdir, KERAS_PRESET)
        model = keras_aim.AIMBackbone.from_preset(preset, dtype=dtype)
    elif case == "naive_f32":
        from safetensors.numpy import load_file

        from keras_aim import convert as conversion

        path = os.path.join(folder, conversion.HUB_WEIGHTS_FILE)
        try:
            state_dict = load_file(path)
        except Exception:  # NumPy has no bfloat16: go through the reader.
            with conversion.open_state_dict(path) as reader:
                state_dict = {k: reader.get(k) for k in reader.keys()}
        model = keras_aim.AIMBackbone.from_preset(folder, load_weights=False)
        conversion.load_released_weights(model, state_dict)
    elif case != "import":
        raise ValueError(f"Unknown worker case {case!r}.")
    info = {"model_bytes": None if model is None else _model_bytes(model)}
    if model is not None:
        info["parameters"] = int(model.count_params())
    info["peak_rss"] = _peak_rss()
    print(json.dumps(info))


_STATUS_FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")


def _read_status(pid):
    values = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in _STATUS_FIELDS:
                    values[name] = int(rest.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return values


def measure(command, backend, sample_s):
    """Runs `command`; returns its sampled peaks, wall time and stdout."""
    env = dict(os.environ, KERAS_BACKEND=backend)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    start = time.perf_counter()
    proc = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peaks = dict.fromkeys(_STATUS_FIELDS, 0)
    done = threading.Event()

    def sample():
        while not done.is_set():
            for name, value in _read_status(proc.pid).items():
                peaks[name] = max(peaks[name], value)
            done.wait(sample_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed with status {proc.returncode}:\n"
            + err[-4000:]
        )
    return {
        "peak_anon": peaks["RssAnon"],
        "peak_file": peaks["RssFile"],
        "seconds": seconds,
        "stdout": out,
    }


def prepare_keras_preset(folder, workdir, backend, sample_s):
    """Converts the hub folder into a float32 Keras preset, once."""
    output = os.path.join(workdir, KERAS_PRESET)
    if os.path.isfile(os.path.join(output, "metadata.json")):
        return output
    shutil.rmtree(output, ignore_errors=True)
    command = [sys.executable, "-m", "keras_aim.convert", folder]
    measure(command + ["--output", output], backend, sample_s)
    return output


def run_case(case, folder, workdir, backend, sample_s):
    script = os.path.abspath(__file__)
    command = [sys.executable, script, "--worker", case, "--folder", folder]
    command += ["--workdir", workdir]
    result = measure(command, backend, sample_s)
    lines = [ln for ln in result.pop("stdout").splitlines() if ln.strip()]
    result.update(json.loads(lines[-1]))
    return result


# ---------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------


def _gb(value):
    return "" if value is None else f"{value / GB:.2f}"


def _ratio(value):
    return "" if value is None else f"{value:.2f}"


def format_table(results):
    """Markdown table of `{case: result}`."""
    lines = [
        "| case | what | peak RSS (GB) | peak anon (GB) | peak file-backed "
        "(GB) | model (GB) | peak / baseline | (peak - baseline) / model "
        "| (anon - baseline anon) / model | (anon - import anon) / model "
        "| wall (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case, r in results.items():
        what, _, base_case = CASES[case]
        base = results.get(base_case) if base_case else None
        model = r.get("model_bytes")
        ratio = extra = extra_anon = over_import = None
        start = results.get("import")
        if start is not None and model:
            over_import = (r["peak_anon"] - start["peak_anon"]) / model
        if base is not None:
            ratio = r["peak_rss"] / base["peak_rss"]
            if model:
                extra = (r["peak_rss"] - base["peak_rss"]) / model
                extra_anon = (r["peak_anon"] - base["peak_anon"]) / model
        baseline = " (baseline)" if case.startswith("build") else ""
        lines.append(
            f"| {case}{baseline} | {what} | {_gb(r['peak_rss'])} | "
            f"{_gb(r['peak_anon'])} | {_gb(r['peak_file'])} | "
            f"{_gb(model)} | {_ratio(ratio)} | {_ratio(extra)} | "
            f"{_ratio(extra_anon)} | {_ratio(over_import)} | "
            f"{r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def write_report(path, backend, spec, results, command, seconds):
    from importlib.metadata import version

    size = spec["parameters"] / 1e9
    text = [
        f"# Conversion peak memory, {backend} backend",
        "",
        f"Command: `{command}`",
        "",
        f"Checkpoint: hub layout, width {spec['width']}, {spec['blocks']} "
        f"blocks, patch {spec['patch']}, {spec['num_heads']} heads, "
        f"{size:.3f}B parameters, {spec['dtype']} "
        f"({spec['file_bytes'] / GB:.2f} GB file).",
        f"Keras {version('keras')}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, "
        f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}; "
        f"{seconds:.0f} s for all cases.",
        "",
        format_table(results),
        "",
        "Each case runs in a fresh process. Peak RSS is its `VmHWM`; it "
        "includes the pages of memory-mapped files the process touched "
        "(clean page cache, shown as file-backed): the naive peer maps the "
        "whole safetensors file, keras_aim reads one tensor at a time "
        "without a map. "
        "Anon and file-backed peaks are sampled every few ms. Baselines: "
        "build_f32 / build_bf16 for the from_preset and naive cases, "
        "build_cfg_f32 / build_cfg_bf16 for the convert cases: Keras's "
        "`get_config` serialization imports TensorFlow whenever it is "
        "installed (about 0.5 GB on jax and torch, whatever the model "
        "size), and `save_to_preset` calls it. The keras cases load the "
        "float32 Keras preset that `keras_aim.convert` wrote from the same "
        "checkpoint (`model.weights.h5`). The last ratio column is the "
        "memory the case adds over a process that only imported keras_aim, "
        "in units of the model's own size.",
        "",
    ]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(text))


def main(argv=None):
    args = _parse_args(argv)
    if args.worker:
        run_worker(args.worker, args.folder, args.workdir)
        return 0
    command = "python benchmarks/conversion_memory.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    os.makedirs(args.workdir, exist_ok=True)
    folder, spec = prepare_checkpoint(args)
    try:
        for backend in args.backends:
            start = time.perf_counter()
            results = {}
            if any(c.startswith("keras") for c in args.case_list):
                print(f"[{backend}] converting ...", file=sys.stderr)
                prepare_keras_preset(
                    folder, args.workdir, backend, args.sample_ms / 1e3
                )
            for case in args.case_list:
                print(f"[{backend}] {case} ...", file=sys.stderr, end=" ")
                sys.stderr.flush()
                results[case] = run_case(
                    case, folder, args.workdir, backend, args.sample_ms / 1e3
                )
                r = results[case]
                print(
                    f"peak {r['peak_rss'] / GB:.2f} GB, {r['seconds']:.1f} s",
                    file=sys.stderr,
                )
            seconds = time.perf_counter() - start
            print(f"\n## {backend}\n\n{format_table(results)}\n")
            suffix = f"_{args.preset_size}" if args.preset_size else ""
            path = os.path.join(
                args.results_dir, f"conversion_memory_{backend}{suffix}.md"
            )
            write_report(path, backend, spec, results, command, seconds)
            print(f"Wrote {path} ({seconds:.0f} s)", file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
