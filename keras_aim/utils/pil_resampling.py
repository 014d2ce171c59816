"""Pillow's `Image.resize` filters as tap tables, in NumPy.

Pillow resizes in two separable passes, width first, each a weighted sum
of a few input pixels per output pixel (its "taps"). For 8-bit images the
weights are fixed-point integers with 22 fractional bits, the sums are
integer, and every pass rounds and clips to [0, 255]. The tables here
follow Pillow's rules (`libImaging/Resample.c`, `Geometry.c`): the filter
support grows with the reduction factor (antialiasing), the taps at the
image border are dropped and the rest renormalised, and `nearest` samples
`floor((i + 0.5) * in / out)` accumulated as Pillow does. Applying the
integer tables with integer arithmetic gives Pillow's pixels exactly; any
array library can do it (`keras.ops` in a model, `tf` in `tf.data`).

Written from the filters' definitions and checked pixel for pixel against
Pillow in `tests/test_eval_pixels.py`.
"""

import math

import numpy as np

# Fractional bits of Pillow's 8-bit weights: 32 bits minus 8 for the pixel
# and 2 of headroom for the filters' negative lobes.
PRECISION_BITS = 22
PIL_FILTERS = ("bicubic", "bilinear", "nearest")


def _bicubic(x):
    """Keys' cubic convolution with a = -0.5, as Pillow evaluates it."""
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _bilinear(x):
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


_KERNELS = {"bicubic": (_bicubic, 2.0), "bilinear": (_bilinear, 1.0)}


def filter_taps(in_size, out_size, interpolation="bicubic"):
    """Pillow's taps for resizing one axis from `in_size` to `out_size`.

    Args:
        in_size: int, the input length.
        out_size: int, the output length.
        interpolation: `"bicubic"`, `"bilinear"` or `"nearest"`.

    Returns:
        `(indices, weights, fixed)`: int32 `(out_size, K)` input indices
        (always in range), float64 `(out_size, K)` normalised weights and
        their int32 fixed-point values (`weights * 2**22`, rounded half
        away from zero). Output `i` is `sum_k image[indices[i, k]] *
        weights[i, k]`; unused taps have weight 0.

    Example:

    >>> indices, weights, fixed = filter_taps(4, 2)
    >>> indices.shape, float(weights.sum(axis=1)[0])
    ((2, 7), 1.0)
    """
    in_size, out_size = int(in_size), int(out_size)
    if in_size <= 0 or out_size <= 0:
        raise ValueError(
            "Resizing needs positive sizes. Received: "
            f"in_size={in_size}, out_size={out_size}"
        )
    if interpolation == "nearest":
        return _nearest_taps(in_size, out_size)
    if interpolation not in _KERNELS:
        raise ValueError(
            f"`interpolation` must be one of {PIL_FILTERS}. "
            f"Received: interpolation={interpolation!r}"
        )
    kernel, base_support = _KERNELS[interpolation]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = base_support * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    center = (np.arange(out_size) + 0.5) * scale
    # C's (int) truncates toward zero; below zero both clamp to 0.
    first = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
    stop = np.minimum(np.trunc(center + support + 0.5), in_size)
    count = stop.astype(np.int64) - first
    offsets = np.arange(ksize)
    positions = first[:, None] + offsets[None, :]
    used = offsets[None, :] < count[:, None]
    raw = kernel((positions - center[:, None] + 0.5) * (1.0 / filterscale))
    raw = np.where(used, raw, 0.0)
    # Pillow sums the weights left to right; cumsum does too (sum would
    # pair them), which keeps the last bit of each weight the same.
    total = np.cumsum(raw, axis=1)[:, -1:]
    weights = np.where(total != 0.0, raw / np.where(total, total, 1), raw)
    scaled = weights * (1 << PRECISION_BITS)
    fixed = np.where(
        weights < 0, np.trunc(scaled - 0.5), np.trunc(scaled + 0.5)
    )
    indices = np.minimum(positions, in_size - 1)
    return indices.astype(np.int32), weights, fixed.astype(np.int32)


def _nearest_taps(in_size, out_size):
    """Pillow's nearest resize: an affine scale with an accumulated step."""
    step = in_size / out_size
    steps = np.full(out_size, step)
    steps[0] = step * 0.5
    source = np.cumsum(steps)  # Pillow adds `step` once per output pixel.
    indices = np.clip(source.astype(np.int64), 0, in_size - 1)[:, None]
    weights = np.ones((out_size, 1))
    return (
        indices.astype(np.int32),
        weights,
        np.full((out_size, 1), 1 << PRECISION_BITS, np.int32),
    )


def vertical_first(in_height, in_width, out_height, out_width):
    """Whether Pillow resizes the height before the width.

    Pillow 13 runs the vertical pass first when the height shrinks by more
    than twice as many pixels as the width (a tall image made short);
    otherwise, and in every earlier Pillow, the width goes first. The order
    matters by at most a grey level: each pass rounds to uint8.
    """
    return out_height < in_height and 2 * (in_width - out_width) < (
        in_height - out_height
    )


