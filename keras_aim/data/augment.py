"""Augmentation and the evaluation transform (TensorFlow ops on one image
with values in [0, 255]).
"""

import functools
import math

import numpy as np

from keras_aim.data.common import check_image_size
from keras_aim.data.common import check_range
from keras_aim.data.common import import_tensorflow
from keras_aim.data.common import seed_pair
from keras_aim.models.aim.aim_image_converter import IMAGENET_MEAN
from keras_aim.models.aim.aim_image_converter import IMAGENET_STD
from keras_aim.models.aim.aim_image_converter import AIMImageConverter

CROP_MODES = ("resized_crop", "random_crop", "shift", "resize")


def normalize(image, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Scales an image from [0, 255] to [0, 1] and normalises it.

    Args:
        image: tensor `(..., C)` with values in [0, 255].
        mean: per-channel mean. Defaults to the ImageNet mean.
        std: per-channel standard deviation. Defaults to the ImageNet std.

    Returns:
        float32 `(image / 255 - mean) / std`.

    Example:

    >>> round(float(normalize([[[255.0, 255.0, 255.0]]])[0, 0, 0]), 4)
    2.2489
    """
    tf = import_tensorflow()
    image = tf.cast(image, tf.float32) / 255.0
    return (image - tf.constant(mean, tf.float32)) / tf.constant(
        std, tf.float32
    )


def _resize(image, size, interpolation, antialias=True):
    """Resizes a float image and clips the bicubic overshoot to [0, 255]."""
    tf = import_tensorflow()
    image = tf.image.resize(
        image, size, method=interpolation, antialias=antialias
    )
    return tf.clip_by_value(image, 0.0, 255.0)


def random_resized_crop(
    image,
    size,
    seed,
    scale=(0.4, 1.0),
    ratio=(3.0 / 4.0, 4.0 / 3.0),
    interpolation="bicubic",
):
    """Crops a random area and aspect ratio and resizes it to `size`.

    torchvision's `RandomResizedCrop` semantics: up to 10 tries to draw an
    area fraction in `scale` and a log-uniform aspect ratio in `ratio` that
    fit the image, then a uniform position; if none fit, a centre crop with
    the aspect ratio clamped to `ratio`.

    Args:
        image: float tensor `(H, W, C)` with values in [0, 255].
        size: int or `(height, width)` of the output.
        seed: stateless seed, an int or an int tensor of shape (2,).
        scale: `(min, max)` fraction of the image area. Defaults to
            `(0.4, 1.0)`, AIM's setting.
        ratio: `(min, max)` aspect ratio (width / height).
        interpolation: a `tf.image.resize` method. Defaults to `"bicubic"`.

    Returns:
        float32 `(height, width, C)` in [0, 255].

    Example:

    >>> import numpy as np
    >>> image = np.zeros((40, 60, 3), "float32")
    >>> tuple(random_resized_crop(image, 16, seed=0).shape)
    (16, 16, 3)
    """
    tf = import_tensorflow()
    size = check_image_size(size, "size")
    scale = check_range(scale, "scale")
    ratio = check_range(ratio, "ratio")
    image = tf.cast(image, tf.float32)
    seeds = tf.random.experimental.stateless_split(seed_pair(seed), 4)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    area = tf.random.stateless_uniform([10], seeds[0], scale[0], scale[1])
    area = area * h * w
    log_ratio = tf.random.stateless_uniform(
        [10], seeds[1], math.log(ratio[0]), math.log(ratio[1])
    )
    aspect = tf.exp(log_ratio)
    crop_w = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
    crop_h = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
    fits = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    # Fallback when nothing fits: the largest centred crop within `ratio`.
    image_ratio = w / h
    fallback_w = tf.where(
        image_ratio > ratio[1], tf.round(h * ratio[1]), tf.round(w)
    )
    fallback_w = tf.where(image_ratio < ratio[0], w, fallback_w)
    fallback_h = tf.where(
        image_ratio < ratio[0], tf.round(w / ratio[0]), tf.round(h)
    )
    fallback_h = tf.where(image_ratio > ratio[1], h, fallback_h)
    any_fits = tf.reduce_any(fits)
    crop_h = tf.where(any_fits, crop_h[first], tf.cast(fallback_h, tf.int32))
    crop_w = tf.where(any_fits, crop_w[first], tf.cast(fallback_w, tf.int32))
    top = tf.random.stateless_uniform(
        [], seeds[2], 0, height - crop_h + 1, dtype=tf.int32
    )
    left = tf.random.stateless_uniform(
        [], seeds[3], 0, width - crop_w + 1, dtype=tf.int32
    )
    top = tf.where(any_fits, top, (height - crop_h) // 2)
    left = tf.where(any_fits, left, (width - crop_w) // 2)
    crop = image[top : top + crop_h, left : left + crop_w]
    return _resize(crop, size, interpolation)


def random_crop(image, size, seed):
    """Crops a random `size` window (no resizing).

    Args:
        image: tensor `(H, W, C)`, at least `size`.
        size: int or `(height, width)`.
        seed: stateless seed, an int or an int tensor of shape (2,).

    Returns:
        float32 `(height, width, C)`.

    Example:

    >>> import numpy as np
    >>> tuple(random_crop(np.zeros((40, 60, 3)), 16, seed=0).shape)
    (16, 16, 3)
    """
    tf = import_tensorflow()
    height, width = check_image_size(size, "size")
    image = tf.cast(image, tf.float32)
    channels = tf.shape(image)[-1]
    return tf.image.stateless_random_crop(
        image, tf.stack([height, width, channels]), seed=seed_pair(seed)
    )


def random_shift(image, max_shift, seed, fill_value=0.0):
    """Shifts an image by up to `max_shift` pixels along each axis.

    The image is padded with `fill_value` by `max_shift` on every side and
    a window of the original size is cropped at a uniform position, so each
    axis moves by an integer in `[-max_shift, max_shift]`.

    Args:
        image: tensor `(H, W, C)`.
        max_shift: int >= 0, the largest shift in pixels.
        seed: stateless seed, an int or an int tensor of shape (2,).
        fill_value: value of the pixels shifted in. Defaults to 0 (black,
            the background of the digits).

    Returns:
        float32 `(H, W, C)`.

    Example:

    >>> import numpy as np
    >>> tuple(random_shift(np.zeros((16, 16, 3)), 2, seed=0).shape)
    (16, 16, 3)
    """
    tf = import_tensorflow()
    if not isinstance(max_shift, (int, np.integer)) or max_shift < 0:
        raise ValueError(
            "`max_shift` must be an int >= 0. "
            f"Received: max_shift={max_shift!r}"
        )
    image = tf.cast(image, tf.float32)
    if max_shift == 0:
        return image
    pad = [[max_shift, max_shift], [max_shift, max_shift], [0, 0]]
    padded = tf.pad(image, pad, constant_values=fill_value)
    return tf.image.stateless_random_crop(
        padded, tf.shape(image), seed=seed_pair(seed)
    )


def _grayscale(image):
    tf = import_tensorflow()
    weights = tf.constant([0.299, 0.587, 0.114], tf.float32)
    return tf.reduce_sum(image * weights, axis=-1, keepdims=True)


def random_color_jitter(
    image,
    seed,
    brightness=0.4,
    contrast=0.4,
    saturation=0.2,
    hue=0.1,
    probability=0.8,
):
    """Randomly jitters brightness, contrast, saturation and hue.

    Follows torchvision's `RandomApply([ColorJitter(...)], p)`: with
    probability `probability`, the four adjustments are applied in a random
    order, each with a factor drawn uniformly from `[1 - x, 1 + x]` (hue: a
    shift in `[-hue, hue]` of the colour circle). Brightness scales the
    pixels, contrast blends with the mean grey level, saturation blends with
    the grey image, hue rotates in HSV (`tf.image.adjust_hue`); the result
    is clipped after each step. ml-l3m uses the defaults for AIM.

    Args:
        image: float tensor `(H, W, 3)` with values in [0, 255].
        seed: stateless seed, an int or an int tensor of shape (2,).
        brightness: float >= 0. Defaults to 0.4.
        contrast: float >= 0. Defaults to 0.4.
        saturation: float >= 0. Defaults to 0.2.
        hue: float in [0, 0.5]. Defaults to 0.1.
        probability: float, the chance that any jitter is applied. Defaults
            to 0.8.

    Returns:
        float32 `(H, W, 3)` in [0, 255].

    Example:

    >>> import numpy as np
    >>> tuple(random_color_jitter(np.zeros((8, 8, 3)), seed=0).shape)
    (8, 8, 3)
    """
    tf = import_tensorflow()
    for name, value in (
        ("brightness", brightness),
        ("contrast", contrast),
        ("saturation", saturation),
    ):
        if value < 0:
            raise ValueError(f"`{name}` must be >= 0. Received: {value}")
    if not 0 <= hue <= 0.5:
        raise ValueError(f"`hue` must be in [0, 0.5]. Received: hue={hue}")
    seeds = tf.random.experimental.stateless_split(seed_pair(seed), 6)
    image = tf.cast(image, tf.float32) / 255.0

    def factor(seed, amount):
        return tf.random.stateless_uniform(
            [], seed, max(0.0, 1.0 - amount), 1.0 + amount
        )

    b = factor(seeds[0], brightness)
    c = factor(seeds[1], contrast)
    s = factor(seeds[2], saturation)
    h = tf.random.stateless_uniform([], seeds[3], -hue, hue)
    ops = [
        lambda x: tf.clip_by_value(x * b, 0.0, 1.0),
        lambda x: tf.clip_by_value(
            c * x + (1.0 - c) * tf.reduce_mean(_grayscale(x)), 0.0, 1.0
        ),
        lambda x: tf.clip_by_value(s * x + (1.0 - s) * _grayscale(x), 0.0, 1.0),
        lambda x: tf.clip_by_value(tf.image.adjust_hue(x, h), 0.0, 1.0),
    ]
    order = tf.argsort(tf.random.stateless_uniform([4], seeds[4]))
    jittered = image
    for position in range(4):
        jittered = tf.switch_case(
            order[position],
            [functools.partial(op, jittered) for op in ops],
        )
    apply = tf.random.stateless_uniform([], seeds[5]) < probability
    return tf.where(apply, jittered, image) * 255.0


def pretraining_augment(
    image,
    image_size,
    *,
    seed,
    color_jitter=False,
    crop_mode="resized_crop",
    scale=(0.4, 1.0),
    ratio=(3.0 / 4.0, 4.0 / 3.0),
    horizontal_flip=True,
    max_shift=2,
    interpolation="bicubic",
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
):
    """Augments one image for AIM pre-training and normalises it.

    The paper's recipe is `crop_mode="resized_crop"` (scale 0.4-1.0,
    bicubic) with horizontal flips; ml-l3m adds colour jitter
    (`color_jitter=True`).

    Args:
        image: tensor `(H, W, 3)` with values in [0, 255] (any dtype).
        image_size: int or `(height, width)` of the output.
        seed: stateless seed, an int or an int tensor of shape (2,).
        color_jitter: bool, whether to apply `random_color_jitter` with its
            defaults. Defaults to `False`.
        crop_mode: how the `image_size` view is made: `"resized_crop"`
            (`random_resized_crop`), `"random_crop"` (a random window, no
            resizing), `"shift"` (resize, then `random_shift` by up to
            `max_shift` pixels) or `"resize"` (resize only).
        scale: area range of `"resized_crop"`. Defaults to `(0.4, 1.0)`.
        ratio: aspect ratio range of `"resized_crop"`.
        horizontal_flip: bool, flip left-right with probability 0.5.
        max_shift: int, the largest shift of `"shift"`. Defaults to 2.
        interpolation: a `tf.image.resize` method. Defaults to `"bicubic"`.
        mean: per-channel mean. Defaults to the ImageNet mean.
        std: per-channel standard deviation. Defaults to the ImageNet std.

    Returns:
        float32 `(height, width, 3)`, normalised.

    Example:

    >>> import numpy as np
    >>> image = np.random.randint(0, 256, (40, 60, 3), dtype="uint8")
    >>> tuple(pretraining_augment(image, 16, seed=0).shape)
    (16, 16, 3)
    """
    tf = import_tensorflow()
    size = check_image_size(image_size)
    if crop_mode not in CROP_MODES:
        raise ValueError(
            f"`crop_mode` must be one of {CROP_MODES}. "
            f"Received: crop_mode={crop_mode!r}"
        )
    seeds = tf.random.experimental.stateless_split(seed_pair(seed), 3)
    image = tf.cast(image, tf.float32)
    if crop_mode == "resized_crop":
        image = random_resized_crop(
            image, size, seeds[0], scale, ratio, interpolation
        )
    elif crop_mode == "random_crop":
        image = random_crop(image, size, seeds[0])
    elif tuple(image.shape[:2]) != size:
        image = _resize(image, size, interpolation)
    if crop_mode == "shift":
        image = random_shift(image, max_shift, seeds[0])
    if horizontal_flip:
        image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    if color_jitter:
        image = random_color_jitter(image, seeds[2])
    image = tf.ensure_shape(image, (*size, 3))
    return normalize(image, mean, std)


# Evaluation transform.


def evaluation_transform(
    image,
    resize_size=256,
    crop_size=224,
    interpolation="bicubic",
    antialias=True,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
):
    """The AIM evaluation transform of one image, in TensorFlow ops.

    The same transform as `keras_aim.AIMImageConverter` (it runs the
    converter's own code with `tf` ops, `AIMImageConverter.tf_transform`):
    short side to `resize_size` (long side `floor(resize_size * long /
    short)`), centre crop, ImageNet normalisation. uint8 images get
    Pillow's resized pixels exactly, as in the release.

    Args:
        image: tensor `(H, W, C)` with values in [0, 255].
        resize_size: int short side, or `None` to skip resizing. Defaults
            to 256.
        crop_size: int or `(height, width)`, or `None` to skip cropping.
            Defaults to 224.
        interpolation: `"bicubic"`, `"bilinear"` or `"nearest"`. Defaults
            to `"bicubic"`.
        antialias: bool, low-pass filter when downsampling; `False` uses
            `tf.image.resize` instead of Pillow's filter. Defaults to
            `True`.
        mean: per-channel mean. Defaults to the ImageNet mean.
        std: per-channel standard deviation. Defaults to the ImageNet std.

    Returns:
        float32 `(crop_height, crop_width, C)`, normalised.

    Example:

    >>> import numpy as np
    >>> image = np.zeros((300, 400, 3), "uint8")
    >>> tuple(evaluation_transform(image).shape)
    (224, 224, 3)
    """
    converter = AIMImageConverter(
        resize_size=resize_size,
        crop_size=crop_size,
        interpolation=interpolation,
        antialias=antialias,
        mean=mean,
        std=std,
    )
    return converter.tf_transform(image)
