"""Call-time inputs: image batches, prefix lengths, Keras loop data."""

import numbers

import numpy as np


def check_image_shape(shape, patch_size, num_channels, built_shape=None):
    """Raises a `ValueError` naming what is wrong with an image batch shape.

    Args:
        shape: the `(B, H, W, C)` shape to check (entries may be `None`).
        patch_size: int, H and W must be divisible by it.
        num_channels: int, the channel count the model was built for.
        built_shape: optional `(H, W, C)` the model's input was built with;
            fixed entries must match.
    """
    # Only sizes known as Python ints are checked: under export tracing a
    # size can be a symbolic dimension (jax2tf, torch.export), where `%`
    # and `!=` raise or add guards instead of answering.
    shape = tuple(_static_size(size) for size in tuple(shape))
    if len(shape) != 4:
        raise ValueError(
            "`images` must be a 4-D batch (batch, height, width, channels), "
            f"channels last; got rank {len(shape)} with shape {shape}."
        )
    if shape[0] == 0:
        raise ValueError(
            f"`images` is empty: it holds 0 examples (shape {shape}); pass "
            "a batch of at least one image."
        )
    if shape[-1] is not None and shape[-1] != num_channels:
        raise ValueError(
            f"`images` must have {num_channels} channels (channels last); got "
            f"shape {shape}."
        )
    for axis, name in ((1, "height"), (2, "width")):
        size = shape[axis]
        if size is not None and size % patch_size != 0:
            raise ValueError(
                f"Image {name} {size} is not divisible by the patch size "
                f"{patch_size}; got images of shape {shape}."
            )
    if built_shape is not None:
        for axis, name in ((0, "height"), (1, "width")):
            want, got = built_shape[axis], shape[axis + 1]
            if want is not None and got is not None and want != got:
                raise ValueError(
                    f"This model was built for images of shape {built_shape} "
                    f"but got {name} {got}. Build it with "
                    "image_shape=(None, None, 3) (or pass the new "
                    "`image_shape` to `from_preset`) to use other sizes."
                )


def check_image_tensor(images, what="images"):
    """Refuses what cannot be an image batch, before any op runs.

    A Python list or tuple (even of numbers), anything without `shape`
    and `dtype`, complex, boolean and integer values; then the checks of
    `check_image_values`. Shapes are checked by `check_image_shape`.
    """
    if isinstance(images, (list, tuple)):
        raise ValueError(
            f"`{what}` must be an array or tensor of shape (batch, height, "
            f"width, channels); got a Python {type(images).__name__}. Pass "
            f"np.asarray({what}, 'float32') or a tensor."
        )
    if not hasattr(images, "shape") or not hasattr(images, "dtype"):
        raise ValueError(
            f"`{what}` must be an array or tensor of shape (batch, height, "
            f"width, channels); got {type(images).__name__}."
        )
    check_image_values(images, what)


# Normalised images (ImageNet statistics) lie within about [-2.2, 2.7].
RAW_PIXEL_THRESHOLD = 20.0


def check_image_values(images, what="images"):
    """Refuses integer images, and concrete float arrays of raw pixels.

    Only NumPy arrays are read (symbolic or device tensors are left alone).
    """
    dtype = str(getattr(images, "dtype", ""))
    if "complex" in dtype:
        raise ValueError(
            f"`{what}` must be real float images; got dtype {dtype} "
            "(complex values have no meaning as pixels)."
        )
    if "int" in dtype or "bool" in dtype:
        raise ValueError(
            f"`{what}` must be normalised float images; got dtype {dtype}. "
            "Convert raw images with keras_aim.AIMImageConverter (the "
            "classifier's `predict` does it for uint8), or (x / 255 - mean) "
            "/ std."
        )
    if isinstance(images, np.ndarray) and images.size:
        if not np.isfinite(images).all():
            raise ValueError(f"`{what}` hold NaN or infinite values.")
        peak = float(np.max(np.abs(images)))
        if peak > RAW_PIXEL_THRESHOLD:
            raise ValueError(
                f"`{what}` look like raw pixels (largest magnitude {peak:g}); "
                "AIM expects images normalised with the ImageNet mean and "
                "std (values within about [-2.2, 2.7]). Normalise them with "
                "keras_aim.AIMImageConverter first."
            )


def _first_array(x):
    """The first array of an input structure (dict, tuple, array)."""
    if isinstance(x, dict):
        x = x.get("images", next(iter(x.values()), None))
    if isinstance(x, (tuple, list)) and x and not hasattr(x, "shape"):
        x = x[0]
    return x


