"""Image folders, tensorflow-datasets sources and image reading."""

import os
import warnings

import numpy as np

from keras_aim.data.common import SPLITS
from keras_aim.data.common import import_tensorflow
from keras_aim.utils import io_utils
from keras_aim.utils.errors import UnreadableFileError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# The first bytes of the image formats both tf.io.decode_image and Pillow
# read (WebP: "RIFF", a size, then "WEBP").
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"GIF8", b"RIFF")
# A decoded image is allocated from the size its header declares; these
# bound what one file may cost (a 100-megapixel photo is ~30 MB).
MAX_IMAGE_FILE_BYTES = 256 * 1024**2
MAX_IMAGE_PIXELS = 1 << 26  # 8192 x 8192
_JPEG_FRAMES = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(f, size):
    """`(width, height)` from a JPEG's frame header, walking its segments."""
    offset = 2
    for _ in range(4096):
        f.seek(offset)
        marker = f.read(4)
        if len(marker) < 4 or marker[0] != 0xFF:
            return None
        kind = marker[1]
        if kind == 0xFF:  # fill byte
            offset += 1
            continue
        if kind in (0x01, *range(0xD0, 0xD8)):  # no length
            offset += 2
            continue
        if kind in (0xD9, 0xDA):  # end, or scan data before any frame
            return None
        length = int.from_bytes(marker[2:4], "big")
        if kind in _JPEG_FRAMES:
            frame = f.read(5)
            if len(frame) < 5:
                return None
            return (
                int.from_bytes(frame[3:5], "big"),
                int.from_bytes(frame[1:3], "big"),
            )
        offset += 2 + length
        if length < 2 or offset >= size:
            return None
    return None


def image_dimensions(f, head, size):
    """`(width, height)` an image's header declares, or `None` if unknown."""
    if head.startswith(b"\x89PNG"):
        f.seek(16)
        data = f.read(8)
        if len(data) == 8:
            return int.from_bytes(data[:4], "big"), int.from_bytes(
                data[4:], "big"
            )
    elif head.startswith(b"GIF8"):
        f.seek(6)
        data = f.read(4)
        if len(data) == 4:
            return int.from_bytes(data[:2], "little"), int.from_bytes(
                data[2:], "little"
            )
    elif head.startswith(b"BM"):
        f.seek(14)
        data = f.read(12)
        if len(data) == 12:
            if int.from_bytes(data[:4], "little") == 12:  # OS/2 header
                width = int.from_bytes(data[4:6], "little")
                return width, int.from_bytes(data[6:8], "little")
            width = int.from_bytes(data[4:8], "little", signed=True)
            height = int.from_bytes(data[8:12], "little", signed=True)
            return abs(width), abs(height)
    elif head.startswith(b"\xff\xd8\xff"):
        return _jpeg_size(f, size)
    return None


def check_image_file(path):
    """Why `path` cannot be an image, from its size, head and tail; or `None`.

    A cheap check made when a dataset is built (it reads the header and the
    last 1 KB): not a regular file (a FIFO, a device, a directory: see
    `io_utils.check_regular_file`), larger than `MAX_IMAGE_FILE_BYTES`, an
    empty or unreadable file, one that is not a JPEG, PNG, BMP, GIF or WebP, one
    whose header declares more than `MAX_IMAGE_PIXELS` pixels (decoding
    would allocate them), or one cut short (a JPEG without its end marker,
    a PNG without its IEND chunk, a BMP or GIF shorter than it says).
    Damage inside a complete file is found when it is decoded
    (`find_undecodable`).
    """
    try:
        with io_utils.open_regular(
            path, MAX_IMAGE_FILE_BYTES, "Image file"
        ) as f:
            size = os.fstat(f.fileno()).st_size
            head, dimensions = f.read(12), None
            if head.startswith(_MAGIC):
                dimensions = image_dimensions(f, head, size)
            f.seek(max(0, size - 1024))
            tail = f.read(1024)
    except UnreadableFileError as error:
        return error.reason
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    if not head:
        return "is empty (0 bytes)"
    webp = head.startswith(b"RIFF") and head[8:12] == b"WEBP"
    if not head.startswith(_MAGIC) or (head.startswith(b"RIFF") and not webp):
        return "is not a JPEG, PNG, BMP, GIF or WebP image"
    if dimensions is not None and (
        dimensions[0] * dimensions[1] > MAX_IMAGE_PIXELS
    ):
        return (
            f"declares {dimensions[0]} x {dimensions[1]} pixels, more than "
            f"the {MAX_IMAGE_PIXELS:,} allowed"
        )
    truncated = "is truncated (its end is missing)"
    if head.startswith(b"\xff\xd8\xff") and b"\xff\xd9" not in tail:
        return truncated
    if head.startswith(b"\x89PNG") and b"IEND" not in tail[-16:]:
        return truncated
    if head.startswith(b"GIF8") and b"\x3b" not in tail[-16:]:
        return truncated
    if webp and int.from_bytes(head[4:8], "little") + 8 > size:
        return truncated
    if head.startswith(b"BM") and len(head) >= 6:
        declared = int.from_bytes(head[2:6], "little")
        if declared > size:
            return truncated
    return None


