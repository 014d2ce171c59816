"""Layout maps: how each AIM weight is sharded over a device mesh.

Megatron-style tensor parallelism on the `model` axis, with the other
dimension of each large kernel sharded on the `batch` axis (as keras-hub's
layout maps do, so that a 7B model's weights are spread over every device):

- column-parallel (output dimension on `model`): `attn_qkv`, `mlp_fc1`,
  the pixel head's block `fc1`, the probe's `key` and `value`;
- row-parallel (input dimension on `model`): `attn_proj`, `mlp_fc2`, the
  pixel head's `proj`, block `fc2` and `output`, the probe's `classifier`;
- replicated on purpose: the patch embedding, LayerNorms, biases, LoRA
  matrices, the probe's query and BatchNorm statistics, random-seed state.

Every variable path matches exactly one rule; `check_layout` (used by the
tests and the example) refuses a model with a variable no rule covers, so
a renamed layer cannot silently stay replicated.
"""

import re

import keras

from keras_aim.models.aim.aim_layout import REPLICATED
from keras_aim.models.aim.aim_layout import SHARDED
from keras_aim.models.aim.aim_layout import layout_rules as _aim_rules
from keras_aim.models.aimv2.aimv2_layout import layout_rules as _aimv2_rules


def _rules(model_dim, data_dim):
    """The rules of every family (each variable path matches one)."""
    return _aim_rules(model_dim, data_dim) + _aimv2_rules(model_dim, data_dim)


def get_layout_map(
    device_mesh, model_parallel_dim_name="model", data_parallel_dim_name="batch"
):
    """A `keras.distribution.LayoutMap` for any keras_aim model.

    Args:
        device_mesh: a `keras.distribution.DeviceMesh`.
        model_parallel_dim_name: the mesh axis of tensor parallelism.
        data_parallel_dim_name: the mesh axis of the batch (it also shards
            the other dimension of each large kernel).

    Returns:
        A `LayoutMap` whose keys cover every variable of `AIMBackbone`,
        `AIMv2Backbone`, `AIMPretrainer` and `AIMImageClassifier` exactly
        once (replicated
        variables map to an all-`None` layout).
    """
    if not isinstance(device_mesh, keras.distribution.DeviceMesh):
        raise ValueError(
            "`device_mesh` must be a keras.distribution.DeviceMesh; got "
            f"{type(device_mesh).__name__}."
        )
    names = list(device_mesh.axis_names)
    for argument, name in (
        ("model_parallel_dim_name", model_parallel_dim_name),
        ("data_parallel_dim_name", data_parallel_dim_name),
    ):
        if name not in names:
            raise ValueError(
                f"`{argument}`={name!r} is not an axis of the device mesh "
                f"(its axes: {names})."
            )
    layout_map = keras.distribution.LayoutMap(device_mesh)
    for pattern, axes, _ in _rules(
        model_parallel_dim_name, data_parallel_dim_name
    ):
        layout_map[pattern] = axes if axes is not None else ()
    return layout_map


