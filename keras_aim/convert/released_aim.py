"""The released AIM layout: its config, its tensor names and their mapping.

The authors' checkpoints (El-Nouby et al., 2024) are PyTorch state dicts
with keys such as `trunk.blocks.3.attn.qkv.weight`; hub folders add a
`config.json` (`img_size`, `patch_size`, `embed_dim`, `num_blocks`,
`num_heads`, `probe_layers`, `num_classes`). This module reads the
architecture from the tensors' shapes, checks it against the config, maps
every released key to a keras_aim variable path and assigns the tensors one
at a time. Nothing is left silently random: a missing, unexpected or
wrongly shaped tensor is a `ValueError` listing all of them. It works on
any model with the keras_aim layer names and never imports the models.
"""

import os
import re

import numpy as np

from keras_aim.convert.readers import StateDictReader
from keras_aim.convert.readers import _bfloat16
from keras_aim.convert.readers import as_reader
from keras_aim.utils import io_utils

HUB_CONFIG_FILE = "config.json"
HUB_WEIGHTS_FILE = "model.safetensors"
IGNORED_KEYS = ("head.bn.num_batches_tracked",)

_BLOCK_KEY = re.compile(r"trunk\.blocks\.(\d+)\.")


# ---------------------------------------------------------------------------
# Architecture: from the tensors' shapes and from a hub config.json.
# ---------------------------------------------------------------------------


def infer_config(shapes):
    """Infers the AIM architecture from a state dict's tensor shapes.

    The number of attention heads is not recorded in the tensors; it comes
    from the preset name or the hub `config.json`.

    Args:
        shapes: dict `{torch key: shape}` (e.g. `reader.shapes()`), or a
            `StateDictReader`.

    Returns:
        dict with `patch_size`, `hidden_dim`, `num_layers`, `num_channels`,
        `mlp_ratio` and `num_classes` (`None` without head tensors).

    Raises:
        ValueError: a tensor the architecture depends on is missing or the
            shapes contradict each other.

    Example:

    >>> infer_config({
    ...     "preprocessor.patchifier.proj.weight": (48, 3, 4, 4),
    ...     "trunk.blocks.0.mlp.fc1.weight": (192, 48),
    ... })["hidden_dim"]
    48
    """
    if isinstance(shapes, StateDictReader):
        shapes = shapes.shapes()
    shapes = {k: tuple(int(s) for s in v) for k, v in shapes.items()}
    name = "preprocessor.patchifier.proj.weight"
    if name not in shapes:
        raise ValueError(
            f"This is not an AIM checkpoint: tensor {name!r} is missing "
            f"(found {len(shapes)} tensors, e.g. {sorted(shapes)[:5]})."
        )
    proj = shapes[name]
    if len(proj) != 4 or proj[2] != proj[3]:
        raise ValueError(
            f"Tensor {name!r} must have shape (hidden_dim, channels, patch, "
            f"patch); got {proj}."
        )
    hidden_dim, num_channels, patch_size = proj[0], proj[1], proj[2]
    indices = sorted(
        {int(m.group(1)) for k in shapes if (m := _BLOCK_KEY.match(k))}
    )
    if not indices:
        raise ValueError(
            "The checkpoint has no transformer blocks (no tensors named "
            "'trunk.blocks.<i>.*')."
        )
    if indices != list(range(len(indices))):
        missing = sorted(set(range(max(indices) + 1)) - set(indices))
        raise ValueError(
            f"Transformer blocks must be numbered 0..N-1; blocks {missing} "
            f"are missing (found {indices})."
        )
    mlp_ratio = 4.0
    fc1 = shapes.get("trunk.blocks.0.mlp.fc1.weight")
    if fc1 is not None:
        if len(fc1) != 2 or fc1[1] != hidden_dim or fc1[0] % hidden_dim:
            raise ValueError(
                "Tensor 'trunk.blocks.0.mlp.fc1.weight' must have shape "
                f"(k * {hidden_dim}, {hidden_dim}); got {fc1}."
            )
        mlp_ratio = fc1[0] / hidden_dim
    num_classes = None
    linear = shapes.get("head.linear.weight")
    if linear is not None:
        if len(linear) != 2:
            raise ValueError(
                "Tensor 'head.linear.weight' must have shape (num_classes, "
                f"{hidden_dim}); got {linear}."
            )
        num_classes = linear[0]
    return {
        "patch_size": patch_size,
        "hidden_dim": hidden_dim,
        "num_layers": len(indices),
        "num_channels": num_channels,
        "mlp_ratio": mlp_ratio,
        "num_classes": num_classes,
    }


