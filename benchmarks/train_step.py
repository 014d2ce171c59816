"""Pre-training step speed of keras_aim on each backend against plain PyTorch.

    python benchmarks/train_step.py           # mid-size and main-job models
    python benchmarks/train_step.py --configs=main --steps=5

One step is the forward pass, AIM's loss (normalised next-patch targets,
one prefix length per image), the backward pass and an AdamW update
(lr 1e-3, betas 0.9/0.95, weight decay 0.05, no clipping, on both sides).
Contenders, each in a fresh process, interleaved over `--rounds`:
`keras_aim` on every backend (`AIMPretrainer.train_on_batch`), and the same
model, loss and optimizer written in plain PyTorch
(`benchmarks/torch_reference.py`), eager (`torch_eager`) and through
`torch.compile` (`torch_compile`, when `--compile`). keras_aim uses
`keras_aim.optimizers.PretrainingAdamW` (what `pretraining_optimizer`
returns; Keras' AdamW formula, epsilon 1e-7, no decay on biases and
norms). With `--ablations`, keras_aim is also timed with one fast path
replaced by Keras' own code: `keras_dense` (Keras' `Dense` backward, on
jax) and `keras_adamw` (`keras.optimizers.AdamW`, on torch). Configs:

    mid   width 768, 12 blocks, 12 heads, 112x112 images, patch 14 (64
          tokens), pixel head width 768 with 4 blocks, batch 8
    main  the main job's micro model: width 128, 4 blocks, 4 heads, 16x16,
          patch 4, pixel head 256 x 2, batch 128

Each contender runs under every dtype policy of `--policies`: `float32`
and `mixed_bfloat16` (keras_aim: Keras' global policy, float32 weights and
optimizer, bfloat16 compute; the peer: `torch.autocast("cpu", bfloat16)`
around the forward pass and loss); the ablations run in float32 only.

Reports the median step time after warm-up (fastest round), steps/s, the
ratio to plain PyTorch eager under the same policy, the speed-up over the
same contender's float32 step, the attention kernel that ran (read from the
run by `attention_kernel.py`; on torch from the profiled first warm-up
step), each worker's peak resident memory and, in the JSON's
`environment`, the CPU's model and bfloat16 instructions; a Markdown table
on stdout and `--output` (JSON).
"""

import json
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attention_kernel  # noqa: E402
import bench_utils  # noqa: E402

CONFIGS = {
    "mid": dict(
        width=768,
        depth=12,
        heads=12,
        image=112,
        patch=14,
        head=768,
        head_depth=4,
        batch=8,
    ),
    "main": dict(
        width=128,
        depth=4,
        heads=4,
        image=16,
        patch=4,
        head=256,
        head_depth=2,
        batch=128,
    ),
    "tiny": dict(
        width=32,
        depth=1,
        heads=4,
        image=16,
        patch=4,
        head=32,
        head_depth=1,
        batch=4,
    ),
}

# keras_aim with one of its fast paths replaced by Keras' own code, and the
# backend where that path matters (see the README's speed section).
ABLATIONS = {"keras_dense": "jax", "keras_adamw": "torch"}


def define_flags():
    """Defines the flags (not at import: tests import this file)."""
    flags.DEFINE_list("backends", ["jax", "torch", "tensorflow"], "Backends.")
    flags.DEFINE_list("configs", ["mid", "main"], f"Of {list(CONFIGS)}.")
    flags.DEFINE_integer("warmup", 2, "Untimed steps first.")
    flags.DEFINE_integer("steps", 5, "Timed steps (median reported).")
    flags.DEFINE_integer("rounds", 2, "Interleaved rounds of every contender.")
    flags.DEFINE_integer("threads", 0, "Threads (0: every core).")
    flags.DEFINE_list(
        "policies",
        ["float32", "mixed_bfloat16"],
        "Dtype policies: keras_aim's global policy; the peer runs the same "
        "under torch.autocast(bfloat16).",
    )
    flags.DEFINE_bool("compile", True, "Also time torch.compile of the peer.")
    flags.DEFINE_bool(
        "ablations",
        True,
        f"Also time keras_aim without each fast path: {ABLATIONS}.",
    )
    flags.DEFINE_string("output", "benchmarks/results/train_step.json", "JSON.")
    flags.DEFINE_string("worker", None, "Internal: run one contender.")
    flags.DEFINE_string("config", "mid", "Internal: the worker's config.")
    flags.DEFINE_string("policy", "float32", "Internal: the worker's policy.")


