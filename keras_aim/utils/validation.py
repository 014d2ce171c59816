"""Argument checks shared across keras_aim, with messages that name the
argument, the value and what is allowed.

Every public entry point validates through these functions, so a rule
(what a head count, a probe-layer list or an image batch may be) is written
once. The module imports only NumPy.
"""

import numbers

import numpy as np


def positive_int(value, name, minimum=1):
    """Returns `value` as an `int`, or raises a `ValueError` naming `name`.

    `minimum=0` accepts zero as well (e.g. a head without blocks).
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < minimum
    ):
        what = f"an integer >= {minimum}"
        if minimum == 1:
            what = "a positive integer"
        raise ValueError(f"`{name}` must be {what}; got {name}={value!r}.")
    return int(value)


def check_num_heads(num_heads, hidden_dim, name="num_heads"):
    """Returns `num_heads` as an int if it is positive and divides the width.

    Args:
        num_heads: the head count to check (`None` is refused with a hint,
            since released tensors do not record it).
        hidden_dim: int, the token width it must divide.
        name: the argument's name in the message.
    """
    if num_heads is None:
        raise ValueError(
            "The number of attention heads is not stored in the tensors; "
            f"pass `{name}` (or a preset name such as 'aim_600m')."
        )
    if (
        isinstance(num_heads, bool)
        or not isinstance(num_heads, (int, np.integer))
        or num_heads <= 0
        or hidden_dim % int(num_heads)
    ):
        raise ValueError(
            f"`{name}`={num_heads!r} must be a positive integer dividing "
            f"hidden_dim={hidden_dim} (head width = hidden_dim / num_heads)."
        )
    return int(num_heads)


def resolve_probe_layers(probe_layers, num_layers, best_layers=None):
    """Turns a probe-layer choice into sorted, distinct 0-based block indices.

    Args:
        probe_layers: `"best"` (needs `best_layers`), `"last"` (the last six
            blocks, fewer for shallow trunks), a string of comma-separated
            indices (`"2,3"`, as command lines pass them), one int index or
            a list of int indices.
        num_layers: int, the depth of the trunk.
        best_layers: the "best" blocks of this size, or `None` when the size
            is not a released one.

    Returns:
        A sorted list of distinct indices in `[0, num_layers)`.

    Example:

    >>> resolve_probe_layers("last", 8)
    [2, 3, 4, 5, 6, 7]
    >>> resolve_probe_layers("3,1", 4)
    [1, 3]
    """
    allowed = (
        '`probe_layers` must be "best", "last", comma-separated block '
        "indices or a list of block indices"
    )
    if isinstance(probe_layers, str):
        text = probe_layers.strip()
        if text == "last":
            return list(range(max(0, num_layers - 6), num_layers))
        if text == "best":
            if best_layers is None:
                raise ValueError(
                    'probe_layers="best" is defined only for the released '
                    "AIM sizes (aim_600m, aim_1b, aim_3b, aim_7b); this "
                    f"backbone (num_layers={num_layers}) needs an explicit "
                    'list of block indices or "last".'
                )
            return list(best_layers)
        try:
            probe_layers = [int(part) for part in text.split(",")]
        except ValueError:
            raise ValueError(f"{allowed}; got {probe_layers!r}.") from None
    if isinstance(probe_layers, (int, np.integer)) and not isinstance(
        probe_layers, bool
    ):
        probe_layers = [probe_layers]
    try:
        indices = [
            int(i)
            for i in probe_layers
            if not isinstance(i, bool) and float(i) == int(i)
        ]
        valid = len(indices) == len(list(probe_layers))
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"{allowed}; got {probe_layers!r}.")
    if not indices or len(set(indices)) != len(indices):
        raise ValueError(
            "`probe_layers` must list distinct block indices; got "
            f"{probe_layers!r}."
        )
    for index in indices:
        if not 0 <= index < num_layers:
            raise ValueError(
                f"`probe_layers` index {index} is out of range: the backbone "
                f"has {num_layers} blocks (0-based indices 0.."
                f"{num_layers - 1})."
            )
    return sorted(indices)


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


def _static_size(size):
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        return int(size)
    return None


# Constructor arguments of tasks (the classifier) that a backbone refuses.
TASK_ONLY_ARGS = ("probe_layers", "num_classes", "image_converter")


def reject_task_args(cls, kwargs):
    """Refuses task arguments (`probe_layers`, ...) given to a backbone."""
    extra = set(TASK_ONLY_ARGS) & set(kwargs)
    if extra:
        raise ValueError(
            f"{cls.__name__}.from_preset does not take {sorted(extra)}; "
            "those belong to AIMImageClassifier.from_preset."
        )


# --- Sizes a config may ask for ----------------------------------------------

ALLOW_LARGE_ENV = "KERAS_AIM_ALLOW_LARGE_MODELS"
# Far beyond any AIM (the 7B has width 4096, 32 blocks, patch 14).
SIZE_LIMITS = {
    "hidden_dim": 65536,
    "num_layers": 4096,
    "patch_size": 1024,
    "num_heads": 4096,
    "num_classes": 10_000_000,
}


def _allow_large():
    import os

    return os.environ.get(ALLOW_LARGE_ENV, "") not in ("", "0")


def check_size_limit(value, name):
    """Refuses a size far beyond any AIM unless the override is set."""
    limit = SIZE_LIMITS[name]
    if value > limit and not _allow_large():
        raise ValueError(
            f"`{name}`={value} is far beyond any AIM model (limit {limit}); "
            f"set {ALLOW_LARGE_ENV}=1 if you really mean it."
        )
    return value


def physical_memory_bytes():
    """The machine's physical memory, or `None` where it cannot be read."""
    import os

    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_parameter_memory(num_parameters, bytes_per_parameter, what):
    """Refuses to build `what` if its weights alone exceed physical memory.

    A config from the internet can ask for any size; building it would
    allocate until the process dies. `KERAS_AIM_ALLOW_LARGE_MODELS=1`
    builds it anyway (e.g. under a distribution that shards it).
    """
    memory = physical_memory_bytes()
    needed = int(num_parameters) * int(bytes_per_parameter)
    if memory and needed > memory and not _allow_large():
        raise ValueError(
            f"{what} has {num_parameters:,} parameters: {needed / 1e9:.1f} GB "
            f"for the weights alone, more than this machine's "
            f"{memory / 1e9:.1f} GB of memory. Check the config (a width or "
            f"depth far beyond AIM's?), or set {ALLOW_LARGE_ENV}=1 to build "
            "it anyway."
        )


