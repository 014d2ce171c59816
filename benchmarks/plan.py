"""Plan a pre-training run: parameters, FLOPs, memory per device, step time.

From a model config, a device mesh and a global batch, with the layout of
`keras_aim.distribution` (large kernels sharded over every device, small
vectors replicated, the batch split over the `batch` axis and activations
over the `model` axis too):

- parameters of the trunk and the pixel head, FLOPs per image of a
  training step (forward + backward = 3x forward; +1 forward with remat);
- per-device memory of the weights, gradients and AdamW moments (float32
  master weights: 16 bytes per parameter, sharded) and of the activations
  kept for the backward pass (bfloat16, the Megatron estimate of
  `34 + 5 * heads * N / D` bytes per token and width per block, or only the
  block inputs with rematerialisation);
- the step time at a given accelerator peak and utilisation (MFU).

    python benchmarks/plan.py                       # the README's table
    python benchmarks/plan.py --measure             # check a row on this CPU

Assumptions are stated in the table's header; they are estimates, not a
measurement (`--measure` compares one against a run).
"""

import json
import os
import sys
import time

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from keras_aim.models.aim.aim_presets import PRESETS  # noqa: E402


def define_flags():
    """Defines the flags (not at import: tests import this file)."""
    flags.DEFINE_list("presets", list(PRESETS), "Presets to plan.")
    flags.DEFINE_list("devices", ["8", "64", "256"], "Accelerator counts.")
    flags.DEFINE_integer("global_batch", 4096, "Images per step (the paper).")
    flags.DEFINE_integer("image_size", 224, "Image side.")
    flags.DEFINE_integer("head_hidden_dim", 2048, "Pixel-head width.")
    flags.DEFINE_integer("head_num_layers", 12, "Pixel-head blocks.")
    flags.DEFINE_float(
        "peak_tflops", 989.0, "Accelerator bf16 peak (H100 SXM)."
    )
    flags.DEFINE_float("mfu", 0.4, "Model FLOPs utilisation assumed.")
    flags.DEFINE_float(
        "memory_gb", 80.0, "Accelerator memory, for the fit check."
    )
    flags.DEFINE_bool(
        "measure", False, "Measure a micro step here and compare."
    )
    flags.DEFINE_string(
        "output", "benchmarks/results/plan.json", "JSON results."
    )


FLAGS = flags.FLAGS


