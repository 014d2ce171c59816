"""The AIM evaluation transform (El-Nouby et al., ICML 2024), written once.

Short side to 256 (bicubic), centre crop 224, ImageNet mean and std, with
the pixels of the release's `val_transforms` (Pillow's resize, torchvision's
size and crop arithmetic). `AIMImageConverter` runs it with `keras.ops`
inside models on every backend and with `tf` ops in `tf.data` pipelines
(`tf_transform`); it travels with a preset as `image_converter.json`.
"""

import math
import os

import keras
from keras import ops

from keras_aim.models.aim.aim_image_ops import KerasOps
from keras_aim.models.aim.aim_image_ops import TFOps
from keras_aim.models.aim.aim_image_ops import center_crop_offsets
from keras_aim.models.aim.aim_image_ops import short_side_resize_shape
from keras_aim.utils import io_utils
from keras_aim.utils.validation import channel_values as _channel_values
from keras_aim.utils.validation import check_size_limit
from keras_aim.utils.validation import size_pair as _pair

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_CONVERTER_FILE = "image_converter.json"
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
RESAMPLINGS = ("pillow", "tf_image")


@keras.saving.register_keras_serializable(package="keras_aim")
class AIMImageConverter(keras.layers.Layer):
    """Resizes, centre-crops and normalises images for an AIM model.

    The evaluation transform of AIM (El-Nouby et al., 2024): resize so the
    short side is `resize_size` (bicubic, aspect ratio kept), take the centre
    `crop_size` crop, multiply by `scale` (to [0, 1]), subtract `mean` and
    divide by `std`. The sizes follow torchvision (`Resize(int)`: long side
    `int(size * long / short)`; `CenterCrop`: corner `round((h - crop) /
    2)`), and the resize is Pillow's (`resampling="pillow"`): uint8 images
    give the pixels of `Image.resize(..., BICUBIC)` exactly, as the
    release's `val_transforms` sees them; float images get the same filter
    in floating point, unclipped. Spatial dimensions must be known when the
    layer is called (they always are in eager mode and for inputs of fixed
    size).

    Args:
        resize_size: int, the length of the short side after resizing; or an
            exact `(height, width)`; or `None` to skip resizing. Defaults to
            256.
        crop_size: int or `(height, width)` of the centre crop, or `None` to
            skip cropping. Defaults to 224.
        interpolation: one of `"bicubic"`, `"bilinear"`, `"nearest"`.
            Defaults to `"bicubic"`.
        antialias: bool, whether to low-pass filter when downsampling.
            Pillow always does, so `False` means `resampling="tf_image"`.
            Defaults to `True`.
        mean: per-channel mean subtracted after scaling, a number, or `None`
            to skip. Defaults to the ImageNet mean `(0.485, 0.456, 0.406)`.
        std: per-channel standard deviation, a number, or `None` to skip.
            Defaults to the ImageNet std `(0.229, 0.224, 0.225)`.
        scale: float multiplied into the pixels before normalising. Defaults
            to `1 / 255` (then the pixels are divided by 255, as
            torchvision's `ToTensor` does).
        resampling: `"pillow"`, Pillow's filters and 8-bit arithmetic, or
            `"tf_image"`, `tf.image.resize` semantics (`keras.ops.image`
            inside models; what keras_aim did before issue 20). Defaults to
            `None`: `"pillow"`, or `"tf_image"` when `antialias=False`.
            Converters saved without this key load the same way.
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`).

    Example:

    >>> import numpy as np
    >>> converter = AIMImageConverter(resize_size=32, crop_size=28)
    >>> images = np.random.randint(0, 256, (2, 40, 60, 3), dtype="uint8")
    >>> tuple(converter(images).shape)
    (2, 28, 28, 3)
    """

    def __init__(
        self,
        resize_size=256,
        crop_size=224,
        interpolation="bicubic",
        antialias=True,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        scale=1.0 / 255.0,
        resampling=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if resampling is None:
            resampling = "pillow" if antialias else "tf_image"
        if resampling not in RESAMPLINGS:
            raise ValueError(
                f"`resampling` must be one of {RESAMPLINGS}. "
                f"Received: resampling={resampling!r}"
            )
        if resampling == "pillow" and not antialias:
            raise ValueError(
                "Pillow always antialiases: `antialias=False` needs "
                "`resampling='tf_image'`. Received: antialias=False, "
                "resampling='pillow'"
            )
        if isinstance(resize_size, int) and not isinstance(resize_size, bool):
            if resize_size <= 0:
                raise ValueError(
                    "`resize_size` must be a positive int, a (height, width) "
                    f"pair or None. Received: resize_size={resize_size}"
                )
        else:
            _pair(resize_size, "resize_size")
        crop = _pair(crop_size, "crop_size")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"`interpolation` must be one of {INTERPOLATIONS}. "
                f"Received: interpolation={interpolation!r}"
            )
        for name, value in (("resize_size", resize_size), ("crop_size", crop)):
            sides = value if isinstance(value, (tuple, list)) else [value]
            for side in sides if value is not None else ():
                check_size_limit(side, "image_side", name)
        mean_values = _channel_values(mean, "mean")
        std_values = _channel_values(std, "std")
        if std_values is not None and any(s <= 0 for s in std_values):
            raise ValueError(
                f"`std` values must be positive. Received: std={std!r}"
            )
        if (
            mean_values is not None
            and std_values is not None
            and len(mean_values) > 1
            and len(std_values) > 1
            and len(mean_values) != len(std_values)
        ):
            raise ValueError(
                "`mean` and `std` must have the same number of channels. "
                f"Received: mean={mean!r}, std={std!r}"
            )
        if resize_size is not None and crop is not None:
            if isinstance(resize_size, int):  # The short side is known.
                fits = min(crop) <= resize_size
            else:
                size = _pair(resize_size, "resize_size")
                fits = crop[0] <= size[0] and crop[1] <= size[1]
            if not fits:
                raise ValueError(
                    f"`crop_size`={crop_size!r} is larger than the resized "
                    f"image (resize_size={resize_size!r})."
                )
        if (
            not isinstance(scale, (int, float))
            or isinstance(scale, bool)
            or not math.isfinite(scale)
        ):
            raise ValueError(
                f"`scale` must be a finite number. Received: scale={scale!r}"
            )
        self.resize_size = (
            resize_size
            if resize_size is None or isinstance(resize_size, int)
            else _pair(resize_size, "resize_size")
        )
        self.crop_size = crop
        self.interpolation = interpolation
        self.antialias = bool(antialias)
        self.mean = mean_values
        self.std = std_values
        self.scale = float(scale)
        self.resampling = resampling

    def _resized_shape(self, height, width):
        """Returns the spatial shape after the resize step."""
        if self.resize_size is None:
            return height, width
        if isinstance(self.resize_size, int):
            if height is None or width is None:
                return None, None
            return short_side_resize_shape(height, width, self.resize_size)
        return self.resize_size

    def _check_channels(self, channels):
        for name, values in (("mean", self.mean), ("std", self.std)):
            if values is not None and len(values) > 1 and channels is not None:
                if len(values) != channels:
                    raise ValueError(
                        f"`{name}` has {len(values)} values but the images "
                        f"have {channels} channels. Pass one value per "
                        f"channel or a single number. Received: "
                        f"{name}={values}"
                    )

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) not in (3, 4):
            raise ValueError(
                "`images` must have shape (batch, height, width, channels) "
                f"or (height, width, channels). Received: shape={input_shape}"
            )
        self._check_channels(input_shape[-1])
        height, width = self._resized_shape(*input_shape[-3:-1])
        if self.crop_size is not None:
            height, width = self.crop_size
        return input_shape[:-3] + (height, width, input_shape[-1])

    def call(self, images):
        input_dtype = keras.backend.standardize_dtype(images.dtype)
        images = ops.convert_to_tensor(images)
        single = len(images.shape) == 3
        if single:
            images = ops.expand_dims(images, 0)
        if len(images.shape) != 4:
            raise ValueError(
                "`images` must have shape (batch, height, width, channels) "
                f"or (height, width, channels). Received: shape={images.shape}"
            )
        _, height, width, channels = images.shape
        self._check_channels(channels)
        if (height is None or width is None) and (
            isinstance(self.resize_size, int) or self.crop_size is not None
        ):
            raise ValueError(
                "AIMImageConverter needs static image height and width to "
                f"resize or crop. Received images of shape {images.shape}."
            )
        images = self.transform(
            ops.cast(images, "float32"), KerasOps, "int" in input_dtype
        )
        images = ops.cast(images, self.compute_dtype)
        if single:
            images = ops.squeeze(images, 0)
        return images

    def geometry(self, height, width, xp=KerasOps):
        """Where the transform resizes and crops an image of this size.

        Returns:
            `(size, window)`: the resized `(height, width)` (`None` when
            not resizing) and the `(top, left, height, width)` window of
            it that is kept (torchvision's `Resize(int)` and `CenterCrop`
            rules). Python ints for ints; tensors with `xp=TFOps()`.
        """
        size = None
        if isinstance(self.resize_size, int):
            size = short_side_resize_shape(
                height, width, self.resize_size, xp.select
            )
        elif self.resize_size is not None:
            size = self.resize_size
        resized = size or (height, width)
        window = (0, 0, *resized)
        if self.crop_size is not None:
            xp.check_crop(*resized, self.crop_size, self.resize_size)
            top, left = center_crop_offsets(
                *resized, *self.crop_size, xp.rounder
            )
            window = (top, left, *self.crop_size)
        return size, window

    def transform(self, images, xp, integer):
        """The evaluation transform, written once for both op sets.

        `xp` is `KerasOps` (inside a model, static sizes) or a `TFOps`
        (inside `tf.data`, per-image dynamic sizes); `integer` says whether
        the input was integer (values in [0, 255]: then the resize rounds
        and clips to uint8 as Pillow does); integer images may come in
        their own dtype, float ones as float32. Works on one image or a
        batch.
        """
        size, window = self.geometry(*xp.spatial_shape(images), xp)
        if size is not None and self.resampling == "pillow":
            # Only the crop is computed: each output pixel has its own taps.
            images = xp.pil_resize(
                images, size, window, self.interpolation, integer
            )
        else:
            if size is not None:
                images = xp.resize(
                    images, size, self.interpolation, self.antialias
                )
                if integer:
                    images = xp.clip(xp.round(images), 0.0, 255.0)
            if self.crop_size is not None:
                top, left, crop_height, crop_width = window
                images = images[
                    ..., top : top + crop_height, left : left + crop_width, :
                ]
        return self.normalize(images, xp)

    def normalize(self, images, xp):
        """The last step: float32, times `scale`, minus `mean`, over `std`."""
        images = xp.cast(images, "float32")
        if self.scale != 1.0:
            divisor = 1.0 / self.scale
            if divisor == round(divisor):  # x / 255, as torchvision does.
                images = images / divisor
            else:
                images = images * self.scale
        if self.mean is not None:
            images = images - xp.constant(self.mean)
        if self.std is not None:
            images = images / xp.constant(self.std)
        return images

    def tf_transform(self, image):
        """The same transform with TensorFlow ops, for `tf.data.map`.

        Takes one `(H, W, C)` image (or a batch) of any size, with values in
        [0, 255]; returns float32. Use it to feed a model the images its own
        converter would make, e.g. `dataset.map(converter.tf_transform)`.
        """
        xp = TFOps()
        tf = xp.tf
        image = tf.convert_to_tensor(image)
        integer = image.dtype.is_integer
        if not integer:  # Integer pixels stay as they are until resized.
            image = tf.cast(image, tf.float32)
        return self.transform(image, xp, integer)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "resize_size": self.resize_size,
                "crop_size": self.crop_size,
                "interpolation": self.interpolation,
                "antialias": self.antialias,
                "mean": self.mean,
                "std": self.std,
                "scale": self.scale,
                "resampling": self.resampling,
            }
        )
        return config

    def save_to_preset(self, preset_dir):
        """Writes this converter to `preset_dir/image_converter.json`.

        Args:
            preset_dir: str, the preset folder (created if missing).

        Example:

        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> AIMImageConverter().save_to_preset(folder)
        >>> load_image_converter(folder).crop_size
        (224, 224)
        """
        os.makedirs(preset_dir, exist_ok=True)
        config = keras.saving.serialize_keras_object(self)
        path = os.path.join(preset_dir, IMAGE_CONVERTER_FILE)
        io_utils.write_json(path, config, indent=4)


