"""How fast each framework multiplies the matrices of an AIM training step.

    python benchmarks/gemm_rate.py                  # width 768 (`mid`)
    python benchmarks/gemm_rate.py --width=128 --tokens=2048 --depth=4 \
        --head_depth=2                              # the main job's model

A pre-training step of the `mid` model of `train_step.py` spends most of
its time in the dense layers' matrix products. This times exactly those
products, each framework's own matmul in a fresh process (jax: `jax.jit`
of `a @ b`; torch: `torch.matmul`; tensorflow: `tf.function` of
`tf.linalg.matmul`), so that a training step's speed can be set against
what the framework's GEMM allows on this CPU. For every dense layer of a
block (`qkv` D->3D, `proj` D->D, `fc1` D->4D, `fc2` 4D->D, with M =
batch x tokens rows) the three products of a training step:

    forward      x (M,K) @ W (K,N)
    grad_input   g (M,N) @ W^T        (transposed operand, no copy)
    grad_kernel  x^T @ g (K,M)@(M,N)  (transposed operand, no copy)

in float32 and bfloat16. Reports GFLOP/s per product and the seconds the
dense products of one whole training step take (`--depth` trunk blocks
with all four layers, `--head_depth` pixel-head blocks with `fc1` and
`fc2`: the `mid` model has 12 and 4 of width 768; the patch embedding and
the head's input and output projections are left out, under 3% of the
FLOPs there), and the ratio to torch; a Markdown table on stdout and
`--output` (JSON), with the CPU's bfloat16 instructions.
"""

import json
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_utils  # noqa: E402

BACKENDS = ("torch", "jax", "tensorflow")
PRODUCTS = ("forward", "grad_input", "grad_kernel")


def define_flags():
    """Defines the flags (not at import: tests import this file)."""
    flags.DEFINE_list("backends", list(BACKENDS), "Frameworks to time.")
    flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Compute dtypes.")
    flags.DEFINE_integer("width", 768, "Model width D.")
    flags.DEFINE_integer("tokens", 512, "Rows M (batch x tokens).")
    flags.DEFINE_integer("depth", 12, "Trunk blocks in one step.")
    flags.DEFINE_integer("head_depth", 4, "Pixel-head blocks (MLP only).")
    flags.DEFINE_integer("repeats", 5, "Timed repeats (median reported).")
    flags.DEFINE_integer("inner", 10, "Products per timed repeat.")
    flags.DEFINE_integer("rounds", 2, "Interleaved rounds (best kept).")
    flags.DEFINE_string("output", "benchmarks/results/gemm_rate.json", "JSON.")
    flags.DEFINE_string("worker", None, "Internal: time one framework.")


FLAGS = flags.FLAGS


def layers(width, depth=1, head_depth=0):
    """`(name, K, N, count)` of the dense layers of width `width`: how
    many of each a step has (`depth` trunk blocks, `head_depth` pixel-head
    blocks, which have the MLP only)."""
    return [
        ("qkv", width, 3 * width, depth),
        ("proj", width, width, depth),
        ("fc1", width, 4 * width, depth + head_depth),
        ("fc2", 4 * width, width, depth + head_depth),
    ]


def operand_shapes(product, m, k, n):
    """The stored shapes of the two operands (transposes are flags)."""
    return {
        "forward": ((m, k), (k, n)),
        "grad_input": ((m, n), (k, n)),  # g @ W^T
        "grad_kernel": ((m, k), (m, n)),  # x^T @ g
    }[product]


def multiplier(backend, dtype):
    """`make(product, a, b)` -> a no-argument call doing the product."""
    if backend == "torch":
        import torch

        kind = getattr(torch, dtype)

        def make(product, a, b):
            a, b = torch.from_numpy(a).to(kind), torch.from_numpy(b).to(kind)
            if product == "forward":
                return lambda: torch.matmul(a, b)
            if product == "grad_input":
                return lambda: torch.matmul(a, b.t())
            return lambda: torch.matmul(a.t(), b)

        return make
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        functions = {
            "forward": jax.jit(lambda a, b: a @ b),
            "grad_input": jax.jit(lambda a, b: a @ b.T),
            "grad_kernel": jax.jit(lambda a, b: a.T @ b),
        }

        def make(product, a, b):
            a, b = jnp.asarray(a, dtype), jnp.asarray(b, dtype)
            f = functions[product]
            return lambda: f(a, b).block_until_ready()

        return make
    if backend == "tensorflow":
        import tensorflow as tf

        flags_of = {
            "forward": {},
            "grad_input": {"transpose_b": True},
            "grad_kernel": {"transpose_a": True},
        }

        def make(product, a, b):
            a = tf.cast(tf.constant(a), dtype)
            b = tf.cast(tf.constant(b), dtype)
            f = tf.function(
                lambda a, b: tf.linalg.matmul(a, b, **flags_of[product])
            )
            return lambda: f(a, b)  # eager calls on the CPU are synchronous

        return make
    raise ValueError(f"Unknown backend {backend!r}; of {list(BACKENDS)}.")


