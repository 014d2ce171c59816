"""Helpers shared by the example scripts: models, data and reports.

The command line itself (flags, entry points, exit codes) is `scaffold.py`.
The scripts import both files by name (`python examples/NAME.py` puts this
folder on `sys.path`). keras_aim (and so Keras) is imported inside the
functions, so that `--help` stays fast.
"""

import contextlib
import math
import os

import numpy as np


def build_backbone(image_shape, preset=None, **architecture):
    """A random-init backbone: `preset`'s architecture (any family, e.g. an
    AIMv2 one), or an `AIMBackbone` of `architecture`.

    Args:
        image_shape: `(H, W, C)` of the training images.
        preset: a preset name or folder (weights not loaded), or `None`.
        **architecture: `AIMBackbone` arguments, used without a preset.
    """
    from keras_aim.models.aim.aim_backbone import AIMBackbone
    from keras_aim.models.backbone import Backbone

    if preset:
        return Backbone.from_preset(
            preset, load_weights=False, image_shape=image_shape
        )
    return AIMBackbone(image_shape=image_shape, **architecture)


def build_pretrainer(
    image_shape,
    total_steps,
    batch_size,
    learning_rate,
    preset=None,
    architecture=None,
    head=None,
    seed=0,
    warmup_fraction=0.05,
    weight_decay=0.05,
):
    """A random-init backbone and its compiled `AIMPretrainer`.

    Args:
        image_shape: `(H, W, C)` of the training images.
        total_steps: the length of the learning-rate schedule.
        batch_size: images per step.
        learning_rate: the peak learning rate, at `batch_size`.
        preset: as in `build_backbone`; `architecture` is its other
            arguments.
        head: `AIMPretrainer` arguments (pixel head, attention, order).
        seed: of the pretrainer (prefixes, head initialisation).
        warmup_fraction, weight_decay: of the AdamW recipe.

    Returns:
        `(backbone, pretrainer)`.
    """
    from keras_aim import optimizers
    from keras_aim.models.aim.aim_pretrainer import AIMPretrainer

    backbone = build_backbone(image_shape, preset, **(architecture or {}))
    pretrainer = AIMPretrainer(backbone, seed=seed, **(head or {}))
    pretrainer.compile(
        optimizer=optimizers.pretraining_optimizer(
            total_steps,
            batch_size,
            base_learning_rate=learning_rate,
            base_batch_size=batch_size,
            warmup_fraction=warmup_fraction,
            weight_decay=weight_decay,
        )
    )
    return backbone, pretrainer


@contextlib.contextmanager
def dtype_policy(name):
    """Keras' dtype policy set to `name` (unchanged if `None`) inside the
    block, and restored after it."""
    import keras

    previous = keras.config.dtype_policy()
    if name:
        keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def training_set_size(source):
    """Number of training images of a finite source (digits, a folder)."""
    from keras_aim import data
    from keras_aim import training

    if source == "digits":
        return len(data.probe_dataset("digits", "train")[1])
    if os.path.isdir(source):
        return len(data.list_image_files(source))
    raise training.SettingsError(
        f"--epochs needs a dataset of known size ('digits' or an image "
        f"folder); {source!r} is an endless crop stream or a tfds dataset. "
        "Pass --steps instead."
    )


def resolve_steps(source, batch_size, steps, epochs, steps_given=False):
    """Total optimizer steps from `steps`, or from `epochs` over `source`.

    With `epochs`, the steps are `ceil(epochs * num_images / batch_size)`.
    Passing both (`steps_given=True`) is an error.
    """
    from keras_aim import training

    if epochs is None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise training.SettingsError(
                f"--steps must be a positive integer; got {steps!r}."
            )
        return steps
    if steps_given:
        raise training.SettingsError(
            f"Pass either --steps or --epochs, not both (got steps={steps}, "
            f"epochs={epochs})."
        )
    if not epochs > 0:
        raise training.SettingsError(
            f"--epochs must be positive; got {epochs!r}."
        )
    return max(1, math.ceil(epochs * training_set_size(source) / batch_size))


def _tfds_held_out(source, image_size, count):
    from keras_aim import data

    name = source[len("tfds:") :].split(":")[0]
    for split in ("test", "validation"):
        try:
            dataset = data.evaluation_dataset(
                f"tfds:{name}:{split}",
                resize_size=image_size,
                crop_size=image_size,
                batch_size=count,
            )
            return np.asarray(next(iter(dataset))), f"{name} {split} images"
        except Exception:  # Split missing or not prepared: try the next.
            continue
    return None, None


def held_out_images(source, image_size, count=8, seed=0):
    """Images the model did not train on, for the reconstruction preview.

    `"digits"` and `"photos"`: the probe test split (digits never used for
    pre-training; photo crops from each photo's test region). tfds: the
    first images of the `test` or `validation` split. Folders (no
    held-out split) and fallbacks: un-augmented-order training images.

    Returns:
        `(images, description)`: float32 `(count, S, S, 3)` normalised.
    """
    from keras_aim import data

    if source in ("digits", "photos"):
        images, _ = data.probe_dataset(source, "test", image_size=image_size)
        index = np.linspace(0, len(images) - 1, count).round().astype(int)
        return images[index], f"held-out {source} (probe test split)"
    if source.startswith("tfds:"):
        images, what = _tfds_held_out(source, image_size, count)
        if images is not None:
            return images, what
    dataset = data.pretraining_dataset(
        source, image_size=image_size, batch_size=count, seed=seed + 1
    )
    return np.asarray(
        next(iter(dataset))
    ), "training images (no held-out split)"


