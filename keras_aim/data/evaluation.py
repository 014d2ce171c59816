"""The evaluation stream: images through an `AIMImageConverter`'s transform."""

import os

import numpy as np

from keras_aim.data.common import import_tensorflow
from keras_aim.data.decoding import read_and_convert
from keras_aim.data.sources import folder_files
from keras_aim.data.sources import load_tfds_for_evaluation
from keras_aim.data.sources import parse_tfds
from keras_aim.data.streams import batch_and_prefetch
from keras_aim.models.aim.aim_image_converter import IMAGENET_MEAN
from keras_aim.models.aim.aim_image_converter import IMAGENET_STD
from keras_aim.models.aim.aim_image_converter import AIMImageConverter
from keras_aim.utils.validation import positive_int


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
    image_converter=None,
):
    """Builds a batched evaluation stream with the AIM evaluation transform.

    Each image goes through the evaluation transform of `image_converter`
    (by default an `AIMImageConverter` built from `resize_size`,
    `crop_size`, `interpolation`, `mean` and `std`: short side to 256,
    bicubic; centre crop 224; ImageNet normalisation), the same code a
    classifier runs on raw images. Files and encoded tfds images are
    decoded by Pillow (`keras_aim.data.decoding`), so the pixels are the
    release's. The order is kept; nothing is shuffled.

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
        interpolation: `"bicubic"`, `"bilinear"` or `"nearest"`.
            Defaults to `"bicubic"`.
        mean: per-channel mean. Defaults to the ImageNet mean.
        std: per-channel standard deviation. Defaults to the ImageNet std.
        data_dir: tensorflow-datasets data folder (`"tfds:..."`).
        image_key: the image feature of a tfds dataset.
        label_key: the label feature of a tfds dataset.
        image_converter: an `AIMImageConverter` (e.g. a classifier's own)
            to use instead of the size and statistics arguments.

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
    tf = import_tensorflow()
    batch_size = positive_int(batch_size, "batch_size")
    if image_converter is None:
        if resize_size is not None:
            resize_size = positive_int(resize_size, "resize_size")
        image_converter = AIMImageConverter(
            resize_size=resize_size,
            crop_size=crop_size,
            interpolation=interpolation,
            mean=mean,
            std=std,
        )
    elif not isinstance(image_converter, AIMImageConverter):
        raise ValueError(
            "`image_converter` must be a keras_aim.AIMImageConverter (e.g. "
            "a classifier's `image_converter`); got "
            f"{type(image_converter).__name__}."
        )
    transform = image_converter.tf_transform

    def read(path):
        return read_and_convert(path, image_converter)

    if labels not in (None, "inferred") and isinstance(labels, str):
        raise ValueError(
            "`labels` must be None, 'inferred' or a sequence of ints. "
            f"Received: labels={labels!r}"
        )
    if isinstance(source, (str, os.PathLike)):
        source = os.fspath(source)
        if source.startswith("tfds:"):
            name, split = parse_tfds(source)
            dataset, convert = load_tfds_for_evaluation(
                name, split or "test", data_dir, image_key, image_converter
            )
            if labels == "inferred":
                dataset = dataset.map(
                    lambda ex: (
                        convert(ex[image_key]),
                        ex[label_key],
                    ),
                    num_parallel_calls=tf.data.AUTOTUNE,
                )
            elif labels is None:
                dataset = dataset.map(
                    lambda ex: convert(ex[image_key]),
                    num_parallel_calls=tf.data.AUTOTUNE,
                )
            else:
                raise ValueError(
                    "For a tfds `source`, `labels` must be None or "
                    f"'inferred'. Received: labels={labels!r}"
                )
            return batch_and_prefetch(dataset, batch_size, False)
        if not os.path.isdir(source):
            raise ValueError(
                "`source` must be an image folder, 'tfds:NAME[:SPLIT]' or "
                f"an array of images. Received: source={source!r}"
            )
        files = folder_files(source)
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
                lambda path, label: (read(path), label),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
        elif labels is None:
            dataset = tf.data.Dataset.from_tensor_slices(files).map(
                read,
                num_parallel_calls=tf.data.AUTOTUNE,
            )
        else:
            raise ValueError(
                "For a folder `source`, `labels` must be None or 'inferred'. "
                f"Received: labels={labels!r}"
            )
        return batch_and_prefetch(dataset, batch_size, False)
    if isinstance(source, np.ndarray) and source.ndim == 4:
        dataset = tf.data.Dataset.from_tensor_slices(source)
        num_images = len(source)
    elif isinstance(source, (list, tuple)) and all(
        np.ndim(image) == 3 for image in source
    ):
        images = [np.asarray(image) for image in source]
        if not images:
            raise ValueError("`source` is an empty list; it needs images.")
        channels = {image.shape[-1] for image in images}
        if len(channels) != 1:
            raise ValueError(
                "All images in `source` must have the same number of "
                f"channels; got {sorted(channels)}."
            )
        dtypes = {image.dtype for image in images}
        if len(dtypes) != 1:
            raise ValueError(
                f"All images in `source` must share a dtype; got {dtypes}."
            )
        # One flat tensor and each image's shape, not `from_generator`: no
        # Python runs inside tf.data's threads (see docs/reliability.md).
        flat = tf.RaggedTensor.from_row_lengths(
            np.concatenate([image.reshape(-1) for image in images]),
            [image.size for image in images],
        )
        shapes = np.array([image.shape for image in images], "int64")
        dataset = tf.data.Dataset.from_tensor_slices((flat, shapes)).map(
            tf.reshape
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
    return batch_and_prefetch(dataset, batch_size, False)