def check_not_empty(x, what="x"):
    """Refuses data with no examples before a Keras loop starts.

    On JAX, an empty batch reaching `fit`, `evaluate` or `predict` leaves
    the model's variables unreadable for the rest of the process; this
    check runs first. Arrays: a zero batch axis. `tf.data` datasets: zero
    cardinality, a zero static batch dimension, or (finite, unknown size)
    no first element. `keras.utils.PyDataset`: no batches. Generators are
    not looked into.
    """
    if x is None:
        return
    if hasattr(x, "element_spec") and hasattr(x, "cardinality"):
        spec = _first_array(x.element_spec)
        shape = getattr(spec, "shape", None)
        if shape is not None and len(shape) and shape[0] == 0:
            raise ValueError(f"`{what}` yields batches of 0 examples.")
        cardinality = int(x.cardinality())
        if cardinality == 0:
            raise ValueError(f"`{what}` is an empty dataset (0 batches).")
        if cardinality == -2:  # Unknown but finite: look at one element.
            first = next(iter(x.take(1)), None)
            if first is None:
                raise ValueError(f"`{what}` is an empty dataset (0 batches).")
            batch = getattr(_first_array(first), "shape", (1,))
            if len(batch) and batch[0] == 0:
                raise ValueError(f"`{what}` yields batches of 0 examples.")
        return
    if hasattr(x, "__getitem__") and hasattr(x, "num_batches"):
        if not len(x):
            raise ValueError(f"`{what}` has no batches.")
        return
    array = _first_array(x)
    shape = getattr(array, "shape", None)
    if shape is not None and len(shape) and shape[0] == 0:
        raise ValueError(
            f"`{what}` holds 0 examples (shape {tuple(shape)}); pass at least "
            "one."
        )


def _integer_dtype(dtype):
    name = str(dtype).lower()
    return "int" in name and "bool" not in name


def check_prefix_lengths(
    prefix_lengths, num_patches, batch_size=None, maximum=None
):
    """Refuses prefix lengths that are not integers in `[0, maximum]`.

    `maximum` defaults to `num_patches - 1`: with `K >= N` every output
    attends to the patch it predicts (the whole sequence is the prefix);
    the mask itself (`prefix_causal_mask`) allows `N`, full attention.
    Negative lengths mean nothing. One length (an int, or a 0-D array) is
    broadcast; a 1-D one must have one entry per image when `batch_size`
    is known. The dtype and shape of tensors are checked; their values
    when they can be read (not inside a traced step, where the pretrainer
    draws them in range itself).
    """
    maximum = num_patches - 1 if maximum is None else maximum
    allowed = (
        "an int or a 1-D list, array or tensor of integers (one per image) in "
        f"[0, {maximum}]"
    )
    if isinstance(prefix_lengths, bool) or (
        isinstance(prefix_lengths, (list, tuple))
        and any(isinstance(v, (bool, np.bool_)) for v in prefix_lengths)
    ):
        raise ValueError(
            f"`prefix_lengths` must be {allowed}; got {prefix_lengths!r} "
            "(booleans are not lengths)."
        )
    if isinstance(prefix_lengths, (int, np.integer, list, tuple, np.ndarray)):
        try:
            values = np.asarray(prefix_lengths)
        except ValueError:  # ragged
            raise ValueError(
                f"`prefix_lengths` must be {allowed}; got {prefix_lengths!r}."
            ) from None
        dtype = values.dtype if values.size else np.dtype("int32")
    elif hasattr(prefix_lengths, "shape") and hasattr(prefix_lengths, "dtype"):
        dtype = prefix_lengths.dtype
        try:
            values = np.asarray(prefix_lengths)
        except Exception:  # a traced or device tensor: shape and dtype only
            values = None
    else:
        raise ValueError(
            f"`prefix_lengths` must be {allowed}; got "
            f"{type(prefix_lengths).__name__}."
        )
    if not _integer_dtype(dtype):
        raise ValueError(
            f"`prefix_lengths` must be {allowed}; got dtype {dtype}."
        )
    shape = tuple(prefix_lengths.shape if values is None else values.shape)
    if len(shape) > 1:
        raise ValueError(
            f"`prefix_lengths` must be {allowed}; got shape {shape}."
        )
    if (
        len(shape) == 1
        and batch_size is not None
        and shape[0] is not None
        and shape[0] != batch_size
    ):
        raise ValueError(
            f"`prefix_lengths` has {shape[0]} entries for a batch of "
            f"{batch_size} images: it must have one entry per sample (or "
            f"be one int for all); it must be {allowed}."
        )
    if values is not None and values.size:
        low, high = values.min(), values.max()
        if low < 0 or high > maximum:
            why = ""
            if maximum == num_patches - 1:
                why = " (with K >= N an output would see the patch it predicts)"
            raise ValueError(
                f"`prefix_lengths` must lie in [0, {maximum}] for "
                f"{num_patches} patches{why}; got values from {low} to "
                f"{high}."
            )


def _static_size(size):
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        return int(size)
    return None
