"""Shared helpers of `keras_aim.data`: lazy TensorFlow, argument checks."""

import numpy as np

SPLITS = ("train", "test")
TEST_FRACTION = 0.3

# The image side a source is read at when none is given: the built-in
# digits and photos at their own small sizes, everything else (tensorflow-
# datasets, image folders) at the release's 224. Every default in
# keras_aim.data and the examples comes from here.
DEFAULT_IMAGE_SIZES = {"digits": 16, "photos": 32}
RELEASE_IMAGE_SIZE = 224


def default_image_size(source):
    """The image side `keras_aim.data` reads `source` at by default."""
    return DEFAULT_IMAGE_SIZES.get(source, RELEASE_IMAGE_SIZE)


def import_tensorflow():
    """Imports TensorFlow, with an install hint when it is missing."""
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError(
            "keras_aim.data builds tf.data pipelines and needs TensorFlow: "
            "`pip install keras-aim[data]` (or tensorflow-cpu)."
        ) from e
    return tf


def check_image_size(image_size, name="image_size"):
    """Returns `image_size` as a `(height, width)` pair of positive ints."""
    if isinstance(image_size, (int, np.integer)) and not isinstance(
        image_size, bool
    ):
        image_size = (int(image_size), int(image_size))
    try:
        size = tuple(int(v) for v in image_size)
        valid = len(size) == 2 and all(
            v > 0 and v == u for v, u in zip(size, image_size)
        )
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(
            f"`{name}` must be a positive int or a (height, width) pair of "
            f"positive ints. Received: {name}={image_size!r}"
        )
    return size


def check_split(split):
    if split not in SPLITS:
        raise ValueError(
            f"`split` must be one of {SPLITS}. Received: split={split!r}"
        )


def check_fraction(test_fraction):
    if not isinstance(test_fraction, (int, float)) or not (
        0.0 < test_fraction < 1.0
    ):
        raise ValueError(
            "`test_fraction` must be strictly between 0 and 1. "
            f"Received: test_fraction={test_fraction!r}"
        )


def check_range(value, name):
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        low, high = 1.0, 0.0
    if not 0.0 < low <= high:
        raise ValueError(
            f"`{name}` must be a (min, max) pair with 0 < min <= max. "
            f"Received: {name}={value!r}"
        )
    return low, high


def seed_pair(seed):
    """Returns a stateless seed: an int32 tensor of shape (2,)."""
    tf = import_tensorflow()
    if isinstance(seed, (int, np.integer)):
        return tf.constant([int(seed), 0], tf.int32)
    return tf.cast(tf.convert_to_tensor(seed), tf.int32)