def model_counts(
    hidden_dim,
    num_layers,
    num_heads,
    patch_size=14,
    image_size=224,
    head_hidden_dim=2048,
    head_num_layers=12,
    mlp_ratio=4.0,
    channels=3,
):
    """Parameters and forward FLOPs per image of the trunk and pixel head."""
    tokens = (image_size // patch_size) ** 2
    d, h, r = hidden_dim, head_hidden_dim, mlp_ratio
    out = patch_size * patch_size * channels
    trunk_params = (
        out * d
        + 3 * d
        + num_layers * (4 * d + 4 * d * d + 2 * r * d * d)
        + 2 * d
    )
    head_params = (
        d * h
        + h
        + head_num_layers * (2 * h + 2 * r * h * h)
        + 2 * h
        + h * out
        + out
    )
    block = 2 * tokens * (4 * d * d + 2 * r * d * d) + 4 * tokens**2 * d
    trunk_flops = 2 * tokens * out * d + num_layers * block
    head_flops = (
        2 * tokens * (d * h + head_num_layers * 2 * r * h * h + h * out)
    )
    return {
        "tokens": tokens,
        "trunk_parameters": int(trunk_params),
        "head_parameters": int(head_params),
        "forward_flops": float(trunk_flops + head_flops),
    }


def mesh_for(devices, num_heads):
    """A (batch, model) mesh: the largest model axis <= 8 dividing heads."""
    model = max(
        m for m in (1, 2, 4, 8) if num_heads % m == 0 and devices % m == 0
    )
    return devices // model, model


def plan_row(name, devices, global_batch, remat):
    arch = PRESETS[name]["backbone"]
    counts = model_counts(
        arch["hidden_dim"],
        arch["num_layers"],
        arch["num_heads"],
        arch["patch_size"],
        FLAGS.image_size,
        FLAGS.head_hidden_dim,
        FLAGS.head_num_layers,
    )
    batch_axis, model_axis = mesh_for(devices, arch["num_heads"])
    parameters = counts["trunk_parameters"] + counts["head_parameters"]
    state_gb = 16 * parameters / devices / 1e9
    per_device_batch = global_batch / batch_axis
    tokens, d = counts["tokens"], arch["hidden_dim"]
    h, head_layers = FLAGS.head_hidden_dim, FLAGS.head_num_layers
    if remat:  # only each block's input is kept (bfloat16)
        per_token = 2 * (arch["num_layers"] * d + head_layers * h)
    else:  # Megatron's estimate; the head's MLP blocks have no attention
        per_token = (
            arch["num_layers"] * d * (34 + 5 * arch["num_heads"] * tokens / d)
            + head_layers * h * 19
        )
    activations_gb = per_device_batch * tokens * per_token / model_axis / 1e9
    step_flops = counts["forward_flops"] * (4 if remat else 3) * global_batch
    seconds = step_flops / (devices * FLAGS.peak_tflops * 1e12 * FLAGS.mfu)
    return {
        "preset": name,
        "devices": devices,
        "mesh": [batch_axis, model_axis],
        "parameters": parameters,
        "train_tflop_per_image": counts["forward_flops"] * 3 / 1e12,
        "state_gb_per_device": state_gb,
        "activation_gb_per_device": activations_gb,
        "remat": remat,
        "fits": state_gb + activations_gb < FLAGS.memory_gb,
        "step_seconds": seconds,
    }


def measure():
    """Times a micro pre-training step here and compares with the plan."""
    import keras
    import numpy as np

    import keras_aim

    a = np.random.default_rng(0).normal(size=(1024, 1024)).astype("float32")
    ops_matmul = keras.ops.matmul
    ops_matmul(a, a)
    begin = time.perf_counter()
    for _ in range(10):
        keras.ops.convert_to_numpy(ops_matmul(a, a))
    peak = 10 * 2 * 1024**3 / (time.perf_counter() - begin)
    width, depth, heads, head, size, patch, batch = 256, 4, 4, 256, 32, 4, 32
    backbone = keras_aim.AIMBackbone(
        image_shape=(size, size, 3),
        patch_size=patch,
        hidden_dim=width,
        num_layers=depth,
        num_heads=heads,
    )
    pretrainer = keras_aim.AIMPretrainer(
        backbone, head_hidden_dim=head, head_num_layers=2
    )
    pretrainer.compile(optimizer="adamw")
    x = np.random.default_rng(1).normal(size=(batch, size, size, 3))
    x = x.astype("float32")
    pretrainer.train_on_batch(x)
    times = []
    for _ in range(5):
        begin = time.perf_counter()
        pretrainer.train_on_batch(x)
        times.append(time.perf_counter() - begin)
    counts = model_counts(width, depth, heads, patch, size, head, 2)
    flops = counts["forward_flops"] * 3 * batch
    measured = sorted(times)[len(times) // 2]
    return {
        "backend": keras.backend.backend(),
        "matmul_peak_gflops": peak / 1e9,
        "step_seconds": measured,
        "model_flops_utilisation": flops / measured / peak,
        "planned_seconds_at_mfu_0.4": flops / (peak * 0.4),
        # The plan's parameter counts against the models actually built.
        "planned_parameters": [
            counts["trunk_parameters"],
            counts["head_parameters"],
        ],
        "built_parameters": [
            int(backbone.count_params()),
            int(pretrainer.count_params() - backbone.count_params()),
        ],
        "config": dict(width=width, depth=depth, batch=batch, image=size),
    }


def main(argv):
    del argv
    rows = []
    for name in FLAGS.presets:
        for devices in (int(d) for d in FLAGS.devices):
            for remat in (False, True):
                rows.append(plan_row(name, devices, FLAGS.global_batch, remat))
    print(
        f"Global batch {FLAGS.global_batch}, {FLAGS.image_size}px, pixel head "
        f"{FLAGS.head_hidden_dim}x{FLAGS.head_num_layers}; AdamW float32 "
        f"state (16 B/parameter, sharded); bf16 activations; "
        f"{FLAGS.peak_tflops:.0f} TFLOP/s peak at {FLAGS.mfu:.0%} MFU; "
        f"fits = under {FLAGS.memory_gb:.0f} GB.\n"
    )
    print(
        "| preset | devices | mesh | TFLOP/image | state GB/dev | "
        "activations GB/dev (no remat / remat) | fits | s/step (no remat / "
        "remat) |"
    )
    print("|---|---:|---|---:|---:|---:|---|---:|")
    for plain, remat in zip(rows[::2], rows[1::2]):
        fits = "yes" if plain["fits"] else "remat" if remat["fits"] else "no"
        print(
            f"| {plain['preset']} | {plain['devices']} | "
            f"{plain['mesh'][0]}x{plain['mesh'][1]} | "
            f"{plain['train_tflop_per_image']:.2f} | "
            f"{plain['state_gb_per_device']:.1f} | "
            f"{plain['activation_gb_per_device']:.1f} / "
            f"{remat['activation_gb_per_device']:.1f} | "
            f"{fits} | "
            f"{plain['step_seconds']:.2f} / {remat['step_seconds']:.2f} |"
        )
    result = {"rows": rows}
    if FLAGS.measure:
        result["measured"] = measure()
        m = result["measured"]
        print(
            f"\nMeasured here: a micro step ({m['config']}) took "
            f"{m['step_seconds']:.3f} s, {m['model_flops_utilisation']:.0%} "
            f"of the measured matmul peak ({m['matmul_peak_gflops']:.0f} "
            f"GFLOP/s); the plan at 40% MFU says "
            f"{m['planned_seconds_at_mfu_0.4']:.3f} s. Parameters planned "
            f"{m['planned_parameters']}, built {m['built_parameters']}."
        )
    if FLAGS.output:
        os.makedirs(
            os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True
        )
        with open(FLAGS.output, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    define_flags()
    app.run(main)
