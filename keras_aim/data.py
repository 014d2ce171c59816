"""tf.data input pipelines for AIM pre-training, probing and evaluation.

TensorFlow's `tf.data` feeds every Keras backend; this is the one module of
keras_aim that uses TensorFlow directly, and it imports it lazily, so
`import keras_aim` works without it.

Sources, all offline:

- `"digits"`: scikit-learn's 1,797 handwritten digits (8x8 grey, 10
  classes), upsampled and replicated to RGB.
- `"photos"`: the 21 real photos that ship inside scikit-image
  (`skimage/data`) and scikit-learn (`china.jpg`, `flower.jpg`). Random
  crops give an unlimited stream of natural-image patches; "which photo is
  this crop from", with train and test crops from disjoint regions, is a
  labelled probe task.
- `"tfds:NAME[:SPLIT]"`: a prepared tensorflow-datasets dataset (never
  downloaded here; prepare it first and pass `data_dir`).
- a folder path: images (jpg, jpeg, png, bmp) found recursively; for probes
  and labelled evaluation, one subfolder per class.

All pipelines work on pixel values in [0, 255] and end with the ImageNet
normalisation `(x / 255 - mean) / std` that the AIM models expect.
Randomness is stateless and derived from `seed` and the element's position
in the stream, so a pipeline gives the same batches for the same seed.
"""

import functools
import math
import os

import numpy as np

from keras_aim.preprocessing import IMAGENET_MEAN
from keras_aim.preprocessing import IMAGENET_STD
from keras_aim.preprocessing import short_side_resize_shape
from keras_aim.validation import positive_int

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
CROP_MODES = ("resized_crop", "random_crop", "shift", "resize")
SPLITS = ("train", "test")
TEST_FRACTION = 0.3
SPLIT_SEED = 0

# Files in scikit-image's `data` folder that are real photographs. Left out:
# drawings and synthetic images (chessboard_*, color, horse, logo, phantom)
# and motorcycle_right, a near-duplicate of motorcycle_left (a stereo pair),
# which would make "which photo is this crop from" ill-posed.
SKIMAGE_PHOTOS = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "cell.png",
    "chelsea.png",
    "clock_motion.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "microaneurysms.png",
    "moon.png",
    "motorcycle_left.png",
    "page.png",
    "retina.jpg",
    "rocket.jpg",
    "text.png",
)
SKLEARN_PHOTOS = ("china", "flower")


def _tf():
    """Imports TensorFlow, with an install hint when it is missing."""
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError(
            "keras_aim.data builds tf.data pipelines and needs TensorFlow: "
            "`pip install keras-aim[data]` (or tensorflow-cpu)."
        ) from e
    return tf


def _image_size(image_size, name="image_size"):
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


def _check_split(split):
    if split not in SPLITS:
        raise ValueError(
            f"`split` must be one of {SPLITS}. Received: split={split!r}"
        )


def _check_fraction(test_fraction):
    if not isinstance(test_fraction, (int, float)) or not (
        0.0 < test_fraction < 1.0
    ):
        raise ValueError(
            "`test_fraction` must be strictly between 0 and 1. "
            f"Received: test_fraction={test_fraction!r}"
        )


def _check_range(value, name):
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


def _seed_pair(seed):
    """Returns a stateless seed: an int32 tensor of shape (2,)."""
    tf = _tf()
    if isinstance(seed, (int, np.integer)):
        return tf.constant([int(seed), 0], tf.int32)
    return tf.cast(tf.convert_to_tensor(seed), tf.int32)


# Built-in data.


def load_digits_images(image_size=16):
    """Loads scikit-learn's handwritten digits as RGB uint8 images.

    The 1,797 8x8 images (values 0..16) are rescaled to 0..255, resized
    (bicubic, rounded and clipped) to `image_size` and replicated to three
    channels.

    Args:
        image_size: int or `(height, width)`. Defaults to 16.

    Returns:
        `(images, labels)`: uint8 `(1797, H, W, 3)` and int64 `(1797,)`.

    Example:

    >>> images, labels = load_digits_images(16)
    >>> images.shape, labels[:5].tolist()
    ((1797, 16, 16, 3), [0, 1, 2, 3, 4])
    """
    size = _image_size(image_size)
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype("float32") * (255.0 / 16.0)
    images = images[..., None]
    if size != (8, 8):
        tf = _tf()
        images = tf.image.resize(
            images, size, method="bicubic", antialias=True
        ).numpy()
    images = np.clip(np.round(images), 0, 255).astype("uint8")
    return np.repeat(images, 3, axis=-1), digits.target.astype("int64")


