"""The built-in offline data: scikit-learn's digits and the sample photos."""

import functools
import os

import numpy as np

from keras_aim.data.common import SPLITS
from keras_aim.data.common import TEST_FRACTION
from keras_aim.data.common import check_fraction
from keras_aim.data.common import check_image_size
from keras_aim.data.common import check_split
from keras_aim.data.common import import_tensorflow
from keras_aim.models.aim.aim_image_converter import short_side_resize_shape
from keras_aim.utils.validation import positive_int

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
    size = check_image_size(image_size)
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype("float32") * (255.0 / 16.0)
    images = images[..., None]
    if size != (8, 8):
        tf = import_tensorflow()
        images = tf.image.resize(
            images, size, method="bicubic", antialias=True
        ).numpy()
    images = np.clip(np.round(images), 0, 255).astype("uint8")
    return np.repeat(images, 3, axis=-1), digits.target.astype("int64")


def digits_split_indices(num_examples, split, test_fraction):
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
def sample_photos():
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
    return [(name, image.copy()) for name, image in sample_photos()]


@functools.lru_cache(maxsize=4)
def resized_photos(photo_size):
    """Returns the photos resized so their short side is `photo_size`."""
    tf = import_tensorflow()
    photos = []
    for _, image in sample_photos():
        height, width = image.shape[:2]
        size = short_side_resize_shape(height, width, photo_size)
        resized = tf.image.resize(image, size, method="bicubic", antialias=True)
        resized = np.clip(np.round(resized.numpy()), 0, 255).astype("uint8")
        photos.append(resized)
    return tuple(photos)


def resolve_photo_size(photo_size, image_size):
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
    check_split(split)
    check_fraction(test_fraction)
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
    check_split(split)
    check_fraction(test_fraction)
    size = check_image_size(image_size)
    crops_per_image = positive_int(crops_per_image, "crops_per_image")
    photo_size = resolve_photo_size(photo_size, size)
    rng = np.random.default_rng([int(seed), SPLITS.index(split)])
    labels, boxes = [], []
    for label, (name, image) in enumerate(sample_photos()):
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
