"""Trunk inference speed of keras_aim on each backend against plain PyTorch.

    python benchmarks/inference.py                       # aim_600m at 224
    python benchmarks/inference.py --preset= --width=64 --depth=2 --heads=4 \\
        --image_size=32 --patch=4 --repeats=2            # a smoke run

Contenders, each in a fresh process, interleaved over `--rounds`:
`keras_aim` on every backend in `--backends` (`AIMBackbone(...,
dtype=...).predict_on_batch`, random weights), and `torch_plain`, the same
trunk written directly in PyTorch (`benchmarks/torch_reference.py`, eager,
`torch.inference_mode`), all with the same thread count. For each batch
size and dtype: the median seconds per batch after warm-up, images/s, the
ratio to the plain PyTorch forward, and the achieved FLOP/s as a fraction
of the torch matmul peak measured in the same run (2048x2048 matmuls, that
dtype). bfloat16 runs load the float32 weights cast to bfloat16 and
report the relative output difference to float32 on one batch.

`--attention_tokens` (default 1024: 448x448 images at patch 14) adds the
attention micro-benchmark: `keras.ops.dot_product_attention` with AIM's
per-sample prefix mask against the plain softmax path written with
`keras.ops`, jitted (`jax.jit`, `tf.function(jit_compile=True)`) or eager
on torch, and their largest output difference.

Also reported: the attention kernel that ran in every row and in the
micro-benchmark (`attention_kernel.py`: torch profiler op names, jax
compiled-HLO custom calls, tensorflow graph ops), bfloat16's speed-up over
float32 for the same contender, each worker's peak resident memory, and
the CPU's model and bfloat16 instructions (AVX-512 BF16, AMX) in the
JSON's `environment`. Results: a Markdown table on stdout and `--output`
(JSON).
"""

import json
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attention_kernel  # noqa: E402
import bench_utils  # noqa: E402


def define_flags():
    """Defines the flags (not at import: tests import this file)."""
    flags.DEFINE_list("backends", ["jax", "torch", "tensorflow"], "Backends.")
    flags.DEFINE_string(
        "preset", "aim_600m", "Architecture (empty: the flags)."
    )
    flags.DEFINE_integer("width", 1536, "Trunk width (without --preset).")
    flags.DEFINE_integer("depth", 24, "Blocks (without --preset).")
    flags.DEFINE_integer("heads", 12, "Heads (without --preset).")
    flags.DEFINE_integer("patch", 14, "Patch side (without --preset).")
    flags.DEFINE_integer("image_size", 224, "Image side.")
    flags.DEFINE_list("batch_sizes", ["1", "8"], "Batch sizes.")
    flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Dtypes.")
    flags.DEFINE_integer("warmup", 1, "Untimed calls first.")
    flags.DEFINE_integer("repeats", 3, "Timed calls (median reported).")
    flags.DEFINE_integer("rounds", 2, "Interleaved rounds of every contender.")
    flags.DEFINE_integer("threads", 0, "Threads (0: every core).")
    flags.DEFINE_integer("peak_size", 2048, "Side of the peak-FLOP/s matmuls.")
    flags.DEFINE_integer("attention_tokens", 1024, "Attention bench (0: off).")
    flags.DEFINE_string("output", "benchmarks/results/inference.json", "JSON.")
    flags.DEFINE_string("worker", None, "Internal: run one contender.")
    flags.DEFINE_string("dtype", "float32", "Internal: the worker's dtype.")


FLAGS = flags.FLAGS


def architecture():
    if FLAGS.preset:
        sys.path.insert(0, bench_utils.ROOT)
        from keras_aim.models.aim.aim_presets import PRESETS

        arch = PRESETS[FLAGS.preset]["backbone"]
        return dict(
            width=arch["hidden_dim"],
            depth=arch["num_layers"],
            heads=arch["num_heads"],
            patch=arch["patch_size"],
        )
    return dict(
        width=FLAGS.width,
        depth=FLAGS.depth,
        heads=FLAGS.heads,
        patch=FLAGS.patch,
    )