def _digits_split(num_examples, split, test_fraction):
    """Returns the indices of the fixed, seeded digits train/test split."""
    order = np.random.RandomState(SPLIT_SEED).permutation(num_examples)
    num_test = int(round(num_examples * test_fraction))
    return np.sort(order[num_test:] if split == "train" else order[:num_test])


def _to_rgb_array(image):
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return np.ascontiguousarray(image[..., :3].astype("uint8"))


@functools.lru_cache(maxsize=1)
def _sample_photos():
    try:
        import skimage
        import skimage.io
        from sklearn.datasets import load_sample_images
    except ImportError as e:
        raise ImportError(
            "The built-in photos need scikit-image and scikit-learn: "
            "`pip install keras-aim[data]`."
        ) from e
    folder = os.path.join(os.path.dirname(skimage.__file__), "data")
    photos = []
    for filename in SKIMAGE_PHOTOS:
        path = os.path.join(folder, filename)
        if os.path.exists(path):
            name = os.path.splitext(filename)[0]
            photos.append((name, _to_rgb_array(skimage.io.imread(path))))
    sklearn_images = load_sample_images()
    for filename, image in zip(sklearn_images.filenames, sklearn_images.images):
        name = os.path.splitext(os.path.basename(filename))[0]
        if name in SKLEARN_PHOTOS:
            photos.append((name, _to_rgb_array(image)))
    return tuple(photos)


def load_sample_photos():
    """Returns the real photos shipped inside scikit-image and scikit-learn.

    19 photos from scikit-image's `skimage/data` folder (astronaut, brick,
    camera, cell, chelsea, clock_motion, coffee, coins, grass, gravel,
    hubble_deep_field, ihc, microaneurysms, moon, motorcycle_left, page,
    retina, rocket, text) and scikit-learn's china and flower: 21 in all,
    read from the installed packages, never downloaded. Grey photos are
    replicated to three channels. A photo's position in the list is its
    label in `probe_dataset("photos")`.

    Returns:
        A list of `(name, image)` with `image` a uint8 `(H, W, 3)` array.

    Example:

    >>> photos = load_sample_photos()
    >>> photos[0][0], photos[0][1].shape
    ('astronaut', (512, 512, 3))
    """
    return [(name, image.copy()) for name, image in _sample_photos()]


@functools.lru_cache(maxsize=4)
def _resized_photos(photo_size):
    """Returns the photos resized so their short side is `photo_size`."""
    tf = _tf()
    photos = []
    for _, image in _sample_photos():
        height, width = image.shape[:2]
        size = short_side_resize_shape(height, width, photo_size)
        resized = tf.image.resize(image, size, method="bicubic", antialias=True)
        resized = np.clip(np.round(resized.numpy()), 0, 255).astype("uint8")
        photos.append(resized)
    return tuple(photos)


def _photo_size(photo_size, image_size):
    if photo_size is None:
        return 4 * max(image_size)
    return positive_int(photo_size, "photo_size")


def photo_region(width, split, test_fraction=TEST_FRACTION):
    """Returns the `[start, stop)` columns of a photo's train or test region.

    The train region is the left `1 - test_fraction` of the columns and the
    test region the rest, so probe crops of the two splits never share a
    pixel.

    Args:
        width: int, the photo width.
        split: `"train"` or `"test"`.
        test_fraction: float in (0, 1). Defaults to 0.3.

    Example:

    >>> photo_region(100, "train"), photo_region(100, "test")
    ((0, 70), (70, 100))
    """
    _check_split(split)
    _check_fraction(test_fraction)
    boundary = int(round(width * (1.0 - test_fraction)))
    return (0, boundary) if split == "train" else (boundary, width)


