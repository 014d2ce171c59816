"""Checked, tensor-by-tensor assignment of a checkpoint to Keras variables.

A plan lists, for each Keras variable, the checkpoint keys that fill it,
their expected shapes and the function from those arrays to the
variable's value. `check_plan` checks every key and shape of a whole model
before any data is read, so that a bad checkpoint is refused with nothing
half-loaded; `assign_plan` then reads, checks and assigns one tensor at a
time.
"""

import numpy as np

from keras_aim.convert.released_aim import _numpy_dtype


def check_plan(plan, reader, allowed, what):
    """Raises a `ValueError` listing every missing key, unexpected key
    (neither planned nor `allowed(key)`) and wrongly shaped tensor (key,
    expected shape, found shape); reads no data."""
    keys = list(reader.keys())
    present = set(keys)
    wanted = {k for _, sources, _, _ in plan for k in sources}
    missing = [k for _, sources, _, _ in plan for k in sources]
    missing = [k for k in missing if k not in present]
    unexpected = [k for k in keys if k not in wanted and not allowed(k)]
    wrong = []
    for _, sources, shapes, _ in plan:
        for key, want in zip(sources, shapes):
            if key in present and tuple(reader.shape(key)) != want:
                wrong.append(
                    f"{key}: expected {want}, got {tuple(reader.shape(key))}"
                )
    if missing or unexpected or wrong:
        lines = [f"The checkpoint {reader.path} does not match {what}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {missing}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {unexpected}")
        if wrong:
            lines.append(f"  wrongly shaped tensors ({len(wrong)}):")
            lines.extend(f"    {w}" for w in wrong)
        raise ValueError("\n".join(lines))


def assign_plan(plan, reader, dtype=None):
    """Reads, checks for NaN and infinity, transforms and assigns each
    planned variable, one at a time (cast to the variable's dtype, or
    `dtype`, as it is read: a bfloat16 model never holds a float32 copy).
    """
    for variable, sources, _, transform in plan:
        target = _numpy_dtype(variable.dtype if dtype is None else dtype)
        arrays = []
        for key in sources:
            array = reader.get(key, dtype=target)
            if not np.isfinite(array.astype(np.float32, copy=False)).all():
                raise ValueError(
                    f"Tensor {key!r} in {reader.path} holds NaN or infinite "
                    "values: the checkpoint is damaged."
                )
            arrays.append(array)
        value = transform(arrays)
        del arrays
        value = np.asarray(value).astype(target, copy=False)
        # (np.ascontiguousarray makes a scalar such as a temperature 1-D.)
        variable.assign(np.ascontiguousarray(value) if value.ndim else value)
        del value