def _images(batch, size, channels_first=False):
    import numpy as np

    x = np.random.default_rng(batch).normal(size=(batch, size, size, 3))
    x = x.astype("float32")
    return x.transpose(0, 3, 1, 2).copy() if channels_first else x


def _relative_difference(a, b):
    import numpy as np

    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def keras_worker(arch, batches, dtype):
    import keras

    import keras_aim

    if keras.backend.backend() == "torch" and FLAGS.threads:
        import torch

        torch.set_num_threads(FLAGS.threads)

    def build(kind):
        keras.utils.set_random_seed(0)
        return keras_aim.AIMBackbone(
            image_shape=(FLAGS.image_size, FLAGS.image_size, 3),
            patch_size=arch["patch"],
            hidden_dim=arch["width"],
            num_layers=arch["depth"],
            num_heads=arch["heads"],
            dtype=kind,
        )

    model = build(None)
    result = {"times": {}}
    if dtype != "float32":
        reference = model.predict_on_batch(
            _images(batches[0], FLAGS.image_size)
        )
        weights = model.get_weights()
        del model
        model = build(dtype)
        model.set_weights(weights)
        got = model.predict_on_batch(_images(batches[0], FLAGS.image_size))
        result["difference_to_float32"] = _relative_difference(got, reference)
    # What ran (read from the run: profiler ops, compiled HLO, graph ops);
    # on torch the profiled call is an extra untimed predict_on_batch.
    first = _images(batches[0], FLAGS.image_size)
    result["attention_kernel"] = attention_kernel.detect_model(
        model,
        first,
        masked=False,
        call=lambda: model.predict_on_batch(first),
    )
    for batch in batches:
        x = _images(batch, FLAGS.image_size)
        median, times = bench_utils.timed(
            lambda x=x: model.predict_on_batch(x), FLAGS.warmup, FLAGS.repeats
        )
        result["times"][str(batch)] = {"median": median, "all": times}
    return result


def torch_worker(arch, batches, dtype):
    import torch
    import torch_reference

    if FLAGS.threads:
        torch.set_num_threads(FLAGS.threads)
    torch.manual_seed(0)
    model = torch_reference.Trunk(
        FLAGS.image_size,
        arch["patch"],
        arch["width"],
        arch["depth"],
        arch["heads"],
    ).eval()
    result = {"times": {}}
    if dtype != "float32":
        with torch.inference_mode():
            x = torch.from_numpy(_images(batches[0], FLAGS.image_size, True))
            reference = model(x).numpy()
            model = model.to(torch.bfloat16)
            got = model(x.to(torch.bfloat16)).float().numpy()
        result["difference_to_float32"] = _relative_difference(got, reference)
    kind = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    for index, batch in enumerate(batches):
        x = torch.from_numpy(_images(batch, FLAGS.image_size, True)).to(kind)

        def forward(x=x):
            with torch.inference_mode():
                return model(x).float().numpy()

        if index == 0:
            ops, names = attention_kernel.torch_ops(forward)
            result["attention_kernel"] = {
                "backend": "torch",
                "dtype": dtype,
                "masked": False,
                "ran": attention_kernel.torch_kernel_name(ops, names),
                "ops": ops,
            }

        median, times = bench_utils.timed(forward, FLAGS.warmup, FLAGS.repeats)
        result["times"][str(batch)] = {"median": median, "all": times}
    return result


