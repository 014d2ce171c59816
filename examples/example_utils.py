"""Helpers shared by the example scripts: settings and held-out images.

The scripts import this file by name (`python examples/NAME.py` puts this
folder on `sys.path`). keras_aim (and so Keras) is imported inside the
functions, so that `--help` stays fast.
"""

import math
import os

import numpy as np

EXIT_BAD_SETTINGS = 2
EXIT_DIVERGED = 3


def default_image_size(source):
    """The training image size `keras_aim.data` uses for `source`."""
    return {"digits": 16, "photos": 32}.get(source, 224)


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