def photo_crop_boxes(
    split="train",
    image_size=32,
    crops_per_image=64,
    photo_size=None,
    test_fraction=TEST_FRACTION,
    seed=0,
):
    """Returns the crop boxes behind `probe_dataset("photos")`.

    Each photo is resized so its short side is `photo_size`; crops of
    `image_size` are drawn uniformly inside the photo's train or test region
    (see `photo_region`).

    Args:
        split: `"train"` or `"test"`.
        image_size: int or `(height, width)`, the crop size. Defaults to 32.
        crops_per_image: int, crops per photo. Defaults to 64.
        photo_size: int, the short side of the resized photos. Defaults to
            `4 * image_size`.
        test_fraction: float, the share of columns in the test region.
        seed: int, seeds the crop positions (each split its own stream).

    Returns:
        `(labels, boxes)`: int32 `(N,)` photo indices and int32 `(N, 4)`
        boxes `(top, left, bottom, right)` (bottom and right exclusive) in
        the resized photo's pixels.

    Example:

    >>> labels, boxes = photo_crop_boxes("test", 32, crops_per_image=2)
    >>> labels.shape, boxes.shape
    ((42,), (42, 4))
    """
    _check_split(split)
    _check_fraction(test_fraction)
    size = _image_size(image_size)
    crops_per_image = positive_int(crops_per_image, "crops_per_image")
    photo_size = _photo_size(photo_size, size)
    rng = np.random.default_rng([int(seed), SPLITS.index(split)])
    labels, boxes = [], []
    for label, (name, image) in enumerate(_sample_photos()):
        height, width = short_side_resize_shape(*image.shape[:2], photo_size)
        start, stop = photo_region(width, split, test_fraction)
        if stop - start < size[1] or height < size[0]:
            raise ValueError(
                f"The {split} region of photo '{name}' is {height}x"
                f"{stop - start} pixels at photo_size={photo_size}, smaller "
                f"than image_size={size}. Pass a larger `photo_size` or a "
                f"`test_fraction` nearer 0.5."
            )
        tops = rng.integers(0, height - size[0] + 1, crops_per_image)
        lefts = rng.integers(start, stop - size[1] + 1, crops_per_image)
        labels.append(np.full(crops_per_image, label))
        boxes.append(
            np.stack([tops, lefts, tops + size[0], lefts + size[1]], 1)
        )
    return (
        np.concatenate(labels).astype("int32"),
        np.concatenate(boxes).astype("int32"),
    )


# Augmentation (TensorFlow ops on one image with values in [0, 255]).


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
    tf = _tf()
    image = tf.cast(image, tf.float32) / 255.0
    return (image - tf.constant(mean, tf.float32)) / tf.constant(
        std, tf.float32
    )


def _resize(image, size, interpolation, antialias=True):
    """Resizes a float image and clips the bicubic overshoot to [0, 255]."""
    tf = _tf()
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
    tf = _tf()
    size = _image_size(size, "size")
    scale = _check_range(scale, "scale")
    ratio = _check_range(ratio, "ratio")
    image = tf.cast(image, tf.float32)
    seeds = tf.random.experimental.stateless_split(_seed_pair(seed), 4)
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
    tf = _tf()
    height, width = _image_size(size, "size")
    image = tf.cast(image, tf.float32)
    channels = tf.shape(image)[-1]
    return tf.image.stateless_random_crop(
        image, tf.stack([height, width, channels]), seed=_seed_pair(seed)
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
    tf = _tf()
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
        padded, tf.shape(image), seed=_seed_pair(seed)
    )


