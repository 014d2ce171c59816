"""Constructor and call arguments: counts, block indices, sizes, names."""

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


def resolve_block_indices(layers, num_layers, name="layers"):
    """Turns block indices (negatives count from the end) into 0-based ones.

    Args:
        layers: one int or a list/tuple of ints; booleans, floats and
            strings are refused.
        num_layers: int, the depth of the trunk.
        name: the argument's name in the message.

    Returns:
        A list of indices in `[0, num_layers)`, in the order given.

    Example:

    >>> resolve_block_indices([0, -1], 4)
    [0, 3]
    """
    allowed = (
        f"an int or a list of ints in [-{num_layers}, {num_layers - 1}] "
        "(0-based block indices; negatives count from the end)"
    )

    def is_index(value):
        return isinstance(value, (int, np.integer)) and not isinstance(
            value, (bool, np.bool_)
        )

    given = [layers] if is_index(layers) else layers
    if not isinstance(given, (list, tuple)) or not given:
        raise ValueError(f"`{name}` must be {allowed}; got {name}={layers!r}.")
    for index in given:
        if not is_index(index):
            raise ValueError(
                f"`{name}` must be {allowed}; got {index!r} in "
                f"{name}={layers!r}."
            )
        if not -num_layers <= index < num_layers:
            raise ValueError(
                f"Block index {index!r} in `{name}` is out of range for a "
                f"backbone with {num_layers} blocks: `{name}` must be "
                f"{allowed}."
            )
    return [int(index) % num_layers for index in given]


def size_pair(value, name):
    """Returns `value` as an `(height, width)` tuple of positive ints."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(
            f"`{name}` must be an int or (height, width), got {value!r}."
        )
    if isinstance(value, int):
        value = (value, value)
    try:
        pair = tuple(value)
    except TypeError:
        raise ValueError(
            f"`{name}` must be a positive int or a (height, width) pair of "
            f"positive ints, or None. Received: {name}={value!r}"
        ) from None
    if len(pair) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair
    ):
        raise ValueError(
            f"`{name}` must be a positive int or a (height, width) pair of "
            f"positive ints, or None. Received: {name}={value!r}"
        )
    return pair


def channel_values(value, name):
    """Returns `value` (a number or a sequence of numbers) as a float tuple."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value,)
    try:
        values = tuple(
            float(v) for v in value if not isinstance(v, (bool, str))
        )
        valid = len(values) == len(value) and np.isfinite(values).all()
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(
            f"`{name}` must be a finite number, a sequence of finite numbers "
            f"(one per channel) or None. Received: {name}={value!r}"
        )
    if not values:
        raise ValueError(
            f"`{name}` must not be empty. Received: {name}={value!r}"
        )
    return values


# Constructor arguments of tasks (the classifier) that a backbone refuses.
TASK_ONLY_ARGS = (
    "probe_layers",
    "num_classes",
    "image_converter",
    "class_names",
)


def reject_task_args(cls, kwargs):
    """Refuses task arguments (`probe_layers`, ...) given to a backbone."""
    extra = set(TASK_ONLY_ARGS) & set(kwargs)
    if extra:
        raise ValueError(
            f"{cls.__name__}.from_preset does not take {sorted(extra)}; "
            "those belong to AIMImageClassifier.from_preset."
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
