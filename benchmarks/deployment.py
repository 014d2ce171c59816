"""Deployment: top-1, file sizes and CPU latency of the main job's model,
float32 against int8 (and int4), through every runtime we export to.

The model is the main job's: the `make pretrain` trunk (`--backbone`,
examples/pretrain.py's defaults: width 128, 4 blocks, patch 4, 16x16
digits) with the attentive probe trained as examples/probe.py does
(`--classifier` reuses one). Four stages, each in fresh processes:

    accuracy   (jax, the main job's backend) top-1 on the held-out digits
               for float32, int8 and int4 (`quantize` after loading the
               float preset), agreement with float32, each preset's weights
               file; also writes the presets and the test images
    export     (torch, tensorflow) every artifact the timed runtimes need,
               float32 and int8 (int4 for its size only), with its size
    latency    one process per runtime and round; rounds interleave the
               runtimes (order reversed every round). Inside a process,
               float32 and int8 alternate call by call at batch 1 and at
               batch 32 after warm-up, so their ratio (median of the
               call-by-call ratios) is measured under the same load; the
               process also checks its top-1 over the whole test set
    report     medians over all calls, ratios, a Markdown table and JSON

Runtimes: Keras' `predict_on_batch` on jax, torch and tensorflow, the
SavedModel in TensorFlow, ONNX Runtime (ONNX exported on torch and on
tensorflow), OpenVINO (converted from the torch ONNX file, compiled with
f32 inference precision), LiteRT (float32 only: the converter refuses
Keras' int8 matmul) and the `.pt2` program in torch, each with its default
threads on the cores it gets.

    python benchmarks/deployment.py --backbone=runs/pretrain/backbone
"""

import json
import os
import shutil
import sys
import time

import numpy as np
from absl import app
from absl import flags

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_utils  # noqa: E402
from deployment_report import markdown  # noqa: E402
from deployment_report import summarise  # noqa: E402

PRECISIONS = ("float32", "int8")
MODES = ("float32", "int8", "int4")
# runtime -> (backend of its process, format it runs or None for Keras,
# backend that exports the artifact)
RUNTIMES = {
    "keras_jax": ("jax", None, None),
    "keras_torch": ("torch", None, None),
    "keras_tensorflow": ("tensorflow", None, None),
    "tf_saved_model": ("tensorflow", "tf_saved_model", "tensorflow"),
    "onnx_torch": ("jax", "onnx", "torch"),
    "onnx_tensorflow": ("jax", "onnx", "tensorflow"),
    "openvino": ("jax", "openvino", "torch"),
    "litert": ("tensorflow", "litert", "tensorflow"),
    "torch_pt2": ("torch", "torch", "torch"),
}
LABELS = {
    "keras_jax": "Keras, jax (predict_on_batch)",
    "keras_torch": "Keras, torch (predict_on_batch)",
    "keras_tensorflow": "Keras, tensorflow (predict_on_batch)",
    "tf_saved_model": "SavedModel in TensorFlow (from tensorflow)",
    "onnx_torch": "ONNX Runtime (ONNX from torch)",
    "onnx_tensorflow": "ONNX Runtime (ONNX from tensorflow)",
    "openvino": "OpenVINO, f32 hint (from torch's ONNX)",
    "litert": "LiteRT (from tensorflow)",
    "torch_pt2": "torch.export program (.pt2, from torch)",
}
BASELINE = "keras_jax"


def define_flags():
    """Defines the flags (not at import: the tests import this file)."""
    flags.DEFINE_string(
        "backbone", "runs/pretrain/backbone", "The make pretrain trunk."
    )
    flags.DEFINE_string("classifier", None, "Reuse this probe's preset.")
    flags.DEFINE_integer("probe_epochs", 200, "Probe epochs (probe.py's).")
    flags.DEFINE_bool("tiny", False, "A random tiny trunk (smoke test).")
    flags.DEFINE_list("runtimes", list(RUNTIMES), "Runtimes to time.")
    flags.DEFINE_list("batch_sizes", ["1", "32"], "Timed batch sizes.")
    flags.DEFINE_integer("rounds", 3, "Rounds (one process per runtime).")
    flags.DEFINE_integer("repeats", 30, "Timed calls per precision, batch.")
    flags.DEFINE_integer("warmup", 5, "Untimed calls first.")
    flags.DEFINE_string("work_dir", "runs/deployment", "Presets, artifacts.")
    flags.DEFINE_string(
        "output", "benchmarks/results/deployment.json", "JSON results."
    )
    flags.DEFINE_string("worker", None, "Internal: a stage to run.")
    flags.DEFINE_string("runtime", None, "Internal: the runtime to time.")


FLAGS = flags.FLAGS


def cpu_model():
    with open("/proc/cpuinfo") as f:
        info = f.read()
    name = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in info.splitlines()
            if ln.startswith("model name")
        ),
        "unknown",
    )
    flags_line = next(
        (ln for ln in info.splitlines() if ln.startswith("flags")), ""
    ).split()
    wanted = ("avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")
    return {"model_name": name, "flags": [f for f in wanted if f in flags_line]}