def _grayscale(image):
    tf = _tf()
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
    tf = _tf()
    for name, value in (
        ("brightness", brightness),
        ("contrast", contrast),
        ("saturation", saturation),
    ):
        if value < 0:
            raise ValueError(f"`{name}` must be >= 0. Received: {value}")
    if not 0 <= hue <= 0.5:
        raise ValueError(f"`hue` must be in [0, 0.5]. Received: hue={hue}")
    seeds = tf.random.experimental.stateless_split(_seed_pair(seed), 6)
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
    tf = _tf()
    size = _image_size(image_size)
    if crop_mode not in CROP_MODES:
        raise ValueError(
            f"`crop_mode` must be one of {CROP_MODES}. "
            f"Received: crop_mode={crop_mode!r}"
        )
    seeds = tf.random.experimental.stateless_split(_seed_pair(seed), 3)
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
    """The AIM evaluation transform of one image, with `tf.image`.

    Resizes the short side to `resize_size` (long side
    `floor(resize_size * long / short)`), takes the centre crop and
    normalises, like `AIMImageConverter` (which does the same with
    `keras.ops` inside a model). Integer images are rounded and clipped to
    [0, 255] after resizing, like PIL.

    Args:
        image: tensor `(H, W, C)` with values in [0, 255].
        resize_size: int short side, or `None` to skip resizing. Defaults
            to 256.
        crop_size: int or `(height, width)`, or `None` to skip cropping.
            Defaults to 224.
        interpolation: a `tf.image.resize` method. Defaults to `"bicubic"`.
        antialias: bool, low-pass filter when downsampling. Defaults to
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
    tf = _tf()
    resize_size, crop = _evaluation_args(resize_size, crop_size)
    image = tf.convert_to_tensor(image)
    is_integer = image.dtype.is_integer
    image = tf.cast(image, tf.float32)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    if resize_size is not None:
        short = tf.minimum(height, width)
        new_height = tf.where(
            height <= width, resize_size, (resize_size * height) // short
        )
        new_width = tf.where(
            height <= width, (resize_size * width) // short, resize_size
        )
        image = tf.image.resize(
            image,
            tf.stack([new_height, new_width]),
            method=interpolation,
            antialias=antialias,
        )
        if is_integer:
            image = tf.clip_by_value(tf.round(image), 0.0, 255.0)
        height, width = new_height, new_width
    if crop is not None:
        tf.debugging.assert_greater_equal(
            tf.stack([height, width]),
            tf.constant(crop),
            message=f"evaluation_transform: crop_size={crop} is larger than "
            "the resized image",
        )
        top = tf.cast(tf.round((height - crop[0]) / 2), tf.int32)
        left = tf.cast(tf.round((width - crop[1]) / 2), tf.int32)
        image = image[top : top + crop[0], left : left + crop[1]]
    return normalize(image, mean, std)


def _evaluation_args(resize_size, crop_size):
    if resize_size is not None:
        resize_size = positive_int(resize_size, "resize_size")
    crop = None if crop_size is None else _image_size(crop_size, "crop_size")
    if resize_size is not None and crop is not None:
        if min(crop) > resize_size:
            raise ValueError(
                f"`crop_size`={crop_size!r} is larger than the resized image, "
                f"whose short side is resize_size={resize_size}."
            )
    return resize_size, crop


# Image folders and tensorflow-datasets.


def list_image_files(folder):
    """Lists the image files under `folder`, recursively, sorted.

    Args:
        folder: str, a directory.

    Returns:
        A sorted list of paths ending in .jpg, .jpeg, .png or .bmp (any
        case).

    Example:

    >>> import tempfile
    >>> list_image_files(tempfile.mkdtemp())
    []
    """
    if not os.path.isdir(folder):
        raise ValueError(f"`{folder}` is not a directory.")
    files = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                files.append(os.path.join(root, name))
    return sorted(files)


def _folder_files(folder, argument="source"):
    files = list_image_files(folder)
    if not files:
        raise ValueError(
            f"`{argument}`={folder!r} is a folder without images: no files "
            f"ending in {IMAGE_EXTENSIONS} were found under it."
        )
    return files


def _class_folder(folder, split, test_fraction, seed):
    """Returns `(files, labels, class_names)` of a one-folder-per-class tree.

    If `folder` has `train/` or `test/` subfolders, `folder/split` is used
    as is; otherwise each class's files are split with a seeded permutation,
    `test_fraction` of them for test.
    """
    root = folder
    presplit = any(os.path.isdir(os.path.join(folder, s)) for s in SPLITS)
    if presplit:
        root = os.path.join(folder, split)
        if not os.path.isdir(root):
            raise ValueError(
                f"`source`={folder!r} has a train/ or test/ subfolder but no "
                f"{split}/ subfolder for split={split!r}."
            )
    class_names = sorted(
        name
        for name in os.listdir(root)
        if os.path.isdir(os.path.join(root, name))
        and list_image_files(os.path.join(root, name))
    )
    if not class_names:
        raise ValueError(
            f"`source`={folder!r} needs one subfolder of images per class "
            "(optionally under train/ and test/); found none."
        )
    files, labels = [], []
    rng = np.random.RandomState(seed)
    for label, name in enumerate(class_names):
        class_files = list_image_files(os.path.join(root, name))
        if not presplit:
            order = rng.permutation(len(class_files))
            num_test = int(round(len(class_files) * test_fraction))
            chosen = order[num_test:] if split == "train" else order[:num_test]
            class_files = [class_files[i] for i in sorted(chosen)]
        files.extend(class_files)
        labels.extend([label] * len(class_files))
    return files, np.asarray(labels, "int32"), class_names


def _read_image(path):
    tf = _tf()
    image = tf.io.decode_image(
        tf.io.read_file(path), channels=3, expand_animations=False
    )
    return tf.ensure_shape(image, (None, None, 3))


def _to_rgb(image):
    """Makes a decoded image 3-channel (grey replicated, alpha dropped)."""
    tf = _tf()
    channels = image.shape[-1]
    if channels == 1:
        return tf.tile(image, [1, 1, 3])
    if channels == 4:
        return image[..., :3]
    if channels == 3:
        return image
    raise ValueError(
        f"Images must have 1, 3 or 4 channels; got shape {image.shape}."
    )


def _parse_tfds(source):
    parts = source.split(":")
    if len(parts) not in (2, 3) or not parts[1]:
        raise ValueError(
            "A tensorflow-datasets `source` is written 'tfds:NAME' or "
            f"'tfds:NAME:SPLIT'. Received: source={source!r}"
        )
    return parts[1], parts[2] if len(parts) == 3 and parts[2] else None


def _load_tfds(name, split, data_dir):
    """Loads a prepared tensorflow-datasets split without downloading."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            "`source='tfds:...'` needs tensorflow-datasets: "
            "`pip install keras-aim[data]`."
        ) from e
    try:
        return tfds.load(
            name,
            split=split,
            data_dir=data_dir,
            download=False,
            shuffle_files=False,
        )
    except tfds.core.DatasetNotFoundError:
        raise ValueError(
            f"tensorflow-datasets has no dataset named {name!r} "
            "(see `tfds.list_builders()`)."
        ) from None
    except (AssertionError, FileNotFoundError) as e:
        raise ValueError(
            f"The tensorflow-datasets dataset {name!r} (split {split!r}) is "
            f"not prepared in data_dir={data_dir!r}, and keras_aim never "
            "downloads. Prepare it first, e.g. `tfds.builder(name, "
            "data_dir=...).download_and_prepare()` (or `tfds build`), then "
            f"pass that data_dir. Original error: {e}"
        ) from e


