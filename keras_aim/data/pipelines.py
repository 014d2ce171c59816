"""The tf.data pipelines for pre-training and probing."""

import functools
import os

import numpy as np

from keras_aim.data.augment import normalize
from keras_aim.data.augment import pretraining_augment
from keras_aim.data.builtin import digits_split_indices
from keras_aim.data.builtin import load_digits_images
from keras_aim.data.builtin import photo_crop_boxes
from keras_aim.data.builtin import photo_region
from keras_aim.data.builtin import resized_photos
from keras_aim.data.builtin import resolve_photo_size
from keras_aim.data.common import TEST_FRACTION
from keras_aim.data.common import check_fraction
from keras_aim.data.common import check_image_size
from keras_aim.data.common import check_split
from keras_aim.data.common import default_image_size
from keras_aim.data.common import import_tensorflow
from keras_aim.data.decoding import read_and_convert
from keras_aim.data.sources import folder_files
from keras_aim.data.sources import read_class_folder
from keras_aim.data.sources import read_image
from keras_aim.data.streams import StreamOrder
from keras_aim.data.streams import batch_and_prefetch
from keras_aim.data.streams import indexed_views
from keras_aim.data.streams import photo_reader
from keras_aim.data.streams import shard_positions
from keras_aim.data.streams import shard_sizes
from keras_aim.data.streams import tfds_stream
from keras_aim.models.aim.aim_image_converter import AIMImageConverter
from keras_aim.utils.validation import positive_int


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
    start_batch=0,
    num_shards=1,
    shard_index=0,
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
        start_batch: int, the first global batch to produce: a resumed run
            starts where it stopped without reading what came before
            (digits, photos, folders; tfds streams skip). Defaults to 0.
        num_shards: int, processes (or replicas) splitting each global
            batch of `batch_size`; this stream yields `batch_size //
            num_shards` images per batch. Defaults to 1.
        shard_index: int, which slice of each global batch this is.

    Digits, photos and folders are read by position: position `k` holds a
    stateless per-epoch permutation of the items (`index_shuffle`), so
    every epoch sees every image once and any batch is O(1) to reach.

    Returns:
        A `tf.data.Dataset` of float32 `(batch_size, height, width, 3)`.

    Example:

    >>> dataset = pretraining_dataset("digits", batch_size=8)
    >>> tuple(next(iter(dataset)).shape)
    (8, 16, 16, 3)
    """
    tf = import_tensorflow()
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(
            "`source` must be 'digits', 'photos', 'tfds:NAME[:SPLIT]' or an "
            f"image folder. Received: source={source!r}"
        )
    source = os.fspath(source)
    kind = _source_kind(source)
    defaults = {
        "digits": ("shift", False),
        "photos": ("random_crop", True),
        "tfds": ("resized_crop", True),
        "folder": ("resized_crop", True),
    }[kind]
    if image_size is None:
        image_size = default_image_size(source)
    size = check_image_size(image_size)
    batch_size = positive_int(batch_size, "batch_size")
    crops_per_image = positive_int(crops_per_image, "crops_per_image")
    num_shards, shard_index = shard_sizes(
        batch_size, crops_per_image, num_shards, shard_index
    )
    crop_mode = defaults[0] if crop_mode is None else crop_mode
    horizontal_flip = (
        defaults[1] if horizontal_flip is None else horizontal_flip
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
    order = StreamOrder(
        batch_size=batch_size,
        crops=crops_per_image,
        seed=seed,
        shuffle=shuffle,
        repeat=repeat,
        start_batch=start_batch,
        num_shards=num_shards,
        shard_index=shard_index,
        drop_remainder=drop_remainder,
    )

    def augment_fn(image, view_seed):
        return augment(image, seed=view_seed)

    if kind == "digits":
        images, _ = load_digits_images(size)
        images = images[
            digits_split_indices(len(images), "train", TEST_FRACTION)
        ]
        table = tf.constant(images)
        num_items, fetch = len(images), lambda i: tf.gather(table, i)
    elif kind == "photos":
        photo_size = resolve_photo_size(photo_size, size)
        photos = []
        for image in resized_photos(photo_size):
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
        num_items, fetch = len(photos), photo_reader(photos)
    elif kind == "folder":
        files = tf.constant(folder_files(source))
        num_items = int(files.shape[0])
        fetch = lambda i: read_image(tf.gather(files, i))  # noqa: E731
    else:
        return tfds_stream(
            source, data_dir, image_key, augment_fn, order, shuffle_buffer
        )
    dataset = shard_positions(num_items, order).map(
        indexed_views(fetch, num_items, augment_fn, order),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if kind == "folder":
        # A file that passed the build-time checks but fails to decode is
        # dropped (with TensorFlow's warning) instead of stopping the run;
        # it is dropped the same way on every pass, so resumes replay.
        dataset = dataset.ignore_errors(log_warning=True)
    return order.batch(dataset.unbatch())


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
    check_split(split)
    check_fraction(test_fraction)
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
    if image_size is None:
        image_size = default_image_size(source)
    size = check_image_size(image_size)
    tf = import_tensorflow()
    if kind == "digits":
        images, labels = load_digits_images(size)
        index = digits_split_indices(len(images), split, test_fraction)
        images = normalize(images[index]).numpy()
        labels = labels[index].astype("int32")
    elif kind == "photos":
        photo_size = resolve_photo_size(photo_size, size)
        labels, boxes = photo_crop_boxes(
            split, size, crops_per_image, photo_size, test_fraction, seed
        )
        photos = resized_photos(photo_size)
        crops = np.stack(
            [photos[k][t:b, x:r] for k, (t, x, b, r) in zip(labels, boxes)]
        )
        images = normalize(crops).numpy()
    else:
        files, labels, _ = read_class_folder(source, split, test_fraction, seed)
        if not files:
            raise ValueError(
                f"The {split} split of `source`={source!r} is empty."
            )
        converter = AIMImageConverter(resize_size=min(size), crop_size=size)
        dataset = tf.data.Dataset.from_tensor_slices((files, labels)).map(
            lambda path, label: (
                read_and_convert(path, converter),
                label,
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        if batch_size is not None:
            return batch_and_prefetch(dataset, batch_size, False)
        images = np.stack([x.numpy() for x, _ in dataset])
    if batch_size is not None:
        dataset = tf.data.Dataset.from_tensor_slices((images, labels))
        return batch_and_prefetch(dataset, batch_size, False)
    return images, labels