def attention_worker(arch):
    """Fused `dot_product_attention` vs the plain softmax path, prefix mask."""
    import keras
    import numpy as np
    from keras import ops

    backend = keras.backend.backend()
    n, heads = FLAGS.attention_tokens, arch["heads"]
    head_dim = arch["width"] // heads
    rng = np.random.default_rng(0)
    q, k, v = (
        rng.normal(size=(2, n, heads, head_dim)).astype("float32")
        for _ in range(3)
    )
    prefix = np.array([n // 4, n // 2])
    i = np.arange(n)
    mask = (i[None, :] <= i[:, None])[None] | (
        i[None, None, :] < prefix[:, None, None]
    )
    mask = mask[:, None]  # (B, 1, N, N)

    setting = attention_kernel.flash_setting()  # what the layers pass

    def fused(q, k, v, mask):
        return ops.dot_product_attention(
            q, k, v, mask=mask, flash_attention=setting
        )

    def plain(q, k, v, mask):
        qh, kh, vh = (ops.transpose(t, (0, 2, 1, 3)) for t in (q, k, v))
        scores = ops.matmul(qh, ops.transpose(kh, (0, 1, 3, 2)))
        scores = scores / float(np.sqrt(head_dim))
        scores = ops.where(mask, scores, -1e9)
        out = ops.matmul(ops.softmax(scores, axis=-1), vh)
        return ops.transpose(out, (0, 2, 1, 3))

    def compiled(function):
        if backend == "jax":
            import jax

            return jax.jit(function)
        if backend == "tensorflow":
            import tensorflow as tf

            return tf.function(function, jit_compile=True)
        return function

    inputs = [ops.convert_to_tensor(t) for t in (q, k, v)]
    inputs.append(ops.convert_to_tensor(mask))
    result = {}
    outputs = {}
    for name, function in (("fused", fused), ("plain", plain)):
        call = compiled(function)
        median, times = bench_utils.timed(
            lambda call=call: ops.convert_to_numpy(call(*inputs)),
            FLAGS.warmup,
            FLAGS.repeats,
        )
        result[name] = {"median": median, "all": times}
        outputs[name] = ops.convert_to_numpy(call(*inputs))
    result["max_difference"] = float(
        np.max(np.abs(outputs["fused"] - outputs["plain"]))
    )
    # What the fused call ran (keras_aim's layers pass the same arguments).
    result["attention_kernel"] = attention_kernel.detect_call(*inputs)
    return result


def worker(name):
    arch = architecture()
    batches = [int(b) for b in FLAGS.batch_sizes]
    if name == "keras_aim":
        result = keras_worker(arch, batches, FLAGS.dtype)
    elif name == "torch_plain":
        result = torch_worker(arch, batches, FLAGS.dtype)
    elif name == "attention":
        result = attention_worker(arch)
    else:
        raise ValueError(f"Unknown worker {name!r}.")
    result["peak_rss_bytes"] = bench_utils.peak_rss_bytes()
    print(json.dumps(result))


def main(argv):
    del argv
    if FLAGS.worker:
        return worker(FLAGS.worker)
    arch = architecture()
    script = os.path.abspath(__file__)
    passthrough = [
        f"--preset={FLAGS.preset}",
        f"--width={FLAGS.width}",
        f"--depth={FLAGS.depth}",
        f"--heads={FLAGS.heads}",
        f"--patch={FLAGS.patch}",
        f"--image_size={FLAGS.image_size}",
        f"--batch_sizes={','.join(FLAGS.batch_sizes)}",
        f"--warmup={FLAGS.warmup}",
        f"--repeats={FLAGS.repeats}",
        f"--threads={FLAGS.threads}",
        f"--attention_tokens={FLAGS.attention_tokens}",
    ]
    contenders = [("torch_plain", None)] + [
        ("keras_aim", b) for b in FLAGS.backends
    ]
    runs = {}
    for _ in range(FLAGS.rounds):
        for dtype in FLAGS.dtypes:
            for name, backend in contenders:
                args = [f"--worker={name}", f"--dtype={dtype}", *passthrough]
                key = f"{name}:{backend or 'torch'}:{dtype}"
                runs.setdefault(key, []).append(
                    bench_utils.run_worker(script, backend, args)
                )
                print(f"done {key}", file=sys.stderr)
    peaks = {
        d: bench_utils.matmul_peak(d, FLAGS.peak_size, threads=FLAGS.threads)
        for d in FLAGS.dtypes
    }
    from torch_reference import trunk_forward_flops

    flops = trunk_forward_flops(
        FLAGS.image_size, arch["patch"], arch["width"], arch["depth"]
    )
    cpu = bench_utils.cpu_info()
    rows, results = [], []
    for dtype in FLAGS.dtypes:
        for batch in FLAGS.batch_sizes:

            def best(key, batch=batch):
                # The fastest round's median: the least disturbed one.
                return min(r["times"][batch]["median"] for r in runs[key])

            peer = best(f"torch_plain:torch:{dtype}")
            for name, backend in contenders:
                key = f"{name}:{backend or 'torch'}:{dtype}"
                seconds = best(key)
                full = f"{name}:{backend or 'torch'}:float32"
                speedup = best(full) / seconds if full in runs else None
                kernel = runs[key][0].get("attention_kernel") or {}
                achieved = flops * int(batch) / seconds
                difference = runs[key][0].get("difference_to_float32")
                entry = {
                    "contender": name,
                    "backend": backend or "torch",
                    "dtype": dtype,
                    "batch": int(batch),
                    "seconds": seconds,
                    "images_per_second": int(batch) / seconds,
                    "ratio_to_torch_plain": seconds / peer,
                    "fraction_of_matmul_peak": achieved / peaks[dtype],
                    "speedup_over_float32": speedup,
                    "difference_to_float32": difference,
                    "attention_kernel": kernel,
                    "peak_rss_bytes": max(
                        r["peak_rss_bytes"] for r in runs[key]
                    ),
                }
                results.append(entry)
                rows.append(
                    [
                        name,
                        entry["backend"],
                        dtype,
                        batch,
                        f"{seconds:.3f}",
                        f"{entry['images_per_second']:.2f}",
                        f"{entry['ratio_to_torch_plain']:.2f}",
                        f"{100 * entry['fraction_of_matmul_peak']:.0f}%",
                        "" if speedup is None else f"{speedup:.2f}",
                        kernel.get("ran", ""),
                        "" if difference is None else f"{difference:.1e}",
                        f"{entry['peak_rss_bytes'] / 1e9:.2f}",
                    ]
                )
    header = [
        "contender",
        "backend",
        "dtype",
        "batch",
        "s/batch",
        "images/s",
        "time / plain torch",
        "of matmul peak",
        "float32 time / this",
        "attention",
        "rel. diff to f32",
        "peak RSS (GB)",
    ]
    print(
        f"Trunk {arch} at {FLAGS.image_size}px, {flops / 1e9:.1f} GFLOP/image; "
        "matmul peak "
        + ", ".join(f"{d} {p / 1e9:.0f} GFLOP/s" for d, p in peaks.items())
        + f"; fastest of {FLAGS.rounds} rounds, median of {FLAGS.repeats}."
        + f"\nCPU: {cpu['model']}; native bfloat16: {cpu['native_bfloat16']} "
        + f"({', '.join(n for n, on in cpu['flags'].items() if on)}).\n"
    )
    print(bench_utils.table(header, rows))
    attention = {}
    if FLAGS.attention_tokens:
        attention_rows = []
        for backend in FLAGS.backends:
            result = bench_utils.run_worker(
                script, backend, ["--worker=attention", *passthrough]
            )
            attention[backend] = result
            fused, plain = result["fused"]["median"], result["plain"]["median"]
            attention_rows.append(
                [
                    backend,
                    result["attention_kernel"]["ran"],
                    f"{fused * 1e3:.1f}",
                    f"{plain * 1e3:.1f}",
                    f"{plain / fused:.2f}",
                    f"{result['max_difference']:.1e}",
                ]
            )
        print(
            f"\nAttention, {FLAGS.attention_tokens} tokens, batch 2, "
            f"{arch['heads']} heads, prefix mask:\n"
        )
        print(
            bench_utils.table(
                [
                    "backend",
                    "fused kernel",
                    "fused (ms)",
                    "plain softmax (ms)",
                    "plain / fused",
                    "max diff",
                ],
                attention_rows,
            )
        )
    bench_utils.write_json(
        FLAGS.output,
        {
            "architecture": arch,
            "image_size": FLAGS.image_size,
            "flops_per_image": flops,
            "matmul_peak_flops": peaks,
            "results": results,
            "attention": attention,
            "runs": runs,
            "environment": bench_utils.environment(),
        },
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