def worker(backend):
    import numpy as np

    rng = np.random.default_rng(0)
    results = []
    for dtype in FLAGS.dtypes:
        make = multiplier(backend, dtype)
        for name, k, n, count in layers(
            FLAGS.width, FLAGS.depth, FLAGS.head_depth
        ):
            for product in PRODUCTS:
                shape_a, shape_b = operand_shapes(product, FLAGS.tokens, k, n)
                a = rng.standard_normal(shape_a).astype("float32")
                b = rng.standard_normal(shape_b).astype("float32")
                call = make(product, a, b)

                def inner(call=call):
                    for _ in range(FLAGS.inner):
                        call()

                median, _ = bench_utils.timed(inner, 2, FLAGS.repeats)
                seconds = median / FLAGS.inner
                flops = 2 * FLAGS.tokens * k * n
                results.append(
                    {
                        "dtype": dtype,
                        "layer": name,
                        "count": count,
                        "product": product,
                        "seconds": seconds,
                        "gflops": flops / seconds / 1e9,
                    }
                )
    print(json.dumps({"results": results}))


def summarise(per_backend):
    """Rows per (backend, dtype): GFLOP/s per product, and the seconds of
    the step's dense products (each result times its layer's `count`)."""
    rows = []
    torch_step = {}
    for backend, results in per_backend.items():
        for dtype in sorted({r["dtype"] for r in results}):
            mine = [r for r in results if r["dtype"] == dtype]
            row = {"backend": backend, "dtype": dtype}
            for product in PRODUCTS:
                of = [r for r in mine if r["product"] == product]
                flops = sum(r["gflops"] * r["seconds"] for r in of)
                row[f"{product}_gflops"] = flops / sum(r["seconds"] for r in of)
            row["step_gemm_seconds"] = sum(
                r["count"] * r["seconds"] for r in mine
            )
            if backend == "torch":
                torch_step[dtype] = row["step_gemm_seconds"]
            rows.append(row)
    for row in rows:
        peer = torch_step.get(row["dtype"])
        ratio = row["step_gemm_seconds"] / peer if peer else None
        row["ratio_to_torch"] = ratio
    return rows


def main(argv):
    del argv
    if FLAGS.worker:
        return worker(FLAGS.worker)
    unknown = [b for b in FLAGS.backends if b not in BACKENDS]
    if unknown:
        raise app.UsageError(f"Unknown --backends {unknown}; of {BACKENDS}.")
    if not set(FLAGS.dtypes) <= {"float32", "bfloat16"}:
        raise app.UsageError(
            f"Unknown --dtypes {FLAGS.dtypes}; of float32, bfloat16."
        )
    script = os.path.abspath(__file__)
    passthrough = [
        f"--dtypes={','.join(FLAGS.dtypes)}",
        f"--width={FLAGS.width}",
        f"--tokens={FLAGS.tokens}",
        f"--depth={FLAGS.depth}",
        f"--head_depth={FLAGS.head_depth}",
        f"--repeats={FLAGS.repeats}",
        f"--inner={FLAGS.inner}",
    ]
    best = {}
    for _ in range(FLAGS.rounds):
        for backend in FLAGS.backends:
            got = bench_utils.run_worker(
                script, None, [f"--worker={backend}", *passthrough]
            )["results"]
            if backend not in best:
                best[backend] = got
                continue
            for kept, new in zip(best[backend], got):
                if new["seconds"] < kept["seconds"]:
                    kept.update(new)
    rows = summarise(best)
    header = ["framework", "dtype", *(f"{p} GFLOP/s" for p in PRODUCTS)]
    header += ["step GEMM s", "/ torch"]
    print(
        bench_utils.table(
            header,
            [
                [
                    r["backend"],
                    r["dtype"],
                    *(f"{r[f'{p}_gflops']:.0f}" for p in PRODUCTS),
                    f"{r['step_gemm_seconds']:.3f}",
                    f"{r['ratio_to_torch']:.2f}" if r["ratio_to_torch"] else "",
                ]
                for r in rows
            ],
        )
    )
    bench_utils.write_json(
        FLAGS.output,
        {
            "settings": {
                "width": FLAGS.width,
                "tokens": FLAGS.tokens,
                "depth": FLAGS.depth,
                "head_depth": FLAGS.head_depth,
                "repeats": FLAGS.repeats,
                "inner": FLAGS.inner,
                "rounds": FLAGS.rounds,
            },
            "summary": rows,
            "results": best,
            "environment": bench_utils.environment(),
        },
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