def file_size(path):
    if os.path.isdir(path):
        return sum(
            os.path.getsize(os.path.join(root, name))
            for root, _, names in os.walk(path)
            for name in names
        )
    size = os.path.getsize(path)
    if path.endswith(".xml"):  # OpenVINO: the graph and its weights
        size += os.path.getsize(path[: -len(".xml")] + ".bin")
    return size


# === accuracy (jax) ===


def train_probe(work_dir):
    """The attentive probe, as examples/probe.py trains it."""
    import importlib.util

    examples = os.path.join(bench_utils.ROOT, "examples")
    sys.path.insert(0, examples)
    spec = importlib.util.spec_from_file_location(
        "probe_example", os.path.join(examples, "probe.py")
    )
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    backbone = FLAGS.backbone
    if FLAGS.tiny:
        import keras

        import keras_aim

        keras.utils.set_random_seed(0)
        backbone = os.path.join(work_dir, "tiny_backbone")
        keras_aim.AIMBackbone(
            image_shape=(16, 16, 3),
            patch_size=4,
            hidden_dim=32,
            num_layers=1,
            num_heads=2,
        ).save_to_preset(backbone)
    metrics = probe.run(
        preset=backbone,
        dataset="digits",
        epochs=FLAGS.probe_epochs,
        output_dir=os.path.join(work_dir, "probe"),
        verbose=0,
    )
    return metrics["files"]["classifier"], backbone


def accuracy_stage(work_dir):
    import keras_aim
    from keras_aim import data
    from keras_aim.models.aim.aim_image_converter import load_image_converter

    classifier_dir, backbone = FLAGS.classifier, FLAGS.backbone
    if not classifier_dir:
        classifier_dir, backbone = train_probe(work_dir)
    converter = load_image_converter(classifier_dir)
    test = data.labelled_images("digits", "test", image_converter=converter)
    images, labels = test.to_arrays()
    np.savez(os.path.join(work_dir, "test.npz"), images=images, labels=labels)
    results, float_predictions = {}, None
    for mode in MODES:
        model = keras_aim.AIMImageClassifier.from_preset(classifier_dir)
        if mode != "float32":
            model.quantize(mode)
        else:
            parameters = int(model.count_params())
        folder = os.path.join(work_dir, "presets", mode)
        shutil.rmtree(folder, ignore_errors=True)
        model.save_to_preset(folder)
        logits = np.concatenate(
            [
                np.asarray(model.predict_on_batch(images[i : i + 64]))
                for i in range(0, len(images), 64)
            ]
        )
        predictions = logits.argmax(-1)
        if float_predictions is None:
            float_predictions = predictions
        results[mode] = {
            "top1": float(np.mean(predictions == labels)),
            "same_top1_as_float32": float(
                np.mean(predictions == float_predictions)
            ),
            "weights_file_bytes": file_size(
                os.path.join(folder, "model.weights.h5")
            ),
        }
    return {
        "classifier": classifier_dir,
        "backbone": backbone,
        "num_test": int(len(labels)),
        "image_shape": list(images.shape[1:]),
        "parameters": parameters,
        "modes": results,
    }


# === export (torch, tensorflow) ===


def artifact_path(work_dir, runtime, precision):
    from keras_aim import export

    format = RUNTIMES[runtime][1]
    return os.path.join(
        work_dir,
        "artifacts",
        f"{runtime}_{precision}",
        export.ARTIFACT_NAMES[format],
    )


def export_stage(work_dir, backend, runtimes):
    import keras_aim
    from keras_aim import export

    results = {}
    for runtime in runtimes:
        _, format, exporter = RUNTIMES[runtime]
        if exporter != backend:
            continue
        for mode in MODES:
            path = artifact_path(work_dir, runtime, mode)
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)
            os.makedirs(os.path.dirname(path))
            preset = os.path.join(work_dir, "presets", mode)
            model = keras_aim.AIMImageClassifier.from_preset(preset)
            try:
                export.export_model(model, path, format)
            except ValueError as error:  # a route refused for this mode
                results[f"{runtime}/{mode}"] = {"error": str(error)}
                continue
            results[f"{runtime}/{mode}"] = {"bytes": file_size(path)}
    return results


# === latency (one runtime per process) ===


def runner(work_dir, runtime, precision):
    _, format, _ = RUNTIMES[runtime]
    if format is None:
        import keras_aim

        preset = os.path.join(work_dir, "presets", precision)
        model = keras_aim.AIMImageClassifier.from_preset(preset)
        return lambda x: np.asarray(model.predict_on_batch(x))
    from keras_aim import export

    return export.load_artifact(
        artifact_path(work_dir, runtime, precision), format
    )