def resize_plan(
    in_height, in_width, out_height, out_width, interpolation, window=None
):
    """What resizing to `(out_height, out_width)` reads and weighs.

    Args:
        in_height, in_width: ints, the input size.
        out_height, out_width: ints, the resized size.
        interpolation: one of `PIL_FILTERS`.
        window: optional `(top, left, height, width)` of the resized image
            to produce (a centre crop); defaults to all of it. Each output
            pixel has its own taps, so this is exactly resize-then-crop.

    Returns:
        A dict: `box`, the `(top, bottom, left, right)` input rows and
        columns that are read; `rows` and `cols`, `(indices, fixed,
        weights)` taps into the box, or `None` where that axis is neither
        resized nor cropped; `vertical_first`, Pillow's pass order.
    """
    sizes = [int(v) for v in (in_height, in_width, out_height, out_width)]
    in_height, in_width, out_height, out_width = sizes
    if window is None:
        window = (0, 0, out_height, out_width)
    top, left, height, width = (int(v) for v in window)
    box, taps = [], []
    for size, out, start, length in (
        (in_height, out_height, top, height),
        (in_width, out_width, left, width),
    ):
        if size == out:  # Pillow skips the pass: a plain crop.
            indices = np.arange(start, start + length)[:, None]
            weights = np.ones((length, 1))
            fixed = np.full((length, 1), 1 << PRECISION_BITS)
        else:
            indices, weights, fixed = (
                t[start : start + length]
                for t in filter_taps(size, out, interpolation)
            )
        used = fixed != 0
        used[:, 0] = True
        first, stop = int(indices[used].min()), int(indices[used].max()) + 1
        box += [first, stop]
        skip = size == out and length == size
        taps.append(
            None
            if skip
            else (
                (np.clip(indices, first, stop - 1) - first).astype(np.int32),
                fixed.astype(np.int32),
                weights.astype(np.float32),
            )
        )
    return {
        "box": tuple(box),
        "rows": taps[0],
        "cols": taps[1],
        "vertical_first": vertical_first(*sizes),
    }


def resize_numpy(image, size, interpolation="bicubic"):
    """Pillow's `Image.resize` of an `(H, W, C)` uint8 array, in NumPy.

    A readable reference of the integer arithmetic (the layer's and the
    pipeline's code does the same with `keras.ops` and `tf`).

    Args:
        image: uint8 array `(H, W, C)`.
        size: `(height, width)` of the output.
        interpolation: one of `PIL_FILTERS`.

    Returns:
        uint8 array `(height, width, C)`.
    """
    out = np.asarray(image)
    order = ((1, size[1]), (0, size[0]))
    if vertical_first(*out.shape[:2], *size):
        order = order[::-1]
    for axis, length in order:
        if out.shape[axis] == length:
            continue
        indices, _, fixed = filter_taps(out.shape[axis], length, interpolation)
        gathered = np.take(out.astype(np.int64), indices, axis=axis)
        shape = [1] * gathered.ndim
        shape[axis], shape[axis + 1] = fixed.shape
        total = (gathered * fixed.reshape(shape)).sum(axis=axis + 1)
        total = (total + (1 << (PRECISION_BITS - 1))) >> PRECISION_BITS
        out = np.clip(total, 0, 255).astype(np.uint8)
    return out


def pillow_resize(image, size, window=None, interpolation="bicubic"):
    """Pillow's own resize of a uint8 image, cropped to `window`.

    Runs Pillow one axis at a time, in `vertical_first`'s order, and crops
    each axis right after its pass: the same pixels as `Image.resize`
    followed by a crop (each pass rounds to uint8, and every row or column
    of the second pass is independent), with less work, and the same
    order whatever Pillow version is installed.

    Args:
        image: uint8 array `(H, W, C)`, or a Pillow image in mode "RGB"
            or "L".
        size: `(height, width)` after resizing.
        window: `(top, left, height, width)` to keep; defaults to all.
        interpolation: one of `PIL_FILTERS`.

    Returns:
        uint8 array `(window height, window width, C)` (`(h, w)` for a
        mode "L" image).
    """
    from PIL import Image

    resample = {
        "bicubic": Image.Resampling.BICUBIC,
        "bilinear": Image.Resampling.BILINEAR,
        "nearest": Image.Resampling.NEAREST,
    }[interpolation]
    if isinstance(image, Image.Image):
        planes, channels = [image], 3
        width, height = image.size
    else:
        image = np.asarray(image, np.uint8)
        height, width, channels = image.shape
        # One RGB image, else one grey image per channel (Pillow would
        # premultiply a 4-channel image by its alpha).
        planes = [image] if channels == 3 else np.moveaxis(image, -1, 0)
    out_height, out_width = (int(v) for v in size)
    top, left, crop_height, crop_width = (
        (0, 0, out_height, out_width) if window is None else window
    )

    def resize(picture, axis):
        if axis == 1:
            if out_width != width:
                picture = picture.resize((out_width, picture.height), resample)
            return picture.crop((left, 0, left + crop_width, picture.height))
        if out_height != height:
            picture = picture.resize((picture.width, out_height), resample)
        return picture.crop((0, top, picture.width, top + crop_height))

    order = (0, 1) if vertical_first(height, width, *size) else (1, 0)
    results = []
    for plane in planes:
        picture = plane
        if not isinstance(picture, Image.Image):
            picture = Image.fromarray(np.ascontiguousarray(plane))
        for axis in order:
            picture = resize(picture, axis)
        results.append(np.asarray(picture))
    if channels == 3:
        return results[0]
    return np.stack(results, axis=-1)