def has_head(keys):
    """Whether a state dict's keys include attentive-probe head tensors."""
    return any(k.startswith("head.") and k not in IGNORED_KEYS for k in keys)


def is_hub_folder(path):
    """Whether `path` is a folder in the released hub layout."""
    path = os.fspath(path)
    return os.path.isfile(os.path.join(path, HUB_CONFIG_FILE)) and (
        os.path.isfile(os.path.join(path, HUB_WEIGHTS_FILE))
    )


def read_hub_config(folder):
    """Reads a hub folder's `config.json` into a dict."""
    config_path = os.path.join(os.fspath(folder), HUB_CONFIG_FILE)
    if not os.path.lexists(config_path):
        raise FileNotFoundError(
            f"{folder} is not an AIM hub folder: {config_path} does not "
            f"exist (expected {HUB_CONFIG_FILE} and {HUB_WEIGHTS_FILE})."
        )
    config = io_utils.read_json(config_path, what="Hub config")
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} must hold a JSON object.")
    return config


def hub_architecture(config, path):
    """The architecture a hub `config.json` describes (as `infer_config`).

    Used when only the config is at hand (`load_weights=False` without a
    weights file).
    """
    try:
        return {
            "patch_size": _as_int(config["patch_size"]),
            "hidden_dim": _as_int(config["embed_dim"]),
            "num_layers": _as_int(config["num_blocks"]),
            "num_channels": _as_int(config.get("num_channels", 3)),
            "mlp_ratio": 4.0,
            "num_classes": config.get("num_classes"),
        }
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"{path} must give patch_size, embed_dim and num_blocks as "
            f"integers ({type(error).__name__}: {error})."
        ) from error


def check_hub_config(config, inferred, where):
    """Raises a `ValueError` where `config.json` contradicts the tensors."""
    for key, name in (
        ("patch_size", "patch_size"),
        ("embed_dim", "hidden_dim"),
        ("num_blocks", "num_layers"),
        ("num_channels", "num_channels"),
    ):
        if key in config and _config_int(config, key, where) != inferred[name]:
            raise ValueError(
                f"{where} says {key}={config[key]} but the tensors have "
                f"{name}={inferred[name]}."
            )
    classes = inferred["num_classes"]
    if classes is not None and config.get("num_classes") is not None:
        if _config_int(config, "num_classes", where) != classes:
            raise ValueError(
                f"{where} says num_classes={config['num_classes']} but "
                f"'head.linear.weight' has {classes} rows."
            )


def _config_int(config, key, where):
    try:
        return _as_int(config[key])
    except ValueError:
        raise ValueError(
            f"{where}: `{key}`={config[key]!r} must be a positive integer."
        ) from None


def _as_int(value):
    """A positive int from a config value (the release writes some as
    one-element lists); anything else is a `ValueError`."""
    if isinstance(value, (list, tuple)) and len(value) >= 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"expected a positive integer, got {value!r}")
    return value


def hub_probe_layers(probe_layers, num_layers):
    """Translates a hub config's `probe_layers` for the classifier.

    The release's `config.json` gives an int, "the last n blocks"; the
    classifier reads an int as one block index, so the int becomes that
    list. Other values pass through unchanged.
    """
    if isinstance(probe_layers, bool) or not isinstance(
        probe_layers, (int, np.integer)
    ):
        return probe_layers
    if not 0 < probe_layers <= num_layers:
        raise ValueError(
            f"`probe_layers`={probe_layers} (the last n blocks) must be "
            f"between 1 and num_layers={num_layers}."
        )
    return list(range(num_layers - int(probe_layers), num_layers))


