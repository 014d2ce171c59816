"""Argument checks shared across keras_aim, with messages that name the
argument, the value and what is allowed."""

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
