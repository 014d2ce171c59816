"""Argument checks shared across keras_aim, with messages that name the
argument, the value and what is allowed.

Every public entry point validates through these functions, so a rule
(what a head count, a probe-layer list or an image batch may be) is written
once. The module imports only NumPy.
"""

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
    shape = tuple(shape)
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
