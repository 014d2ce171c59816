"""The parts of the device run (`run.py`), each run in its own process with
`KERAS_BACKEND` set: `run(part, geometry, batches)` returns a JSON-able
dict."""

import os
import sys
import time

import numpy as np

# The attention-kernel detection shared with the CPU benchmarks.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import attention_kernel  # noqa: E402

OOM_WORDS = ("out of memory", "resource_exhausted", "resource exhausted")


def backend():
    import keras

    return keras.backend.backend()


def device_name():
    if backend() == "torch":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
        return "cpu"
    if backend() == "jax":
        import jax

        device = jax.devices()[0]
        return f"{device.platform}: {device.device_kind}"
    return "cpu"


def reset_peak_memory():
    if backend() == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()


def peak_memory_bytes():
    """Peak device memory (accelerator) or the process's peak RSS (CPU)."""
    if backend() == "torch":
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.max_memory_allocated())
    if backend() == "jax":
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            return int(stats["peak_bytes_in_use"])
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def is_oom(error):
    return any(word in str(error).lower() for word in OOM_WORDS)


def synchronize(x):
    import keras

    return keras.ops.convert_to_numpy(x)


def timed(function, warmup=2, repeats=5):
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        function()
        times.append(time.perf_counter() - begin)
    return float(np.median(times))


def images(batch, size, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, size, size, 3)).astype("float32")


def backbone(geometry, dtype=None):
    import keras_aim

    g = geometry
    return keras_aim.AIMBackbone(
        image_shape=(g["image_size"], g["image_size"], 3),
        patch_size=g["patch_size"],
        hidden_dim=g["hidden_dim"],
        num_layers=g["num_layers"],
        num_heads=g["num_heads"],
        dtype=dtype,
    )