# Pipelines.


def _views(images_fn, augment, crops_per_image, seed):
    """Maps `(index, item)` to `crops_per_image` augmented views.

    `images_fn(item)` returns the source image; view `j` of stream element
    `i` uses the stateless seed derived from `(seed, i, j)`.
    """
    tf = _tf()
    base = tf.constant([int(seed), 0], tf.int32)

    def fn(index, item):
        image = images_fn(item)
        element_seed = tf.random.experimental.stateless_fold_in(
            base, tf.cast(index, tf.int32)
        )
        seeds = tf.random.experimental.stateless_split(
            element_seed, crops_per_image
        )
        return tf.stack(
            [augment(image, seeds[j]) for j in range(crops_per_image)]
        )

    return fn


def _batched(dataset, batch_size, drop_remainder):
    tf = _tf()
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(
        tf.data.AUTOTUNE
    )


def pretraining_dataset(
    source="digits",
    image_size=None,
    batch_size=64,
    seed=0,
    color_jitter=False,
    shuffle=True,
    repeat=True,
    crops_per_image=1,
    crop_mode=None,
    scale=(0.4, 1.0),
    horizontal_flip=None,
    max_shift=2,
    photo_size=None,
    data_dir=None,
    image_key="image",
    shuffle_buffer=10_000,
    drop_remainder=True,
):
    """Builds a tf.data stream of augmented, normalised images.

    Per source, the defaults are:

    - `"digits"`: the digits' train split (`probe_dataset`'s, so probe test
      digits stay unseen), 16x16, random shifts of up to `max_shift` = 2
      px, no flips.
    - `"photos"`: 32x32 random crops (no resizing) of the built-in photos
      resized to a short side of `photo_size` (default `4 * image_size`),
      taken from each photo's train region only (the left 70% of its
      columns, see `photo_region`) so probe test crops stay unseen; flips.
      With `repeat=True` this is an unlimited stream.
    - `"tfds:NAME[:SPLIT]"` (split defaults to "train") and image folders:
      224x224 random resized crops (scale 0.4-1.0, bicubic) and flips, the
      AIM recipe.

    Args:
        source: `"digits"`, `"photos"`, `"tfds:NAME[:SPLIT]"` or a folder
            of images (searched recursively).
        image_size: int or `(height, width)` of the output images.
            Defaults to 16 (digits), 32 (photos) or 224.
        batch_size: int. Defaults to 64.
        seed: int; the same seed gives the same batches.
        color_jitter: bool, add colour jitter (p 0.8). Defaults to `False`.
        shuffle: bool, shuffle the source images. Defaults to `True`.
        repeat: bool, loop forever. Defaults to `True`.
        crops_per_image: int, augmented views made from each source image
            per pass (consecutive in the stream). Defaults to 1.
        crop_mode: `"resized_crop"`, `"random_crop"`, `"shift"`,
            `"resize"` or `None` for the source's default (see
            `pretraining_augment`).
        scale: area range of `"resized_crop"`. Defaults to `(0.4, 1.0)`.
        horizontal_flip: bool, or `None` for the source's default.
        max_shift: int, the largest shift of `"shift"`. Defaults to 2.
        photo_size: int, short side of the resized photos (`"photos"`).
        data_dir: tensorflow-datasets data folder (`"tfds:..."`).
        image_key: the image feature of a tfds dataset. Defaults to
            `"image"`.
        shuffle_buffer: int, the shuffle buffer for tfds datasets.
        drop_remainder: bool, drop a last partial batch. Defaults to `True`.

    Returns:
        A `tf.data.Dataset` of float32 `(batch_size, height, width, 3)`.

    Example:

    >>> dataset = pretraining_dataset("digits", batch_size=8)
    >>> tuple(next(iter(dataset)).shape)
    (8, 16, 16, 3)
    """
    tf = _tf()
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(
            "`source` must be 'digits', 'photos', 'tfds:NAME[:SPLIT]' or an "
            f"image folder. Received: source={source!r}"
        )
    source = os.fspath(source)
    kind = _source_kind(source)
    defaults = {
        "digits": (16, "shift", False),
        "photos": (32, "random_crop", True),
        "tfds": (224, "resized_crop", True),
        "folder": (224, "resized_crop", True),
    }[kind]
    size = _image_size(defaults[0] if image_size is None else image_size)
    batch_size = positive_int(batch_size, "batch_size")
    crops_per_image = positive_int(crops_per_image, "crops_per_image")
    crop_mode = defaults[1] if crop_mode is None else crop_mode
    horizontal_flip = (
        defaults[2] if horizontal_flip is None else horizontal_flip
    )
    augment = functools.partial(
        pretraining_augment,
        image_size=size,
        color_jitter=color_jitter,
        crop_mode=crop_mode,
        scale=scale,
        horizontal_flip=horizontal_flip,
        max_shift=max_shift,
    )
    # Validate the augmentation arguments eagerly, before tf.data tracing.
    augment(np.zeros((*size, 3), "uint8"), seed=0)

    def augment_fn(image, view_seed):
        return augment(image, seed=view_seed)

    if kind == "digits":
        images, _ = load_digits_images(size)
        images = images[_digits_split(len(images), "train", TEST_FRACTION)]
        dataset = tf.data.Dataset.from_tensor_slices(images)
        num_items, read = len(images), None
    elif kind == "photos":
        photo_size = _photo_size(photo_size, size)
        photos = []
        for image in _resized_photos(photo_size):
            start, stop = photo_region(image.shape[1], "train")
            photos.append(image[:, start:stop])
        too_small = [p.shape for p in photos if p.shape[0] < size[0]]
        too_small += [p.shape for p in photos if p.shape[1] < size[1]]
        if too_small and crop_mode == "random_crop":
            raise ValueError(
                f"image_size={size} is larger than a photo's train region "
                f"{too_small[0][:2]} at photo_size={photo_size}; pass a "
                "larger `photo_size`."
            )
        read = _photo_reader(photos)
        num_items = len(photos)
        dataset = tf.data.Dataset.range(num_items)
    elif kind == "folder":
        files = _folder_files(source)
        dataset = tf.data.Dataset.from_tensor_slices(files)
        num_items, read = len(files), _read_image
    else:
        name, split = _parse_tfds(source)
        dataset = _load_tfds(name, split or "train", data_dir)
        num_items, read = shuffle_buffer, None
        dataset = dataset.map(
            lambda example: _to_rgb(example[image_key]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    if shuffle:
        dataset = dataset.shuffle(
            min(num_items, shuffle_buffer),
            seed=seed,
            reshuffle_each_iteration=True,
        )
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.enumerate().map(
        _views(read or (lambda x: x), augment_fn, crops_per_image, seed),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    dataset = dataset.unbatch()
    return _batched(dataset, batch_size, drop_remainder)


def _source_kind(source):
    if source in ("digits", "photos"):
        return source
    if source.startswith("tfds:"):
        return "tfds"
    if os.path.isdir(source):
        return "folder"
    raise ValueError(
        "`source` must be 'digits', 'photos', 'tfds:NAME[:SPLIT]' or an "
        f"existing image folder. Received: source={source!r}"
    )


def _photo_reader(photos):
    """Returns `index -> uint8 photo`, the photos packed in one buffer."""
    tf = _tf()
    flat = tf.constant(np.concatenate([p.reshape(-1) for p in photos]))
    sizes = [p.size for p in photos]
    offsets = tf.constant(np.cumsum([0] + sizes[:-1]), tf.int64)
    shapes = tf.constant([p.shape for p in photos], tf.int64)

    def read(index):
        shape = shapes[index]
        start = offsets[index]
        return tf.reshape(flat[start : start + tf.reduce_prod(shape)], shape)

    return read


def probe_dataset(
    source="digits",
    split="train",
    image_size=None,
    crops_per_image=64,
    photo_size=None,
    test_fraction=TEST_FRACTION,
    seed=0,
    batch_size=None,
):
    """Returns a labelled train or test set for attentive probes.

    - `"digits"`: the 10 digit classes, a fixed seeded split (30% test) of
      the 1,797 images, resized to `image_size` (default 16).
    - `"photos"`: which of the 21 built-in photos a crop comes from.
      `crops_per_image` crops of `image_size` (default 32) per photo, each
      photo resized to a short side of `photo_size` (default
      `4 * image_size`); train crops lie in the left 70% of the columns and
      test crops in the right 30% (`photo_region`, `photo_crop_boxes`), so
      the two splits share no pixel.
    - a folder with one subfolder per class (sorted names are the labels),
      optionally already split into `train/` and `test/`; otherwise a
      seeded per-class split with `test_fraction` for test. Images are
      resized (short side) and centre-cropped to `image_size` (default
      224).

    Images get no augmentation; they are normalised with the ImageNet
    statistics.

    Args:
        source: `"digits"`, `"photos"` or a class-per-subfolder folder.
        split: `"train"` or `"test"`.
        image_size: int or `(height, width)`.
        crops_per_image: int, crops per photo (`"photos"`). Defaults to 64.
        photo_size: int, short side of the resized photos (`"photos"`).
        test_fraction: float, the share of the test split (of the images,
            or of each photo's columns). Defaults to 0.3.
        seed: int; seeds the photo crop positions and the folder split
            (the digits split is fixed).
        batch_size: int, or `None` to get NumPy arrays.

    Returns:
        `(images, labels)`: float32 `(N, H, W, 3)` and int32 `(N,)` NumPy
        arrays, or a `tf.data.Dataset` of such batches when `batch_size` is
        given.

    Example:

    >>> images, labels = probe_dataset("digits", "test")
    >>> images.shape, labels.shape
    ((539, 16, 16, 3), (539,))
    """
    _check_split(split)
    _check_fraction(test_fraction)
    if batch_size is not None:
        batch_size = positive_int(batch_size, "batch_size")
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(
            "`source` must be 'digits', 'photos' or a folder with one "
            f"subfolder per class. Received: source={source!r}"
        )
    source = os.fspath(source)
    kind = _source_kind(source)
    if kind == "tfds":
        raise ValueError(
            "probe_dataset supports 'digits', 'photos' and class folders; "
            f"for tensorflow-datasets use evaluation_dataset. Received: "
            f"source={source!r}"
        )
    default_size = {"digits": 16, "photos": 32, "folder": 224}[kind]
    size = _image_size(default_size if image_size is None else image_size)
    tf = _tf()
    if kind == "digits":
        images, labels = load_digits_images(size)
        index = _digits_split(len(images), split, test_fraction)
        images = normalize(images[index]).numpy()
        labels = labels[index].astype("int32")
    elif kind == "photos":
        photo_size = _photo_size(photo_size, size)
        labels, boxes = photo_crop_boxes(
            split, size, crops_per_image, photo_size, test_fraction, seed
        )
        photos = _resized_photos(photo_size)
        crops = np.stack(
            [photos[k][t:b, x:r] for k, (t, x, b, r) in zip(labels, boxes)]
        )
        images = normalize(crops).numpy()
    else:
        files, labels, _ = _class_folder(source, split, test_fraction, seed)
        if not files:
            raise ValueError(
                f"The {split} split of `source`={source!r} is empty."
            )
        dataset = tf.data.Dataset.from_tensor_slices((files, labels)).map(
            lambda path, label: (
                evaluation_transform(_read_image(path), min(size), size),
                label,
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        if batch_size is not None:
            return _batched(dataset, batch_size, False)
        images = np.stack([x.numpy() for x, _ in dataset])
    if batch_size is not None:
        dataset = tf.data.Dataset.from_tensor_slices((images, labels))
        return _batched(dataset, batch_size, False)
    return images, labels


def evaluation_dataset(
    source,
    labels=None,
    resize_size=256,
    crop_size=224,
    batch_size=32,
    interpolation="bicubic",
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    data_dir=None,
    image_key="image",
    label_key="label",
):
    """Builds a batched evaluation stream with the AIM evaluation transform.

    Each image goes through `evaluation_transform` (short side to
    `resize_size`, bicubic; centre crop `crop_size`; ImageNet
    normalisation). The order is kept; nothing is shuffled.

    Args:
        source: a folder of images (searched recursively, sorted paths),
            `"tfds:NAME[:SPLIT]"` (split defaults to "test"), a uint8 array
            `(N, H, W, C)`, or a list of `(H, W, C)` arrays of any sizes.
        labels: for arrays, a sequence of `N` int labels; for folders,
            `"inferred"` to label by the first-level subfolder (sorted
            class names); for tfds, `"inferred"` to read `label_key`; or
            `None` for images only.
        resize_size: int short side, or `None`. Defaults to 256.
        crop_size: int or `(height, width)`, or `None`. Defaults to 224.
        batch_size: int. Defaults to 32.
        interpolation: a `tf.image.resize` method. Defaults to `"bicubic"`.
        mean: per-channel mean. Defaults to the ImageNet mean.
        std: per-channel standard deviation. Defaults to the ImageNet std.
        data_dir: tensorflow-datasets data folder (`"tfds:..."`).
        image_key: the image feature of a tfds dataset.
        label_key: the label feature of a tfds dataset.

    Returns:
        A `tf.data.Dataset` of float32 `(B, crop_h, crop_w, C)` batches, or
        of `(images, labels)` when labels are given.

    Example:

    >>> import numpy as np
    >>> images = np.zeros((3, 300, 400, 3), "uint8")
    >>> dataset = evaluation_dataset(images, batch_size=2)
    >>> [tuple(x.shape) for x in dataset]
    [(2, 224, 224, 3), (1, 224, 224, 3)]
    """
    tf = _tf()
    batch_size = positive_int(batch_size, "batch_size")
    resize_size, crop = _evaluation_args(resize_size, crop_size)
    transform = functools.partial(
        evaluation_transform,
        resize_size=resize_size,
        crop_size=crop,
        interpolation=interpolation,
        mean=mean,
        std=std,
    )
    if labels not in (None, "inferred") and isinstance(labels, str):
        raise ValueError(
            "`labels` must be None, 'inferred' or a sequence of ints. "
            f"Received: labels={labels!r}"
        )
    if isinstance(source, (str, os.PathLike)):
        source = os.fspath(source)
        if source.startswith("tfds:"):
            name, split = _parse_tfds(source)
            dataset = _load_tfds(name, split or "test", data_dir)
            if labels == "inferred":
                dataset = dataset.map(
                    lambda ex: (
                        transform(_to_rgb(ex[image_key])),
                        ex[label_key],
                    )
                )
            elif labels is None:
                dataset = dataset.map(
                    lambda ex: transform(_to_rgb(ex[image_key]))
                )
            else:
                raise ValueError(
                    "For a tfds `source`, `labels` must be None or "
                    f"'inferred'. Received: labels={labels!r}"
                )
            return _batched(dataset, batch_size, False)
        if not os.path.isdir(source):
            raise ValueError(
                "`source` must be an image folder, 'tfds:NAME[:SPLIT]' or "
                f"an array of images. Received: source={source!r}"
            )
        files = _folder_files(source)
        if labels == "inferred":
            names = sorted(
                {os.path.relpath(f, source).split(os.sep)[0] for f in files}
            )
            if any(os.sep not in os.path.relpath(f, source) for f in files):
                raise ValueError(
                    "`labels='inferred'` needs every image inside a class "
                    f"subfolder of `source`={source!r}; some are at its top "
                    "level."
                )
            label_values = [
                names.index(os.path.relpath(f, source).split(os.sep)[0])
                for f in files
            ]
            dataset = tf.data.Dataset.from_tensor_slices((files, label_values))
            dataset = dataset.map(
                lambda path, label: (transform(_read_image(path)), label),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
        elif labels is None:
            dataset = tf.data.Dataset.from_tensor_slices(files).map(
                lambda path: transform(_read_image(path)),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
        else:
            raise ValueError(
                "For a folder `source`, `labels` must be None or 'inferred'. "
                f"Received: labels={labels!r}"
            )
        return _batched(dataset, batch_size, False)
    if isinstance(source, np.ndarray) and source.ndim == 4:
        dataset = tf.data.Dataset.from_tensor_slices(source)
        num_images = len(source)
    elif isinstance(source, (list, tuple)) and all(
        np.ndim(image) == 3 for image in source
    ):
        images = [np.asarray(image) for image in source]
        dtypes = {image.dtype for image in images}
        if len(dtypes) != 1:
            raise ValueError(
                f"All images in `source` must share a dtype; got {dtypes}."
            )
        dataset = tf.data.Dataset.from_generator(
            lambda: iter(images),
            output_signature=tf.TensorSpec(
                (None, None, images[0].shape[-1]), images[0].dtype
            ),
        )
        num_images = len(images)
    else:
        raise ValueError(
            "`source` must be an image folder, 'tfds:NAME[:SPLIT]', an array "
            "(N, H, W, C) or a list of (H, W, C) arrays. Received: "
            f"{type(source).__name__} of shape {np.shape(source)}"
        )
    dataset = dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    if labels is not None:
        if isinstance(labels, str):
            raise ValueError(
                "For array `source`, `labels` must be a sequence of ints. "
                f"Received: labels={labels!r}"
            )
        labels = np.asarray(labels)
        if labels.shape != (num_images,):
            raise ValueError(
                f"`labels` must have one entry per image ({num_images}). "
                f"Received: labels of shape {labels.shape}"
            )
        dataset = tf.data.Dataset.zip(
            (dataset, tf.data.Dataset.from_tensor_slices(labels))
        )
    return _batched(dataset, batch_size, False)
