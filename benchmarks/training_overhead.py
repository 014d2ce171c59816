"""The training loop's overhead against a bare `fit`, on every backend.

Two arms train the main job's micro AIM (width 128, 4 blocks, patch 4,
pixel head 256 x 2, digits at 16x16, batch 128, the AdamW recipe) for the
same number of steps on the same data, each in a fresh process:

    bare    pretrainer.fit(dataset, steps_per_epoch=STEPS, epochs=1)
    loop    keras_aim.training.train(..., log_every=10, checkpoint_every=100)
            (log.csv, TensorBoard, checkpoints, NaN guard, signal stop:
            what `make pretrain` runs)

The arms alternate (bare, loop, then loop, bare, ...) and repeat; the table
gives the median wall time of each (model build and compilation included
in both) and their ratio. Each worker also counts the device-to-host
conversions Keras makes (`keras.src.backend.convert_to_numpy`) per step
and, after the timed part, records the attention kernel that ran in a
training step (`attention_kernel.py`).

    python benchmarks/training_overhead.py --steps=100 --repeats=2
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attention_kernel  # noqa: E402


def define_flags():
    """Defines the flags (not at import: tests import this file)."""
    flags.DEFINE_list("backends", ["jax", "torch", "tensorflow"], "Backends.")
    flags.DEFINE_integer("steps", 100, "Optimizer steps per arm.")
    flags.DEFINE_integer("repeats", 2, "Interleaved repeats per arm.")
    flags.DEFINE_integer("batch_size", 128, "Images per step.")
    flags.DEFINE_integer("log_every", 10, "The loop's logging window.")
    flags.DEFINE_string(
        "output", "benchmarks/results/training_overhead.json", "JSON results."
    )
    flags.DEFINE_string("worker", None, "Internal: run one arm (bare|loop).")
    flags.DEFINE_integer("width", 128, "Trunk width (smoke tests use less).")
    flags.DEFINE_integer("depth", 4, "Trunk blocks.")


FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(steps):
    import keras

    import keras_aim

    keras.utils.set_random_seed(0)
    backbone = keras_aim.AIMBackbone(
        image_shape=(16, 16, 3),
        patch_size=4,
        hidden_dim=FLAGS.width,
        num_layers=FLAGS.depth,
        num_heads=4,
    )
    pretrainer = keras_aim.AIMPretrainer(
        backbone, head_hidden_dim=2 * FLAGS.width, head_num_layers=2, seed=0
    )
    pretrainer.compile(
        optimizer=keras_aim.optimizers.pretraining_optimizer(
            steps,
            FLAGS.batch_size,
            base_learning_rate=1e-3,
            base_batch_size=FLAGS.batch_size,
            warmup_fraction=0.05,
        )
    )
    dataset = keras_aim.data.pretraining_dataset(
        "digits", batch_size=FLAGS.batch_size, seed=0
    )
    return pretrainer, dataset


def worker(arm):
    from keras.src import backend as keras_backend

    from keras_aim import training

    conversions = []
    original = keras_backend.convert_to_numpy

    def counting(x):
        conversions.append(1)
        return original(x)

    begin = time.perf_counter()
    pretrainer, dataset = build(FLAGS.steps)
    keras_backend.convert_to_numpy = counting
    if arm == "bare":
        history = pretrainer.fit(
            dataset, steps_per_epoch=FLAGS.steps, epochs=1, verbose=0
        )
        loss = history.history["loss"][-1]
    else:
        with tempfile.TemporaryDirectory() as folder:
            result = training.train(
                pretrainer,
                dataset,
                FLAGS.steps,
                folder,
                checkpoint_every=100,
                log_every=FLAGS.log_every,
                verbose=0,
            )
        loss = result.losses[max(result.losses)]
    keras_backend.convert_to_numpy = original
    seconds = time.perf_counter() - begin
    # What ran, read from the run after the timed part (one more step).
    images = next(iter(dataset))
    images = keras_backend.convert_to_numpy(
        images[0] if isinstance(images, tuple) else images
    )
    kernel = attention_kernel.detect_model(
        pretrainer,
        images,
        masked=True,
        training=True,
        call=lambda: pretrainer.train_on_batch(images),
    )
    print(
        json.dumps(
            {
                "arm": arm,
                "seconds": seconds,
                "loss": float(loss),
                "conversions_per_step": len(conversions) / FLAGS.steps,
                "attention_kernel": kernel,
            }
        )
    )


def run_arm(backend, arm):
    command = [
        sys.executable,
        os.path.abspath(__file__),
        f"--worker={arm}",
        f"--steps={FLAGS.steps}",
        f"--batch_size={FLAGS.batch_size}",
        f"--log_every={FLAGS.log_every}",
        f"--width={FLAGS.width}",
        f"--depth={FLAGS.depth}",
    ]
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode:
        raise RuntimeError(f"{backend}/{arm} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv):
    del argv
    if FLAGS.worker:
        return worker(FLAGS.worker)
    results = {}
    for backend in FLAGS.backends:
        runs = {"bare": [], "loop": []}
        for repeat in range(FLAGS.repeats):
            order = ("bare", "loop") if repeat % 2 == 0 else ("loop", "bare")
            for arm in order:
                runs[arm].append(run_arm(backend, arm))
        results[backend] = runs
    rows = [
        "| backend | bare `fit` (s) | keras_aim loop (s) | loop / bare, "
        "medians | loop / bare, fastest runs | host conversions per step "
        "(bare / loop) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    summary = {}
    for backend, runs in results.items():
        bare = statistics.median(r["seconds"] for r in runs["bare"])
        loop = statistics.median(r["seconds"] for r in runs["loop"])
        fastest = min(r["seconds"] for r in runs["loop"]) / min(
            r["seconds"] for r in runs["bare"]
        )
        bare_c = runs["bare"][0]["conversions_per_step"]
        loop_c = runs["loop"][0]["conversions_per_step"]
        summary[backend] = {
            "bare_seconds": bare,
            "loop_seconds": loop,
            "ratio": loop / bare,
            "ratio_fastest": fastest,
            "conversions_per_step": {"bare": bare_c, "loop": loop_c},
            "attention_kernel": runs["loop"][0]["attention_kernel"],
            "runs": runs,
        }
        rows.append(
            f"| {backend} | {bare:.1f} | {loop:.1f} | {loop / bare:.3f} | "
            f"{fastest:.3f} | {bare_c:.2f} / {loop_c:.2f} |"
        )
    print(
        f"{FLAGS.steps} steps of {FLAGS.batch_size}, median of "
        f"{FLAGS.repeats} interleaved runs per arm, log_every="
        f"{FLAGS.log_every}\n"
    )
    print("\n".join(rows))
    if FLAGS.output:
        os.makedirs(
            os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True
        )
        with open(FLAGS.output, "w") as f:
            json.dump(
                {
                    "settings": {
                        "steps": FLAGS.steps,
                        "repeats": FLAGS.repeats,
                        "batch_size": FLAGS.batch_size,
                        "log_every": FLAGS.log_every,
                    },
                    "results": summary,
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    define_flags()
    app.run(main)