def backbone_parameter_count(
    patch_size, hidden_dim, num_layers, mlp_ratio=4.0, num_channels=3
):
    """Parameters of an AIM trunk, from its config (no build needed).

    Example:

    >>> backbone_parameter_count(14, 1536, 24)
    680535552
    """
    width = hidden_dim
    mlp = int(mlp_ratio * width)
    embed = patch_size * patch_size * num_channels * width + 3 * width
    block = 4 * width + 4 * width * width + 2 * width * mlp
    return embed + num_layers * block + 2 * width


# --- Inputs -------------------------------------------------------------------

# Normalised images (ImageNet statistics) lie within about [-2.2, 2.7].
RAW_PIXEL_THRESHOLD = 20.0


def check_image_values(images, what="images"):
    """Refuses integer images, and concrete float arrays of raw pixels.

    Only NumPy arrays are read (symbolic or device tensors are left alone).
    """
    dtype = str(getattr(images, "dtype", ""))
    if "int" in dtype or dtype == "bool" or "uint" in dtype:
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


def check_prefix_lengths(prefix_lengths, num_patches):
    """Refuses concrete prefix lengths outside `[0, num_patches - 1]`.

    With `K >= N` every output attends to the patch it predicts (the whole
    sequence is the prefix); negative lengths mean nothing. Python ints,
    lists and NumPy arrays are checked; tensors traced inside a step are
    drawn in range by the pretrainer itself.
    """
    if isinstance(prefix_lengths, bool):
        raise ValueError(
            f"`prefix_lengths` must be integers; got {prefix_lengths!r}."
        )
    if not isinstance(
        prefix_lengths, (int, np.integer, list, tuple, np.ndarray)
    ):
        return
    values = np.asarray(prefix_lengths)
    if values.dtype.kind not in "iu":
        raise ValueError(
            f"`prefix_lengths` must be integers; got dtype {values.dtype}."
        )
    if values.size and (values.min() < 0 or values.max() > num_patches - 1):
        raise ValueError(
            f"`prefix_lengths` must lie in [0, N - 1] = [0, {num_patches - 1}] "
            f"for {num_patches} patches (with K >= N an output would see the "
            f"patch it predicts); got values from {values.min()} to "
            f"{values.max()}."
        )


# keras.Model's functional constructor quietly drops keyword arguments it
# does not know, so a misspelt `image_shap=` would build the default model.
MODEL_KWARGS = ("name", "trainable")


def check_model_kwargs(cls, kwargs):
    """Refuses keyword arguments that are neither `cls`'s nor Keras' own.

    Args:
        cls: the model class (its `__init__` signature lists its own).
        kwargs: the extra keyword arguments received.
    """
    import difflib
    import inspect

    unknown = sorted(set(kwargs) - set(MODEL_KWARGS))
    if not unknown:
        return
    own = [
        name
        for name in inspect.signature(cls.__init__).parameters
        if name not in ("self", "kwargs")
    ]
    names = own + list(MODEL_KWARGS)
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        hints.append(f"{name!r}{hint}")
    raise ValueError(
        f"{cls.__name__} got unexpected keyword arguments: "
        f"{', '.join(hints)}. It takes {', '.join(names)}."
    )


def check_prefix_range(prefix_range):
    """`None`, or `prefix_range` as a pair of ints with `1 <= low <= high`."""
    if prefix_range is None:
        return None
    try:
        low, high = prefix_range
        ok = all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool)
            for v in (low, high)
        )
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            "`prefix_range` must be None or a pair of ints (low, high); got "
            f"{prefix_range!r}."
        )
    if low < 1 or low > high:
        raise ValueError(
            f"`prefix_range`={tuple(prefix_range)} must satisfy 1 <= low <= "
            "high <= N - 1 (N = patches per image)."
        )
    return int(low), int(high)