def latency_stage(work_dir, runtime):
    with np.load(os.path.join(work_dir, "test.npz")) as arrays:
        images, labels = arrays["images"], arrays["labels"]
    precisions = [
        p
        for p in PRECISIONS
        if RUNTIMES[runtime][1] is None
        or os.path.exists(artifact_path(work_dir, runtime, p))
    ]
    runs = {p: runner(work_dir, runtime, p) for p in precisions}
    top1 = {}
    for precision, run in runs.items():
        logits = np.concatenate(
            [run(images[i : i + 32]) for i in range(0, len(images), 32)]
        )
        top1[precision] = float(np.mean(logits.argmax(-1) == labels))
    times = {}
    for size in [int(b) for b in FLAGS.batch_sizes]:
        x = np.ascontiguousarray(images[:size])
        for run in runs.values():
            for _ in range(FLAGS.warmup):
                run(x)
        calls = {p: [] for p in precisions}
        for repeat in range(FLAGS.repeats):
            order = precisions if repeat % 2 == 0 else precisions[::-1]
            for precision in order:
                begin = time.perf_counter()
                runs[precision](x)
                calls[precision].append(time.perf_counter() - begin)
        times[str(size)] = calls
    return {"top1": top1, "times": times, "load": os.getloadavg()[0]}


# === orchestration and report ===


def run_stage(stage, backend, work_dir, extra=()):
    args = [
        f"--worker={stage}",
        f"--work_dir={work_dir}",
        f"--backbone={FLAGS.backbone}",
        f"--probe_epochs={FLAGS.probe_epochs}",
        f"--runtimes={','.join(FLAGS.runtimes)}",
        f"--batch_sizes={','.join(FLAGS.batch_sizes)}",
        f"--repeats={FLAGS.repeats}",
        f"--warmup={FLAGS.warmup}",
        "--tiny" if FLAGS.tiny else "--notiny",
        *extra,
    ]
    if FLAGS.classifier:
        args.append(f"--classifier={FLAGS.classifier}")
    return bench_utils.run_worker(os.path.abspath(__file__), backend, args)


def check_flags():
    unknown = sorted(set(FLAGS.runtimes) - set(RUNTIMES))
    if unknown:
        raise app.UsageError(
            f"--runtimes must be among {sorted(RUNTIMES)}; got {unknown}."
        )
    if (
        not FLAGS.tiny
        and not FLAGS.classifier
        and not os.path.isdir(FLAGS.backbone)
    ):
        raise app.UsageError(
            f"--backbone={FLAGS.backbone!r} is not a preset folder: run "
            "`make pretrain` first (or pass --classifier, or --tiny)."
        )


def main(argv):
    del argv
    work_dir = os.path.abspath(FLAGS.work_dir)
    if FLAGS.worker:
        stage = FLAGS.worker
        if stage == "accuracy":
            out = accuracy_stage(work_dir)
        elif stage == "export":
            import keras

            out = export_stage(
                work_dir, keras.backend.backend(), FLAGS.runtimes
            )
        else:
            out = latency_stage(work_dir, FLAGS.runtime)
        print(json.dumps(out))
        return
    check_flags()
    os.makedirs(work_dir, exist_ok=True)
    runtimes = list(FLAGS.runtimes)
    batch_sizes = [int(b) for b in FLAGS.batch_sizes]
    result = {
        "cpu": cpu_model(),
        "environment": bench_utils.environment(),
        "runtimes": runtimes,
        "settings": {
            "rounds": FLAGS.rounds,
            "repeats": FLAGS.repeats,
            "warmup": FLAGS.warmup,
            "batch_sizes": batch_sizes,
            "tiny": FLAGS.tiny,
        },
        "load_before": os.getloadavg(),
    }
    print("Accuracy (jax)...", file=sys.stderr)
    result["accuracy"] = run_stage("accuracy", "jax", work_dir)
    result["export"] = {}
    for backend in ("torch", "tensorflow"):
        if any(RUNTIMES[r][2] == backend for r in runtimes):
            print(f"Export ({backend})...", file=sys.stderr)
            result["export"].update(run_stage("export", backend, work_dir))
    runs = {runtime: [] for runtime in runtimes}
    for round_index in range(FLAGS.rounds):
        order = runtimes if round_index % 2 == 0 else runtimes[::-1]
        for runtime in order:
            print(f"Round {round_index + 1}: {runtime}", file=sys.stderr)
            runs[runtime].append(
                run_stage(
                    "latency",
                    RUNTIMES[runtime][0],
                    work_dir,
                    [f"--runtime={runtime}"],
                )
            )
    result["load_after"] = os.getloadavg()
    result["runs"] = runs
    rows = summarise(runs, runtimes, batch_sizes, PRECISIONS, BASELINE)
    result["latency"] = [
        {"runtime": r, "precision": p, "batch": b, **row}
        for (r, p, b), row in rows.items()
    ]
    text = markdown(result, rows, batch_sizes, MODES, PRECISIONS, LABELS)
    print(text)
    bench_utils.write_json(FLAGS.output, result)
    if FLAGS.output:
        with open(os.path.splitext(FLAGS.output)[0] + ".md", "w") as f:
            f.write(text)


if __name__ == "__main__":
    define_flags()
    app.run(main)