def check_layout(
    model,
    device_mesh,
    model_parallel_dim_name="model",
    data_parallel_dim_name="batch",
):
    """Checks that a model's variables shard cleanly on `device_mesh`.

    Every variable path must match exactly one rule of `get_layout_map`
    (a renamed layer is an error, not a replicated weight), and every
    sharded dimension must divide by its mesh axis; the head count too
    (attention is split by heads on the `model` axis).

    Returns:
        `{"sharded": [paths], "replicated": [paths]}`.

    Raises:
        ValueError: naming the uncovered paths or the dimension that does
            not divide.
    """
    rules = _rules(model_parallel_dim_name, data_parallel_dim_name)
    sizes = dict(zip(device_mesh.axis_names, device_mesh.shape))
    if model_parallel_dim_name not in sizes:
        raise ValueError(
            f"{model_parallel_dim_name!r} is not an axis of the device mesh "
            f"(its axes: {list(sizes)})."
        )
    heads = {
        layer.num_heads
        for layer in [getattr(model, "backbone", model), *model.layers]
        if isinstance(getattr(layer, "num_heads", None), int)
    }
    model_size = sizes[model_parallel_dim_name]
    for count in sorted(heads):
        if count % model_size:
            raise ValueError(
                f"The mesh's {model_parallel_dim_name!r} axis ({model_size} "
                f"devices) does not divide the {count} attention heads."
            )
    found = {SHARDED: [], REPLICATED: []}
    uncovered = []
    for variable in model.variables:
        path = variable.path
        matches = [r for r in rules if re.fullmatch(r[0], path)]
        if len(matches) != 1:
            uncovered.append((path, len(matches)))
            continue
        _, axes, kind = matches[0]
        found[kind].append(path)
        for dim, axis in zip(variable.shape, axes or ()):
            if axis is not None and dim % sizes[axis]:
                raise ValueError(
                    f"{path} has shape {tuple(variable.shape)}: its "
                    f"dimension {dim} does not divide by the mesh's {axis!r} "
                    f"axis ({sizes[axis]} devices). Choose a mesh whose "
                    "axes divide the width, heads and MLP width."
                )
    if uncovered:
        raise ValueError(
            "These variables match no layout rule (or several), so they "
            f"would be replicated by accident: {uncovered[:8]}."
        )
    return found


def parse_mesh(text, devices=None):
    """`"2x4"` -> a `DeviceMesh` of shape (2, 4) on axes ("batch", "model")."""
    try:
        shape = tuple(int(part) for part in str(text).lower().split("x"))
        valid = len(shape) == 2 and all(s > 0 for s in shape)
    except ValueError:
        valid = False
    if not valid:
        raise ValueError(
            f"--mesh must be BATCHxMODEL, two positive integers; got {text!r}."
        )
    devices = devices or keras.distribution.list_devices()
    if shape[0] * shape[1] != len(devices):
        raise ValueError(
            f"--mesh {text} needs {shape[0] * shape[1]} devices; there are "
            f"{len(devices)}."
        )
    return keras.distribution.DeviceMesh(shape, ("batch", "model"), devices)


def check_dimensions(
    device_mesh,
    hidden_dim,
    num_heads,
    mlp_ratio=4.0,
    head_hidden_dim=None,
    model_parallel_dim_name="model",
    data_parallel_dim_name="batch",
):
    """Checks a config against the mesh before anything is built.

    The `model` axis must divide the width, the head count and the MLP
    width (and the pixel head's widths); the `batch` axis, which shards the
    other dimension of the same kernels, the width too.
    """
    sizes = dict(zip(device_mesh.axis_names, device_mesh.shape))
    for name in (model_parallel_dim_name, data_parallel_dim_name):
        if name not in sizes:
            raise ValueError(
                f"{name!r} is not an axis of the device mesh (its axes: "
                f"{list(sizes)})."
            )
    model, data = sizes[model_parallel_dim_name], sizes[data_parallel_dim_name]
    checks = [
        ("the width hidden_dim", hidden_dim, model),
        ("the width hidden_dim", hidden_dim, data),
        ("the attention heads", num_heads, model),
        ("the MLP width", int(mlp_ratio * hidden_dim), model),
    ]
    if head_hidden_dim:
        checks += [
            ("the pixel head's width", head_hidden_dim, model),
            ("the pixel head's width", head_hidden_dim, data),
            (
                "the pixel head's MLP width",
                int(mlp_ratio * head_hidden_dim),
                model,
            ),
        ]
    for what, value, size in checks:
        if value % size:
            axis = (
                model_parallel_dim_name
                if size == model
                else (data_parallel_dim_name)
            )
            raise ValueError(
                f"The mesh {tuple(device_mesh.shape)} cannot shard {what} "
                f"{value}: its {axis!r} axis has {size} devices, which do "
                "not divide it."
            )