def num_tokens(geometry):
    return (geometry["image_size"] // geometry["patch_size"]) ** 2


# --- kernel: which attention kernel ran ------------------------------------


def attention_inputs(geometry, batch=2, masked=True):
    import keras

    import keras_aim

    tokens = num_tokens(geometry)
    heads = geometry["num_heads"]
    head_dim = geometry["hidden_dim"] // heads
    rng = np.random.default_rng(0)
    shape = (batch, tokens, heads, head_dim)
    on_cpu = device_name().startswith("cpu")  # jax says "cpu: cpu"
    dtype = "float32" if on_cpu else "bfloat16"
    q, k, v = (
        keras.ops.cast(rng.normal(size=shape).astype("float32"), dtype)
        for _ in range(3)
    )
    mask = None
    if masked:
        prefix = rng.integers(1, tokens, size=batch)
        mask = keras_aim.layers.prefix_causal_mask(prefix, tokens)[:, None]
    return q, k, v, mask


def kernel(geometry, batches):
    report = {"device": device_name()}
    for masked in (True, False):
        q, k, v, mask = attention_inputs(geometry, masked=masked)
        key = "prefix_mask" if masked else "no_mask"
        report[key] = attention_kernel.detect_call(q, k, v, mask)
    if backend() == "torch":
        import torch

        report["flex_attention_available"] = hasattr(
            getattr(torch.nn, "attention", None), "flex_attention"
        ) or _has_module("torch.nn.attention.flex_attention")
    return report


def _has_module(name):
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


# --- parity: bfloat16 against float32 ---------------------------------------


def parity(geometry, batches):
    import keras

    keras.utils.set_random_seed(0)
    full = backbone(geometry)
    half = backbone(geometry, dtype="bfloat16")
    half.set_weights(full.get_weights())
    x = images(2, geometry["image_size"])
    a = synchronize(full.predict_on_batch(x)).astype("float64")
    b = synchronize(half.predict_on_batch(x)).astype("float64")
    cosine = float(
        (a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30)
    )
    return {
        "device": device_name(),
        "max_abs_difference": float(np.abs(a - b).max()),
        "relative_difference": float(
            np.abs(a - b).max() / (np.abs(a).max() + 1e-30)
        ),
        "cosine": cosine,
    }


# --- inference and training throughput -------------------------------------


def largest_batch(batches, attempt):
    """Runs `attempt(batch)` from the largest batch down until one fits."""
    errors = {}
    for batch in sorted(batches, reverse=True):
        reset_peak_memory()
        try:
            return batch, attempt(batch), errors
        except Exception as error:  # OOM types differ by backend
            if not is_oom(error):
                raise
            errors[batch] = "out of memory"
    raise RuntimeError(f"no batch of {batches} fits: {errors}")


def inference(geometry, batches):
    report = {"device": device_name()}
    for dtype in ("float32", "bfloat16"):
        model = backbone(geometry, dtype=dtype)

        def attempt(batch, model=model):
            x = images(batch, geometry["image_size"])
            seconds = timed(lambda: synchronize(model.predict_on_batch(x)))
            return {"seconds_per_batch": seconds}

        batch, got, errors = largest_batch(batches, attempt)
        got.update(
            batch=batch,
            images_per_second=batch / got["seconds_per_batch"],
            peak_memory_bytes=peak_memory_bytes(),
            refused_batches=errors,
        )
        report[dtype] = got
    return report


def train(geometry, batches):
    import keras

    import keras_aim

    keras.config.set_dtype_policy("mixed_bfloat16")
    g = geometry

    def attempt(batch):
        keras.utils.set_random_seed(0)
        pretrainer = keras_aim.AIMPretrainer(
            backbone(g),
            head_hidden_dim=g["head_hidden_dim"],
            head_num_layers=g["head_num_layers"],
        )
        pretrainer.compile(
            optimizer=keras_aim.optimizers.pretraining_optimizer(
                total_steps=1000, batch_size=batch
            )
        )
        x = images(batch, g["image_size"])
        losses = []

        def step():
            losses.append(float(synchronize(pretrainer.train_on_batch(x))))

        seconds = timed(step, warmup=2, repeats=5)
        params = pretrainer.count_params()
        tokens = num_tokens(g)
        flops = 6 * params * tokens * batch
        flops += 12 * g["num_layers"] * tokens**2 * g["hidden_dim"] * batch
        return {
            "seconds_per_step": seconds,
            "parameters": int(params),
            "flops_per_step": float(flops),
            "losses": losses,
        }

    batch, got, errors = largest_batch(batches, attempt)
    got.update(
        device=device_name(),
        batch=batch,
        images_per_second=batch / got["seconds_per_step"],
        peak_memory_bytes=peak_memory_bytes(),
        refused_batches=errors,
        dtype_policy="mixed_bfloat16",
        finite=bool(np.all(np.isfinite(got["losses"]))),
    )
    return got


PARTS = {
    "kernel": kernel,
    "parity": parity,
    "inference": inference,
    "train": train,
}


def run(part, geometry, batches):
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; one of {sorted(PARTS)}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return PARTS[part](geometry, batches)


def markdown(results):
    g = results["geometry"]
    lines = [
        "# Device run" + (" (dry run: CPU, tiny sizes)" * results["dry_run"]),
        "",
        f"Geometry: width {g['hidden_dim']}, {g['num_layers']} blocks, "
        f"{g['num_heads']} heads, {g['image_size']}px / patch "
        f"{g['patch_size']}; pixel head {g['head_hidden_dim']} x "
        f"{g['head_num_layers']}. Wall time {results['wall_seconds']} s.",
        "",
        "| backend | part | result |",
        "|---|---|---|",
    ]
    for name, parts in results["backends"].items():
        for part, got in parts.items():
            lines.append(f"| {name} | {part} | {_summary(part, got)} |")
    return "\n".join(lines) + "\n"


def _summary(part, got):
    if "error" in got:
        return "FAILED: " + got["error"].strip().splitlines()[-1][:120]
    if part == "kernel":
        return (
            f"masked: {got['prefix_mask']['ran']}; unmasked: "
            f"{got['no_mask']['ran']} ({got['device']})"
        )
    if part == "parity":
        return (
            f"bf16 vs f32: max abs {got['max_abs_difference']:.3g}, "
            f"cosine {got['cosine']:.6f}"
        )
    if part == "inference":
        return "; ".join(
            f"{d} {got[d]['images_per_second']:.1f} img/s at batch "
            f"{got[d]['batch']}"
            for d in ("float32", "bfloat16")
        )
    if part == "train":
        mfu = got.get("mfu")
        mfu = f", MFU {100 * mfu:.1f}%" if mfu is not None else ""
        memory = (got.get("peak_memory_bytes") or 0) / 2**30
        return (
            f"{got['images_per_second']:.1f} img/s at batch {got['batch']}, "
            f"{got['seconds_per_step']:.3f} s/step{mfu}, peak {memory:.2f} GiB"
        )
    return str(got)[:120]
