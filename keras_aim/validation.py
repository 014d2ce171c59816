"""Argument checks shared across keras_aim, with messages that name the
argument, the value and what is allowed."""

import numpy as np


def positive_int(value, name):
    """Returns `value` as an `int`, or raises a `ValueError` naming `name`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < 1
    ):
        raise ValueError(
            f"`{name}` must be a positive integer; got {name}={value!r}."
        )
    return int(value)
