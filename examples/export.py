"""Export an AIM classifier or backbone for inference, with a parity check.

    python examples/export.py --preset=runs/probe/classifier --format=onnx
    python examples/export.py --preset=aim_600m --format=saved_model \
        --quantize=int8 --output_dir=runs/export

`--preset` is a classifier preset (exports logits) or a backbone preset
(exports tokens, or mean-pooled features with `--pool=mean`). `--quantize`
quantizes every projection first (Keras' int8/int4 kernels).
`--image_size` rebuilds the model at that size (0: any size the patch size
divides, where the format allows it; see docs/deployment.md). Which formats
work depends on KERAS_BACKEND: a format that cannot work on this backend
exits 2 with the route to take.

Writes, in `--output_dir`: the artifact (`saved_model/`, `model.onnx`,
`model.xml` + `.bin`, `model.tflite` or `model.pt2`), `manifest.json`
(format, input signature, normalisation, class names) and `parity.json`
(the largest difference between the artifact, run in its own runtime, and
the Keras model, at two batch sizes). Exit status 2 with a one-line
message on bad input (also a format this backend cannot export).
"""

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scaffold  # noqa: E402

FORMATS = {
    "saved_model": "tf_saved_model",
    "onnx": "onnx",
    "litert": "litert",
    "openvino": "openvino",
    "torch": "torch",
}
QUANTIZE = ("none", "int8", "int4")
# Float32 parity expected of every route (measured: below 1e-6).
TOLERANCE = 1e-4
PARITY_BATCHES = (1, 3)
# Every artifact name (keras_aim.export.ARTIFACT_NAMES), the manifest and
# the parity report: checked before any work, whatever the format.
OUTPUTS = {
    "saved_model": "folder",
    "model.onnx": "file",
    "model.xml": "file",
    "model.bin": "file",
    "model.tflite": "file",
    "model.pt2": "file",
    "manifest.json": "file",
    "parity.json": "file",
}


def check_settings(preset, format, quantize, image_size, pool):
    """Raises a `ValueError` naming a bad flag."""
    if not preset:
        raise ValueError("--preset is required (a name or a preset folder).")
    if format not in FORMATS:
        raise ValueError(
            f"--format must be one of {sorted(FORMATS)}; got {format!r}."
        )
    if quantize not in QUANTIZE:
        raise ValueError(
            f"--quantize must be one of {QUANTIZE}; got {quantize!r}."
        )
    if image_size is not None and image_size < 0:
        raise ValueError(f"--image_size must be >= 0; got {image_size}.")
    if pool not in ("none", "mean"):
        raise ValueError(f"--pool must be none or mean; got {pool!r}.")


def load_model(preset, image_size):
    """`(model, kind)`: the classifier of a task preset, else the backbone."""
    import keras_aim

    kwargs = {}
    if image_size is not None:
        kwargs["image_shape"] = (image_size or None, image_size or None, 3)
    try:
        return keras_aim.AIMImageClassifier.from_preset(preset, **kwargs), (
            "classifier"
        )
    except ValueError as error:
        if "without a classification head" not in str(error):
            raise
    from keras_aim.models.backbone import Backbone

    return Backbone.from_preset(preset, **kwargs), "backbone"


def parity_images(model, size, seed=0):
    """Normalised-scale random images at each parity batch size."""
    patch = model.backbone.patch_size if hasattr(model, "backbone") else None
    patch = patch or getattr(model, "patch_size", 14)
    height = size[0] or 8 * patch
    width = size[1] or 8 * patch
    rng = np.random.default_rng(seed)
    return [
        rng.normal(size=(batch, height, width, size[2])).astype("float32")
        for batch in PARITY_BATCHES
    ]


def normalisation(model):
    from keras_aim.models.aim.aim_image_converter import IMAGENET_MEAN
    from keras_aim.models.aim.aim_image_converter import IMAGENET_STD

    converter = getattr(model, "image_converter", None)
    if converter is None:
        return {
            "layout": "NHWC, RGB",
            "scale": 1 / 255,
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "note": "images are (x * scale - mean) / std before the model",
        }
    config = converter.get_config()
    return {
        "layout": "NHWC, RGB",
        **{
            key: config[key]
            for key in ("resize_size", "crop_size", "interpolation")
        },
        "scale": config["scale"],
        "mean": config["mean"],
        "std": config["std"],
        "note": "resize the short side, centre crop, then (x * scale - mean)"
        " / std before the model",
    }