FLAGS = flags.FLAGS


def _images(c, channels_first=False):
    import numpy as np

    shape = (c["batch"], c["image"], c["image"], 3)
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    return x.transpose(0, 3, 1, 2).copy() if channels_first else x


def keras_worker(c, ablation=None):
    import keras

    import keras_aim

    keras.config.set_dtype_policy(FLAGS.policy)
    if keras.backend.backend() == "torch" and FLAGS.threads:
        import torch

        torch.set_num_threads(FLAGS.threads)
    if ablation == "keras_dense":
        # Undo keras_aim's kernel-gradient path: Keras' own Dense.call.
        keras_aim.layers.AIMDense.call = keras.layers.Dense.call
    keras.utils.set_random_seed(0)
    backbone = keras_aim.AIMBackbone(
        image_shape=(c["image"], c["image"], 3),
        patch_size=c["patch"],
        hidden_dim=c["width"],
        num_layers=c["depth"],
        num_heads=c["heads"],
    )
    pretrainer = keras_aim.AIMPretrainer(
        backbone,
        head_hidden_dim=c["head"],
        head_num_layers=c["head_depth"],
        seed=0,
    )
    # The optimizer of keras_aim.optimizers.pretraining_optimizer, with the
    # peer's settings; the ablation uses Keras' AdamW instead.
    optimizer_class = (
        keras.optimizers.AdamW
        if ablation == "keras_adamw"
        else keras_aim.optimizers.PretrainingAdamW
    )
    pretrainer.compile(
        optimizer=optimizer_class(
            learning_rate=1e-3, beta_2=0.95, weight_decay=0.05
        )
    )
    x = _images(c)
    # What ran, read from the run (on torch: the profiled first step,
    # which counts as a warm-up step).
    kernel = attention_kernel.detect_model(
        pretrainer,
        x,
        masked=pretrainer.attention != "causal",
        training=True,
        call=lambda: pretrainer.train_on_batch(x),
    )
    warmup = FLAGS.warmup - (keras.backend.backend() == "torch")
    median, times = bench_utils.timed(
        lambda: pretrainer.train_on_batch(x), max(warmup, 0), FLAGS.steps
    )
    return median, times, kernel