def head_file_probe_layers(head_path):
    """`"last"` / `"best"` from a released head file name, else `None`."""
    base = os.path.basename(os.fspath(head_path))
    if "last_layers" in base:
        return "last"
    if "best_layers" in base:
        return "best"
    return None


# ---------------------------------------------------------------------------
# Name mapping and assignment.
# ---------------------------------------------------------------------------


def _conv_kernel(x):
    return np.transpose(x, (2, 3, 1, 0))  # (out, in, kh, kw) -> (kh, kw, ...)


def _linear_kernel(x):
    return np.transpose(x)  # (out, in) -> (in, out)


def _identity(x):
    return x


def backbone_weight_map(num_layers):
    """`{torch key: (keras variable path, transform)}` for the trunk."""
    mapping = {
        "preprocessor.patchifier.proj.weight": (
            "patch_embedding/proj/kernel",
            _conv_kernel,
        ),
        "preprocessor.patchifier.proj.bias": (
            "patch_embedding/proj/bias",
            _identity,
        ),
        "preprocessor.patchifier.norm.weight": (
            "patch_embedding/norm/gamma",
            _identity,
        ),
        "preprocessor.patchifier.norm.bias": (
            "patch_embedding/norm/beta",
            _identity,
        ),
        "trunk.post_trunk_norm.weight": ("post_trunk_norm/gamma", _identity),
        "trunk.post_trunk_norm.bias": ("post_trunk_norm/beta", _identity),
    }
    block_map = {
        "norm_1.weight": ("norm_1/gamma", _identity),
        "norm_1.bias": ("norm_1/beta", _identity),
        "attn.qkv.weight": ("attn_qkv/kernel", _linear_kernel),
        "attn.proj.weight": ("attn_proj/kernel", _linear_kernel),
        "norm_2.weight": ("norm_2/gamma", _identity),
        "norm_2.bias": ("norm_2/beta", _identity),
        "mlp.fc1.weight": ("mlp_fc1/kernel", _linear_kernel),
        "mlp.fc2.weight": ("mlp_fc2/kernel", _linear_kernel),
    }
    for i in range(num_layers):
        for torch_name, (path, fn) in block_map.items():
            mapping[f"trunk.blocks.{i}.{torch_name}"] = (
                f"block_{i}/{path}",
                fn,
            )
    return mapping


def head_weight_map():
    """`{torch key: (path inside the probe head, transform)}`."""
    return {
        "head.cls_token": ("query", _identity),
        "head.bn.running_mean": ("batch_norm/moving_mean", _identity),
        "head.bn.running_var": ("batch_norm/moving_variance", _identity),
        "head.k.weight": ("key/kernel", _linear_kernel),
        "head.v.weight": ("value/kernel", _linear_kernel),
        "head.linear.weight": ("classifier/kernel", _linear_kernel),
    }


def _relative_variables(layer, roots=None):
    """`{path relative to layer: variable}` for a layer's weights."""
    out = {}
    for variable in layer.weights:
        parts = variable.path.split("/")
        if roots is None:
            name = getattr(layer, "name", None)
            start = parts.index(name) + 1 if name in parts[:-1] else 0
        else:
            start = next(
                (j for j, p in enumerate(parts) if roots.fullmatch(p)), 0
            )
        out["/".join(parts[start:])] = variable
    return out


_BACKBONE_ROOTS = re.compile(r"patch_embedding|block_\d+|post_trunk_norm")


def _model_parts(model):
    """Returns `(backbone, probe_head or None)` for a backbone/classifier."""
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        return model, None
    try:
        head = model.get_layer("probe_head")
    except ValueError as error:
        raise ValueError(
            f"{type(model).__name__} has a backbone but no layer named "
            "'probe_head' to receive the head.* tensors."
        ) from error
    return backbone, head


