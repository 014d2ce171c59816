"""The two op sets `AIMImageConverter.transform` runs on.

`KerasOps` works inside models (`keras.ops`, static sizes, every backend);
`TFOps` works in `tf.data` (`tf`, a size per image). Both resize with
Pillow's pixels (`resampling="pillow"`): inside models with Pillow's taps
applied by `taps_resize` in integer arithmetic; in `tf.data` with Pillow
itself (`tf.numpy_function`; a third of the CPU time of the same taps in
tf ops, measured in benchmarks/eval_pixels.py), falling back to
`taps_resize` for float images or without Pillow. The legacy
`resampling="tf_image"` uses `tf.image.resize` semantics.
"""

import numpy as np
from keras import ops

from keras_aim.utils.pil_resampling import PRECISION_BITS
from keras_aim.utils.pil_resampling import pillow_resize
from keras_aim.utils.pil_resampling import resize_plan

_HALF = 1 << (PRECISION_BITS - 1)
_ONE = 1 << PRECISION_BITS
_TAPS_AT_ONCE = 8


def _select(condition, if_true, if_false):
    return if_true if condition else if_false


def short_side_resize_shape(height, width, resize_size, select=_select):
    """Returns the `(height, width)` after resizing the short side.

    The long side is `floor(resize_size * long / short)`, as in torchvision's
    `Resize(int)`, so the numbers match the released evaluation. Works on
    Python ints, or on scalar tensors with `select=tf.where`.

    Args:
        height: int, the input height.
        width: int, the input width.
        resize_size: int, the target length of the short side.
        select: `(condition, a, b) -> a or b`, for tensors.

    Example:

    >>> short_side_resize_shape(375, 500, 256)
    (256, 341)
    """
    portrait = height <= width
    return (
        select(portrait, resize_size, (resize_size * height) // width),
        select(portrait, (resize_size * width) // height, resize_size),
    )


def center_crop_offsets(height, width, crop_height, crop_width, rounder=round):
    """Returns the `(top, left)` corner of a centre crop.

    Uses `round((size - crop) / 2)` with round-half-to-even, as torchvision's
    `CenterCrop` (Python's `round`) and `tf.round` both do.

    Args:
        height: int, the image height.
        width: int, the image width.
        crop_height: int, the crop height.
        crop_width: int, the crop width.
        rounder: the half-to-even rounding to integers, for tensors.

    Example:

    >>> center_crop_offsets(256, 341, 224, 224)
    (16, 58)
    """
    return (
        rounder((height - crop_height) / 2),
        rounder((width - crop_width) / 2),
    )


def taps_resize(images, size, window, interpolation, integer, xp):
    """Resizes like Pillow, producing only `window` of the resized image.

    Integer images (held as float32 values in [0, 255]) get Pillow's 8-bit
    arithmetic: integer weights, integer sums, rounding and clipping after
    each pass. Float images get the same filters in floating point (like
    Pillow's mode "F"). Returns float32.

    Args:
        images: `(..., H, W, C)` float32.
        size: `(height, width)` after resizing.
        window: `(top, left, height, width)` of the resized image to make.
        interpolation: one of `pil_resampling.PIL_FILTERS`.
        integer: bool, Pillow's 8-bit arithmetic.
        xp: `KerasOps` or a `TFOps`.
    """
    height, width = xp.spatial_shape(images)
    plan = xp.plan(height, width, size, window, interpolation)
    top, bottom, left, right = plan["box"]
    images = images[..., top:bottom, left:right, :]
    if integer:
        images = xp.cast(images, "int32")

    def rows(x):
        return _pass(x, plan["rows"], -3, integer, xp)

    def cols(x):
        return _pass(x, plan["cols"], -2, integer, xp)

    images = xp.cond(
        plan["vertical_first"],
        lambda: cols(rows(images)),
        lambda: rows(cols(images)),
    )
    return xp.cast(images, "float32")


def _pass(images, taps, axis, integer, xp):
    """One separable pass along `axis` (-3 rows, -2 columns)."""
    if taps is None:
        return images
    indices, fixed, weights = taps
    weights = fixed if integer else weights
    count = indices.shape[1]
    parts = [slice(None)]
    if isinstance(count, int):  # Static sizes (in models): big reductions
        # have many taps; a few at a time keep the gathered copy small.
        parts = [
            slice(k, k + _TAPS_AT_ONCE) for k in range(0, count, _TAPS_AT_ONCE)
        ]
    total = 0
    for part in parts:  # Integer sums are exact in any order.
        gathered = xp.take(images, indices[:, part], axis)
        expanded = xp.expand(weights[:, part], -axis - 1)
        total = total + xp.sum(gathered * expanded, axis)
    if not integer:
        return total
    total = xp.floor_divide(total + _HALF, _ONE)
    return xp.clip(total, 0, 255)


def _has_pillow():
    try:
        import PIL  # noqa: F401
    except ImportError:
        return False
    return True


class KerasOps:
    """The transform's ops inside a model: `keras.ops`, static sizes."""

    @staticmethod
    def select(condition, if_true, if_false):
        return if_true if condition else if_false

    rounder = staticmethod(round)

    @staticmethod
    def cond(condition, if_true, if_false):
        return if_true() if condition else if_false()

    @staticmethod
    def spatial_shape(images):
        return images.shape[-3], images.shape[-2]

    @classmethod
    def pil_resize(cls, images, size, window, interpolation, integer):
        return taps_resize(images, size, window, interpolation, integer, cls)

    @staticmethod
    def plan(height, width, size, window, interpolation):
        plan = resize_plan(height, width, *size, interpolation, window)
        for key in ("rows", "cols"):
            if plan[key] is not None:
                plan[key] = tuple(ops.convert_to_tensor(t) for t in plan[key])
        return plan

    @staticmethod
    def resize(images, size, interpolation, antialias):
        if tuple(size) == tuple(images.shape[-3:-1]):
            return images
        return ops.image.resize(
            images, size, interpolation=interpolation, antialias=antialias
        )

    @staticmethod
    def check_crop(height, width, crop, resize_size):
        if crop[0] > height or crop[1] > width:
            raise ValueError(
                f"`crop_size`={crop} is larger than the resized image of "
                f"size {(height, width)} (input resize_size={resize_size})."
            )

    @staticmethod
    def expand(values, count):
        return ops.reshape(values, tuple(values.shape) + (1,) * count)

    take = staticmethod(ops.take)
    cast = staticmethod(ops.cast)
    round = staticmethod(ops.round)
    clip = staticmethod(ops.clip)
    floor_divide = staticmethod(ops.floor_divide)

    @staticmethod
    def sum(values, axis):
        return ops.sum(values, axis=axis)

    @staticmethod
    def constant(values):
        return ops.convert_to_tensor(values, "float32")


class TFOps:
    """The same ops in a `tf.data` pipeline: `tf`, per-image dynamic sizes."""

    def __init__(self):
        import tensorflow as tf

        self.tf = tf

    def select(self, condition, if_true, if_false):
        return self.tf.where(condition, if_true, if_false)

    def rounder(self, value):
        return self.tf.cast(self.tf.round(value), self.tf.int32)

    def cond(self, condition, if_true, if_false):
        return self.tf.cond(condition, if_true, if_false)

    def spatial_shape(self, images):
        shape = self.tf.shape(images)
        return shape[-3], shape[-2]

    def pil_resize(self, images, size, window, interpolation, integer):
        if not (integer and _has_pillow()):
            return taps_resize(
                images, size, window, interpolation, integer, self
            )
        tf = self.tf

        def resize(pixels, *sizes):
            sizes = [int(v) for v in sizes]
            shape = pixels.shape[:-3] + (*sizes[4:], pixels.shape[-1])
            flat = pixels.reshape((-1,) + pixels.shape[-3:])
            out = np.zeros((len(flat),) + shape[-3:], np.uint8)
            for i, image in enumerate(flat):
                out[i] = pillow_resize(
                    image, sizes[:2], sizes[2:], interpolation
                )
            return out.reshape(shape)

        sizes = [tf.cast(v, tf.int64) for v in (*size, *window)]
        pixels = tf.cast(images, tf.uint8)  # Integer values in [0, 255].
        out = tf.numpy_function(
            resize, [pixels, *sizes], tf.uint8, stateful=False
        )
        static = [v if isinstance(v, int) else None for v in window[2:]]
        out = tf.ensure_shape(
            out, list(images.shape[:-3]) + static + [images.shape[-1]]
        )
        return tf.cast(out, tf.float32)

    def plan(self, height, width, size, window, interpolation):
        """`resize_plan` run by `tf.numpy_function` (sizes vary per image)."""
        tf = self.tf

        def tables(*sizes):
            plan = resize_plan(*sizes[:4], interpolation, sizes[4:])
            outputs = [np.asarray(plan["box"], np.int32)]
            for key, length in (("rows", sizes[6]), ("cols", sizes[7])):
                taps = plan[key]
                if taps is None:  # Unchanged: the identity, for one graph.
                    taps = (
                        np.arange(length, dtype=np.int32)[:, None],
                        np.full((length, 1), _ONE, np.int32),
                        np.ones((length, 1), np.float32),
                    )
                outputs += list(taps)
            return outputs + [np.asarray(plan["vertical_first"])]

        sizes = [height, width, *size, *window]
        sizes = [tf.cast(v, tf.int64) for v in sizes]
        types = [tf.int32] + [tf.int32, tf.int32, tf.float32] * 2 + [tf.bool]
        out = tf.numpy_function(tables, sizes, types, stateful=False)
        box = tf.ensure_shape(out[0], (4,))
        taps = [tf.ensure_shape(t, (None, None)) for t in out[1:7]]
        return {
            "box": tuple(box[i] for i in range(4)),
            "rows": tuple(taps[:3]),
            "cols": tuple(taps[3:]),
            "vertical_first": tf.ensure_shape(out[7], ()),
        }

    def resize(self, images, size, interpolation, antialias):
        return self.tf.image.resize(
            images,
            self.tf.stack(size),
            method=interpolation,
            antialias=antialias,
        )

    def check_crop(self, height, width, crop, resize_size):
        self.tf.debugging.assert_greater_equal(
            self.tf.stack([height, width]),
            self.tf.constant(crop),
            message=f"crop_size={crop} is larger than the resized image "
            f"(resize_size={resize_size})",
        )

    def expand(self, values, count):
        return self.tf.reshape(
            values, self.tf.concat([self.tf.shape(values), [1] * count], 0)
        )

    def take(self, values, indices, axis):
        return self.tf.gather(values, indices, axis=axis)

    def cast(self, values, dtype):
        return self.tf.cast(values, dtype)

    def sum(self, values, axis):
        return self.tf.reduce_sum(values, axis=axis)

    def floor_divide(self, x, y):
        return self.tf.math.floordiv(x, y)

    def round(self, x):
        return self.tf.round(x)

    def clip(self, x, low, high):
        return self.tf.clip_by_value(x, low, high)

    def constant(self, values):
        return self.tf.constant(values, self.tf.float32)