def class_names(model):
    """The classifier's saved label names, else `"0"`..`"C-1"`; `None`
    for a backbone."""
    names = getattr(model, "class_names", None)
    if names:
        return list(names)
    count = getattr(model, "num_classes", None)
    return None if count is None else [str(i) for i in range(count)]


@scaffold.writes(OUTPUTS)
def run(
    preset,
    format="saved_model",
    quantize="none",
    image_size=None,
    pool="none",
    output_dir="runs/export",
):
    """Exports the model; returns `(manifest, parity)` (also written)."""
    check_settings(preset, format, quantize, image_size, pool)
    import keras

    import keras_aim
    from keras_aim import export
    from keras_aim.training import prepare_output_dir

    keras_format = FORMATS[format]
    export.check_route(keras_format)
    output_dir = prepare_output_dir(output_dir)  # made and locked (writes)
    model, kind = load_model(preset, image_size)
    if quantize != "none":
        model.quantize(quantize)
    if kind == "backbone":
        model = export.feature_model(model, pool)
    size = export.input_size(model, None, keras_format)
    path = os.path.join(output_dir, export.ARTIFACT_NAMES[keras_format])
    export.export_model(model, path, keras_format)

    artifact = export.load_artifact(path, keras_format)
    checks = []
    for images in parity_images(model, size):
        want = keras.ops.convert_to_numpy(model(images))
        got = artifact(images)
        checks.append(
            {
                "shape": list(images.shape),
                "max_abs_diff": float(np.max(np.abs(got - want))),
            }
        )
    worst = max(check["max_abs_diff"] for check in checks)
    parity = {
        "max_abs_diff": worst,
        "tolerance": TOLERANCE,
        "passed": bool(worst <= TOLERANCE),
        "reference": "the Keras model (quantized when --quantize is set) on "
        f"{keras.backend.backend()}",
        "checks": checks,
    }
    outputs = model.outputs[0].shape
    manifest = {
        "format": format,
        "keras_format": keras_format,
        "artifact": os.path.basename(path),
        "backend": keras.backend.backend(),
        "model": kind if kind == "classifier" else f"backbone (pool={pool})",
        "quantize": quantize,
        "input_signature": [
            {
                "name": "images",
                "shape": [None, *size],
                "dtype": "float32",
                "any_resolution": None in size[:2],
            }
        ],
        "output": {
            "shape": [None, *outputs[1:]],
            "meaning": "logits" if kind == "classifier" else "features",
        },
        "normalisation": normalisation(model),
        "class_names": class_names(model),
        "keras_version": keras.__version__,
        "keras_aim_version": keras_aim.__version__,
    }
    for name, value in (("manifest.json", manifest), ("parity.json", parity)):
        with open(os.path.join(output_dir, name), "w") as f:
            json.dump(value, f, indent=2)
    return manifest, parity


def report(result, settings):
    manifest, parity = result
    print(
        f"Wrote {manifest['artifact']} ({manifest['format']}, "
        f"{manifest['backend']}); largest difference to Keras "
        f"{parity['max_abs_diff']:.2e}."
    )


SCRIPT = scaffold.Script(
    run,
    scaffold.flag("preset", help="Classifier or backbone preset."),
    scaffold.flag("format", "enum", "Artifact format.", values=tuple(FORMATS)),
    scaffold.flag("quantize", "enum", "Quantize first.", values=QUANTIZE),
    scaffold.flag(
        "image_size",
        help="Rebuild at this size (0: any size, where the format allows).",
        minimum=0,
    ),
    scaffold.flag(
        "pool",
        "enum",
        "Backbone presets: none or mean.",
        values=("none", "mean"),
    ),
    scaffold.flag("output_dir"),
    report=report,
)
main = SCRIPT.main
define_flags = SCRIPT.define_flags

if __name__ == "__main__":
    SCRIPT.cli()