def find_undecodable(paths, decoder="tensorflow"):
    """`[(path, reason)]` of the files that cannot be decoded fully.

    `decoder` is the one the pipeline used: `"tensorflow"`
    (`tf.io.decode_image`, training) or `"pillow"` (evaluation).
    """
    tf = import_tensorflow()
    bad = []
    for path in paths:
        try:
            if decoder == "pillow":
                from keras_aim.data.decoding import pillow_rgb

                with open(path, "rb") as f:
                    image = tf.constant(pillow_rgb(f.read()))
            else:
                image = tf.io.decode_image(
                    tf.io.read_file(path), channels=3, expand_animations=False
                )
            if image.shape.rank != 3 or 0 in image.shape:
                raise ValueError(f"decoded to shape {image.shape}")
        except Exception as error:  # tf raises several error types here.
            message = str(error).strip().splitlines()[0][:120]
            bad.append((path, f"cannot be decoded ({message})"))
    return bad


def readable_files(paths, what="images"):
    """Drops files that fail `check_image_file`, warning once with a count.

    Returns:
        `(kept, skipped)`: the paths kept and `[(path, reason)]` skipped.
    """
    kept, skipped = [], []
    for path in paths:
        reason = check_image_file(path)
        if reason is None:
            kept.append(path)
        else:
            skipped.append((path, reason))
    if skipped:
        warn_skipped(skipped, what)
    return kept, skipped


def warn_skipped(skipped, what="images"):
    """Warns about skipped files, naming the first few."""
    names = "; ".join(f"{p} {r}" for p, r in skipped[:5])
    more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
    warnings.warn(
        f"Skipped {len(skipped)} unreadable {what}: {names}{more}.",
        stacklevel=3,
    )


def list_image_files(folder):
    """Lists the image files under `folder`, recursively, sorted.

    Args:
        folder: str, a directory.

    Returns:
        A sorted list of paths ending in .jpg, .jpeg, .png, .bmp, .gif or
        .webp (any case) that are regular files (symlinks followed) of at most
        `MAX_IMAGE_FILE_BYTES`; FIFOs, devices, sockets, broken links and
        oversized files under such names are skipped with a warning, so
        no reader ever opens them.

    Example:

    >>> import tempfile
    >>> list_image_files(tempfile.mkdtemp())
    []
    """
    if not os.path.isdir(folder):
        raise ValueError(f"`{folder}` is not a directory.")
    files, skipped = [], []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                path = os.path.join(root, name)
                try:
                    io_utils.check_regular_file(path, MAX_IMAGE_FILE_BYTES)
                except UnreadableFileError as error:
                    skipped.append((path, error.reason))
                    continue
                files.append(path)
    if skipped:
        warn_skipped(skipped)
    return sorted(files)


def folder_files(folder, argument="source"):
    files, _ = readable_files(list_image_files(folder))
    if not files:
        raise ValueError(
            f"`{argument}`={folder!r} is a folder without images: no "
            f"readable files ending in {IMAGE_EXTENSIONS} were found under it."
        )
    return files


def read_class_folder(folder, split, test_fraction, seed):
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
    label_of = dict(zip(files, labels))
    files, _ = readable_files(files, f"images in {folder!r}")
    labels = [label_of[f] for f in files]
    return files, np.asarray(labels, "int32"), class_names


def read_image(path):
    """Decodes a file with `tf.io.decode_image` (training pipelines).

    Evaluation reads files with `keras_aim.data.decoding.read_rgb`
    instead, Pillow's pixels as in the release.
    """
    tf = import_tensorflow()
    image = tf.io.decode_image(
        tf.io.read_file(path), channels=3, expand_animations=False
    )
    return tf.ensure_shape(image, (None, None, 3))


def load_tfds_for_evaluation(name, split, data_dir, image_key, converter):
    """A tfds split with `image_key` left encoded when it is an image.

    Returns:
        `(dataset, convert)`: `convert(example[image_key])` is the image
        through `converter`, decoded by Pillow as in the release when the
        feature is an encoded `tfds.features.Image`, else made RGB by
        `to_rgb`.
    """
    import tensorflow_datasets as tfds

    try:
        feature = tfds.builder(name, data_dir=data_dir).info.features
        encoded = isinstance(feature[image_key], tfds.features.Image)
    except Exception:  # Unknown or unprepared: load_tfds says which.
        encoded = False
    if not encoded:
        dataset = load_tfds(name, split, data_dir)
        return dataset, lambda image: converter.tf_transform(to_rgb(image))
    from keras_aim.data.decoding import decode_and_convert

    skip = {image_key: tfds.decode.SkipDecoding()}
    dataset = load_tfds(name, split, data_dir, decoders=skip)
    return dataset, lambda data: decode_and_convert(data, converter)


def to_rgb(image):
    """Makes a decoded image 3-channel (grey replicated, alpha dropped)."""
    tf = import_tensorflow()
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


def parse_tfds(source):
    parts = source.split(":")
    if len(parts) not in (2, 3) or not parts[1]:
        raise ValueError(
            "A tensorflow-datasets `source` is written 'tfds:NAME' or "
            f"'tfds:NAME:SPLIT'. Received: source={source!r}"
        )
    return parts[1], parts[2] if len(parts) == 3 and parts[2] else None


def load_tfds(name, split, data_dir, decoders=None):
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
            decoders=decoders,
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