def write_pretraining_report(
    pretrainer, source, image_size, output_dir, num_preview=8, seed=0
):
    """Writes the loss curve, the reconstruction grid and the backbone.

    Returns:
        `{"loss_plot": path, "reconstructions": path, "backbone": path}`.
    """
    from keras_aim import training
    from keras_aim.callbacks import ReconstructionGrid
    from keras_aim.utils import plots

    files = {
        "loss_plot": plots.plot_loss_curve(
            os.path.join(output_dir, training.LOG_FILE),
            os.path.join(output_dir, "loss.png"),
        )
    }
    if num_preview:
        images, what = held_out_images(source, image_size, num_preview, seed)
        grid = ReconstructionGrid(
            images,
            os.path.join(output_dir, "reconstructions.png"),
            title=f"{what}: original | next-patch prediction (causal; each "
            "patch de-normalised with its target's mean and std)",
        )
        grid.set_model(pretrainer)
        grid.on_epoch_end(0)
        files["reconstructions"] = grid.written[-1]
    backbone_dir = os.path.join(output_dir, "backbone")
    pretrainer.backbone.save_to_preset(backbone_dir)
    files["backbone"] = backbone_dir
    return files


# --- The downstream scripts: probe, finetune, extract_features, evaluate ---


def output_folder(path):
    """Creates `--output_dir`; `SettingsError` (a ValueError) if it cannot."""
    from keras_aim import training

    return training.prepare_output_dir(path)


def load_backbone(preset, image_size=None, probe_layers=None):
    """The backbone of `--preset` and the image converter to read data with.

    The backbone is of the preset's family (`AIMBackbone` or
    `AIMv2Backbone`). A classifier preset brings its own converter; a
    backbone preset gets the release's transform at its own input size.
    `probe_layers` (the flag) is checked against the backbone here, before
    any data is read.
    """
    from keras_aim.models.aim.aim_image_converter import default_image_converter
    from keras_aim.models.aim.aim_image_converter import load_image_converter
    from keras_aim.models.backbone import Backbone

    if not preset:
        raise ValueError("--preset is required (a name, a preset or a folder).")
    kwargs = {}
    if image_size:
        kwargs["image_shape"] = (image_size, image_size, 3)
    backbone = Backbone.from_preset(preset, **kwargs)
    converter = None
    if os.path.isdir(preset) and not image_size:
        converter = load_image_converter(preset)
    if converter is None:
        converter = default_image_converter(backbone.image_shape)
    if probe_layers is not None:
        from keras_aim.models.aim.aim_image_classifier import (
            resolve_probe_layers,
        )

        resolve_probe_layers(probe_layers, backbone)
    return backbone, converter


def split_for(dataset, wanted):
    """`"test"`, or `"all"` for a folder without split sub-folders."""
    from keras_aim.data.labelled import TEST_FOLDERS

    if wanted != "auto":
        return wanted
    if os.path.isdir(dataset):
        names = ("train",) + TEST_FOLDERS
        if not any(os.path.isdir(os.path.join(dataset, n)) for n in names):
            return "all"
    return "test"


def write_metrics(output_dir, metrics, class_names, title):
    """Writes `metrics.json` and `confusion.png`; returns the JSON dict."""
    from keras_aim.utils import plots

    confusion = metrics.pop("confusion")
    path = os.path.join(output_dir, "confusion.png")
    plots.plot_confusion_matrix(confusion, path, class_names, title=title)
    metrics["files"] = {
        "metrics": os.path.join(output_dir, "metrics.json"),
        "confusion": path,
        **metrics.get("files", {}),
    }
    from keras_aim.utils.io_utils import write_json

    write_json(metrics["files"]["metrics"], metrics)  # whole, or not at all
    return metrics


def print_metrics(metrics, what):
    print(
        f"{what}: top-1 {100 * metrics['top1']:.2f}%, top-5 "
        f"{100 * metrics['top5']:.2f}% on {metrics['num_test']} images."
    )
    for name, path in metrics["files"].items():
        print(f"  {name}: {path}")


MAX_LOGICAL_REPLICAS = 64


def prepare_tensorflow_devices(distribution, mesh):
    """Makes the logical CPU replicas `--mesh=Nx1` asks TensorFlow for.

    TensorFlow fixes its devices when it first runs an op, which importing
    Keras does; so this runs before keras_aim is imported.
    """
    if (
        os.environ.get("KERAS_BACKEND") != "tensorflow"
        or distribution != "data"
    ):
        return
    if not mesh:
        return
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return
    replicas = int(str(mesh).lower().split("x")[0])  # checked by its flag
    if replicas > MAX_LOGICAL_REPLICAS:
        raise ValueError(
            f"--mesh={mesh} asks TensorFlow for {replicas} logical CPU "
            f"replicas; at most {MAX_LOGICAL_REPLICAS} (they share the "
            "CPU's cores)."
        )
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration()] * replicas,
    )


def chief_process():
    """Whether this process is a run's first (torchrun's RANK, or Keras'
    KERAS_DISTRIBUTION_PROCESS_ID for multi-host JAX)."""
    for name in ("RANK", "KERAS_DISTRIBUTION_PROCESS_ID"):
        if os.environ.get(name, "0") not in ("", "0"):
            return False
    return True