def load_released_weights(model, reader, dtype=None):
    """Assigns a released AIM state dict to a Keras model, tensor by tensor.

    Every tensor is checked first (names and shapes, without reading data);
    then each one is read, transposed to the Keras layout, cast to the
    variable's dtype and assigned, so that no full float32 copy of the
    model is ever held when the model is bfloat16.

    Args:
        model: an `AIMBackbone` (the checkpoint must have no `head.*`
            tensors) or an `AIMImageClassifier` (head tensors required;
            its `.backbone` receives the trunk).
        reader: a `StateDictReader` from `open_state_dict`, or a plain dict
            `{torch key: array}`.
        dtype: optional dtype the tensors are cast to before assignment.
            Defaults to each variable's own dtype.

    Returns:
        The model, for chaining.

    Raises:
        ValueError: listing every missing key, unexpected key and wrongly
            shaped tensor (name, expected torch shape, checkpoint shape).

    Example:

    >>> reader = open_state_dict("aim-600M/model.safetensors")  # doctest: +SKIP
    >>> load_released_weights(classifier, reader)  # doctest: +SKIP
    """
    reader = as_reader(reader)
    backbone, head = _model_parts(model)
    plan = {}
    variables = _relative_variables(backbone, _BACKBONE_ROOTS)
    for key, (path, fn) in backbone_weight_map(backbone.num_layers).items():
        plan[key] = (variables.get(path), path, fn)
    if head is not None:
        head_variables = _relative_variables(head)
        for key, (path, fn) in head_weight_map().items():
            plan[key] = (head_variables.get(path), f"probe_head/{path}", fn)
    unmapped = [path for key, (v, path, _) in plan.items() if v is None]
    if unmapped:
        raise ValueError(
            f"{type(model).__name__} has no variables at {unmapped}; was it "
            "built with the keras_aim layer names?"
        )
    targets = {id(v) for v, _, _ in plan.values()}
    weights = list(backbone.weights) + ([] if head is None else head.weights)
    uncovered = [v.path for v in weights if id(v) not in targets]
    if uncovered:
        raise ValueError(
            f"{type(model).__name__} has variables that no released tensor "
            f"fills; they would stay random: {uncovered}."
        )

    keys = [k for k in reader.keys() if k not in IGNORED_KEYS]
    missing = [k for k in plan if k not in keys]
    unexpected = [k for k in keys if k not in plan]
    wrong = []
    for key in keys:
        if key not in plan:
            continue
        variable, _, fn = plan[key]
        got = tuple(reader.shape(key))
        want = _torch_shape(tuple(variable.shape), fn)
        if got != want:
            wrong.append(f"{key}: expected {want}, got {got}")
    if missing or unexpected or wrong:
        lines = [
            f"The checkpoint {reader.path} does not match "
            f"{type(model).__name__}(hidden_dim={backbone.hidden_dim}, "
            f"num_layers={backbone.num_layers}, "
            f"patch_size={backbone.patch_size}):"
        ]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {missing}")
        if unexpected:
            hint = ""
            if head is None and has_head(unexpected):
                hint = " (head tensors: load into an AIMImageClassifier)"
            lines.append(
                f"  unexpected keys ({len(unexpected)}){hint}: {unexpected}"
            )
        if wrong:
            lines.append(f"  wrongly shaped tensors ({len(wrong)}):")
            lines.extend(f"    {w}" for w in wrong)
        raise ValueError("\n".join(lines))

    for key, (variable, _, fn) in plan.items():
        target = _numpy_dtype(variable.dtype if dtype is None else dtype)
        array = fn(reader.get(key, dtype=target))
        if not np.isfinite(array.astype(np.float32, copy=False)).all():
            raise ValueError(
                f"Tensor {key!r} in {reader.path} holds NaN or infinite "
                "values: the checkpoint is damaged."
            )
        variable.assign(np.ascontiguousarray(array.astype(target, copy=False)))
        del array
    return model


def _torch_shape(keras_shape, fn):
    if fn is _conv_kernel:
        kh, kw, c, d = keras_shape
        return (d, c, kh, kw)
    if fn is _linear_kernel:
        return tuple(reversed(keras_shape))
    return keras_shape


def _numpy_dtype(dtype):
    name = str(getattr(dtype, "name", dtype))
    if "bfloat16" in name:
        return np.dtype(_bfloat16())
    return np.dtype(name)