def torch_worker(c, compiled):
    import torch
    import torch_reference

    if FLAGS.threads:
        torch.set_num_threads(FLAGS.threads)
    torch.manual_seed(0)
    model = torch_reference.Pretrainer(
        c["image"],
        c["patch"],
        c["width"],
        c["depth"],
        c["heads"],
        c["head"],
        c["head_depth"],
    )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05
    )
    loss_fn = torch.compile(model.loss) if compiled else model.loss
    if FLAGS.policy == "mixed_bfloat16":
        # Keras' mixed_bfloat16 for the peer: float32 weights and optimizer,
        # bfloat16 compute.
        inner = loss_fn

        def loss_fn(images, prefix):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return inner(images, prefix)

    elif FLAGS.policy != "float32":
        raise ValueError(f"Unknown --policy {FLAGS.policy!r}.")
    x = torch.from_numpy(_images(c, channels_first=True))
    tokens = (c["image"] // c["patch"]) ** 2
    generator = torch.Generator().manual_seed(0)

    def step():
        prefix = torch_reference.random_prefix(c["batch"], tokens, generator)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(x, prefix)
        loss.backward()
        optimizer.step()
        return float(loss)

    ops, names = attention_kernel.torch_ops(step)  # one warm-up step
    kernel = {
        "backend": "torch",
        "dtype": "bfloat16" if FLAGS.policy != "float32" else "float32",
        "masked": True,
        "ran": attention_kernel.torch_kernel_name(ops, names),
        "ops": ops,
    }
    median, times = bench_utils.timed(
        step, max(FLAGS.warmup - 1, 0), FLAGS.steps
    )
    return median, times, kernel


def worker(name):
    c = CONFIGS[FLAGS.config]
    if name == "keras_aim":
        median, times, kernel = keras_worker(c)
    elif name in ABLATIONS:
        median, times, kernel = keras_worker(c, ablation=name)
    elif name in ("torch_eager", "torch_compile"):
        median, times, kernel = torch_worker(c, name == "torch_compile")
    else:
        raise ValueError(f"Unknown worker {name!r}.")
    print(
        json.dumps(
            {
                "median": median,
                "all": times,
                "attention_kernel": kernel,
                "peak_rss_bytes": bench_utils.peak_rss_bytes(),
            }
        )
    )


def main(argv):
    del argv
    if FLAGS.worker:
        return worker(FLAGS.worker)
    unknown = [c for c in FLAGS.configs if c not in CONFIGS]
    if unknown:
        raise app.UsageError(
            f"Unknown --configs {unknown}; of {list(CONFIGS)}."
        )
    policies = {"float32", "mixed_bfloat16"}
    if not set(FLAGS.policies) <= policies:
        raise app.UsageError(
            f"Unknown --policies {FLAGS.policies}; of {sorted(policies)}."
        )
    script = os.path.abspath(__file__)
    contenders = [("torch_eager", None)]
    if FLAGS.compile:
        contenders.append(("torch_compile", None))
    contenders += [("keras_aim", b) for b in FLAGS.backends]
    if FLAGS.ablations:
        contenders += [
            (name, backend)
            for name, backend in ABLATIONS.items()
            if backend in FLAGS.backends
        ]
    passthrough = [
        f"--warmup={FLAGS.warmup}",
        f"--steps={FLAGS.steps}",
        f"--threads={FLAGS.threads}",
    ]

    def plan(policy):
        # The ablations compare fast paths, once, in float32.
        if policy == "float32":
            return contenders
        return [c for c in contenders if c[0] not in ABLATIONS]

    runs = {}
    for _ in range(FLAGS.rounds):
        for config in FLAGS.configs:
            for policy in FLAGS.policies:
                for name, backend in plan(policy):
                    key = f"{config}:{policy}:{name}:{backend or 'torch'}"
                    args = [
                        f"--worker={name}",
                        f"--config={config}",
                        f"--policy={policy}",
                        *passthrough,
                    ]
                    runs.setdefault(key, []).append(
                        bench_utils.run_worker(script, backend, args)
                    )
                    print(f"done {key}", file=sys.stderr)

    def best(config, policy, name, backend):
        key = f"{config}:{policy}:{name}:{backend or 'torch'}"
        return min(r["median"] for r in runs[key]) if key in runs else None

    rows, results = [], []
    for config in FLAGS.configs:
        for policy in FLAGS.policies:
            peer = best(config, policy, "torch_eager", None)
            for name, backend in plan(policy):
                key = f"{config}:{policy}:{name}:{backend or 'torch'}"
                seconds = best(config, policy, name, backend)
                full = best(config, "float32", name, backend)
                speedup = full / seconds if full else None
                rss = max(r["peak_rss_bytes"] for r in runs[key])
                kernel = runs[key][0].get("attention_kernel") or {}
                entry = {
                    "config": config,
                    "policy": policy,
                    "contender": name,
                    "backend": backend or "torch",
                    "seconds": seconds,
                    "steps_per_second": 1 / seconds,
                    "ratio_to_torch_eager": seconds / peer,
                    "speedup_over_float32": speedup,
                    "attention_kernel": kernel,
                    "peak_rss_bytes": rss,
                }
                results.append(entry)
                rows.append(
                    [
                        config,
                        name,
                        entry["backend"],
                        policy,
                        f"{seconds:.4f}",
                        f"{1 / seconds:.2f}",
                        f"{seconds / peer:.2f}",
                        "" if speedup is None else f"{speedup:.2f}",
                        kernel.get("ran", ""),
                        f"{rss / 1e9:.2f}",
                    ]
                )
    cpu = bench_utils.cpu_info()
    print(
        f"Fastest of {FLAGS.rounds} rounds, median of {FLAGS.steps} steps "
        f"after {FLAGS.warmup} warm-up steps. CPU: {cpu['model']}; native "
        f"bfloat16: {cpu['native_bfloat16']} "
        f"({', '.join(n for n, on in cpu['flags'].items() if on)}).\n"
    )
    header = ["config", "contender", "backend", "policy", "s/step", "steps/s"]
    header += ["time / torch eager", "float32 time / this", "attention"]
    header += ["peak RSS (GB)"]
    print(bench_utils.table(header, rows))
    bench_utils.write_json(
        FLAGS.output,
        {
            "configs": {c: CONFIGS[c] for c in FLAGS.configs},
            "results": results,
            "runs": runs,
            "environment": bench_utils.environment(),
        },
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