def load_image_converter(preset_dir):
    """Loads the `AIMImageConverter` saved in a preset folder.

    Args:
        preset_dir: str, a folder written by
            `AIMImageConverter.save_to_preset`.

    Returns:
        The converter, or `None` when the folder has no
        `image_converter.json`.

    Example:

    >>> import tempfile
    >>> load_image_converter(tempfile.mkdtemp()) is None
    True
    """
    path = os.path.join(preset_dir, IMAGE_CONVERTER_FILE)
    if not os.path.lexists(path):
        return None
    config = io_utils.read_json(path, what="Image converter config")
    if not isinstance(config, dict) or not isinstance(
        config.get("config"), dict
    ):
        raise ValueError(f"{path!r} is not an image converter config.")
    if config.get("class_name", "AIMImageConverter") != "AIMImageConverter":
        raise ValueError(
            f"{path!r} holds a {config['class_name']!r}, not an "
            "AIMImageConverter."
        )
    try:
        return AIMImageConverter.from_config(config["config"])
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{path!r} is not a valid image converter config: {error}"
        ) from error


def default_image_converter(image_shape):
    """The evaluation transform for a model built on `image_shape`.

    Models that take 224 x 224 images, or any size, get the release's
    transform (short side 256, center crop 224); a fixed `(h, w)` gets a
    center crop of that size after resizing the short side to the
    release's `ceil(max(h, w) / 0.875)` (336 -> 384, 448 -> 512), so that
    the crop fits any aspect ratio.
    """
    height, width = image_shape[0], image_shape[1]
    if height is None or width is None or (height, width) == (224, 224):
        return AIMImageConverter()
    side = max(height, width)
    return AIMImageConverter(
        resize_size=(8 * side + 6) // 7,  # ceil(side / 0.875), exactly
        crop_size=(height, width),
    )
