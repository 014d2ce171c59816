"""Image files decoded as the release decodes them: Pillow, then RGB.

The release's evaluation (torchvision's `ImageFolder` loader) opens each
file with Pillow and calls `convert("RGB")`. Decoding the same way is the
only route to the same pixels for every format: TensorFlow's decoders use
the fast IDCT for JPEG by default, convert CMYK with their own rounding,
and read 16-bit PNGs differently. So evaluation pipelines decode with
Pillow inside `tf.data` (`tf.numpy_function`; Pillow releases the GIL
while it decodes, so a parallel `map` uses every core), as timm does.

Pillow's rules, kept as they are: JPEG with the accurate integer IDCT,
CMYK JPEGs read as Adobe-inverted; grey, palette and 16-bit images
converted to RGB by Pillow's own tables; alpha dropped (not composited);
the first frame of an animated GIF or WebP; EXIF orientation not applied.
"""

import io
import warnings

import numpy as np

from keras_aim.data.common import import_tensorflow


def import_pillow():
    """Imports Pillow, with an install hint when it is missing."""
    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError(
            "Evaluation pipelines decode images with Pillow, as the AIM "
            "release does: `pip install keras-aim[data]` (or pillow)."
        ) from e
    return Image


def open_rgb(data):
    """Decodes encoded image bytes like the release: a Pillow RGB image.

    `Image.open(...).convert("RGB")` (its first frame for animations).
    """
    image_module = import_pillow()
    if isinstance(data, np.ndarray):  # tf.numpy_function, run eagerly.
        data = data.item()
    with warnings.catch_warnings():
        # Palette images with transparency warn on convert(); the alpha is
        # dropped either way, as in the release.
        warnings.simplefilter("ignore", UserWarning)
        image = image_module.open(io.BytesIO(bytes(data)))
        image.load()
        return image if image.mode == "RGB" else image.convert("RGB")


def pillow_rgb(data):
    """Decodes encoded image bytes to a uint8 `(H, W, 3)` array like PIL.

    `Image.open(...).convert("RGB")`: the pixels the release's loader
    gives (its first frame for animations).

    Args:
        data: bytes of a JPEG, PNG, GIF, BMP, WebP, TIFF, ... file.

    Returns:
        uint8 NumPy array `(H, W, 3)`.

    Example:

    >>> import io
    >>> from PIL import Image
    >>> buffer = io.BytesIO()
    >>> Image.new("L", (4, 3), 7).save(buffer, "PNG")
    >>> pillow_rgb(buffer.getvalue()).shape
    (3, 4, 3)
    """
    return np.asarray(open_rgb(data))


def decode_rgb(contents):
    """`pillow_rgb` in a TensorFlow graph: encoded bytes -> uint8 RGB.

    Args:
        contents: a scalar string tensor (e.g. `tf.io.read_file(path)`).

    Returns:
        A uint8 tensor `(H, W, 3)`.
    """
    tf = import_tensorflow()
    import_pillow()
    image = tf.numpy_function(pillow_rgb, [contents], tf.uint8, stateful=False)
    return tf.ensure_shape(image, (None, None, 3))


def decode_and_convert(contents, converter):
    """Encoded bytes through `converter`, decoded like the release.

    The same as `converter.tf_transform(decode_rgb(contents))`, in one
    `tf.numpy_function` when the converter resizes with Pillow: decoding,
    resizing and cropping stay in Pillow (no full-size copies to and from
    TensorFlow), then `converter.normalize` runs in tf.

    Args:
        contents: a scalar string tensor.
        converter: a `keras_aim.AIMImageConverter`.

    Returns:
        A float32 tensor `(crop_height, crop_width, 3)`.
    """
    from keras_aim.models.aim.aim_image_ops import TFOps
    from keras_aim.utils.pil_resampling import pillow_resize

    if converter.resampling != "pillow" or converter.resize_size is None:
        return converter.tf_transform(decode_rgb(contents))
    tf = import_tensorflow()
    import_pillow()

    def crop(data):
        image = open_rgb(data)
        size, window = converter.geometry(image.height, image.width)
        return pillow_resize(image, size, window, converter.interpolation)

    pixels = tf.numpy_function(crop, [contents], tf.uint8, stateful=False)
    crop_size = converter.crop_size or (None, None)
    pixels = tf.ensure_shape(pixels, (*crop_size, 3))
    return converter.normalize(pixels, TFOps())


def read_and_convert(path, converter):
    """Reads one image file through `converter` (`decode_and_convert`)."""
    tf = import_tensorflow()
    return decode_and_convert(tf.io.read_file(path), converter)


def read_rgb(path):
    """Reads and decodes one image file like the release (`decode_rgb`).

    Args:
        path: a scalar string tensor or str.

    Returns:
        A uint8 tensor `(H, W, 3)`.
    """
    tf = import_tensorflow()
    return decode_rgb(tf.io.read_file(path))
