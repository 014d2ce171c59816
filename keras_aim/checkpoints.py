"""Reading the released AIM checkpoints into Keras models.

The authors' release (El-Nouby et al., 2024, "Scalable Pre-training of
Large Autoregressive Image Models") ships PyTorch state dicts in two
layouts: hub folders (`config.json` + `model.safetensors`) and separate
backbone / head `.pth` files. This module reads both lazily, one tensor at
a time, infers the architecture from the tensors' shapes, checks every name
and shape, and assigns the weights to an `AIMBackbone` or
`AIMImageClassifier`. Nothing is left silently random: a missing,
unexpected or wrongly shaped tensor is a `ValueError` listing all of them.
"""

import json
import os
import re
import struct

import numpy as np

from keras_aim.preprocessing import default_image_converter

HUB_CONFIG_FILE = "config.json"
HUB_WEIGHTS_FILE = "model.safetensors"
IGNORED_KEYS = ("head.bn.num_batches_tracked",)

_BLOCK_KEY = re.compile(r"trunk\.blocks\.(\d+)\.")


# ---------------------------------------------------------------------------
# Lazy readers.
# ---------------------------------------------------------------------------


class StateDictReader:
    """Read-only, lazy view of a checkpoint's tensors.

    Use `open_state_dict` to get one. `keys()` lists the tensor names,
    `shape(name)` gives a shape without reading data and `get(name)` reads
    one tensor as a NumPy array. Readers are context managers.
    """

    def __init__(self, path):
        self.path = path

    def keys(self):
        raise NotImplementedError

    def shape(self, name):
        raise NotImplementedError

    def get(self, name, dtype=None):
        raise NotImplementedError

    def shapes(self):
        """Returns `{name: shape}` for every tensor, without reading data."""
        return {name: self.shape(name) for name in self.keys()}

    def __contains__(self, name):
        return name in self.keys()

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _missing(self, name):
        return KeyError(f"Tensor {name!r} is not in checkpoint {self.path}.")


def _bfloat16():
    import ml_dtypes

    return ml_dtypes.bfloat16


def _wants_bfloat16(dtype):
    return dtype is not None and "bfloat16" in str(
        getattr(dtype, "name", dtype)
    )


_SAFETENSORS_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "<u2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}


class _SafetensorsReader(StateDictReader):
    """Reads one tensor at a time with positional reads.

    `safe_open` validates the file, then is dropped: its memory map would
    keep every page read so far resident (and counted in RSS) until the
    reader closes, i.e. a second copy of the model by the end of a load.
    """

    def __init__(self, path):
        super().__init__(path)
        try:
            from safetensors import safe_open
        except ImportError as error:
            raise ImportError(
                f"Reading {path} needs the `safetensors` package: "
                "`pip install safetensors` (or `keras-aim[convert]`)."
            ) from error
        try:
            with safe_open(path, framework="numpy") as handle:
                names = list(handle.keys())
            with open(path, "rb") as f:
                (size,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(size))
        except Exception as error:
            # safetensors raises its own `SafetensorError(Exception)`.
            raise ValueError(
                f"Could not read safetensors file {path}: it is truncated, "
                f"corrupt or not a safetensors file ({error})."
            ) from error
        self._meta = {}
        for name in names:
            entry = header[name]
            begin, end = entry["data_offsets"]
            self._meta[name] = (
                tuple(int(d) for d in entry["shape"]),
                entry["dtype"],
                8 + size + begin,
                end - begin,
            )
        self._keys = names
        self._file = open(path, "rb", buffering=0)

    def keys(self):
        return list(self._keys)

    def shape(self, name):
        if name not in self._meta:
            raise self._missing(name)
        return self._meta[name][0]

    def get(self, name, dtype=None):
        shape = self.shape(name)
        _, stored, offset, num_bytes = self._meta[name]
        if stored not in _SAFETENSORS_DTYPES:
            raise ValueError(
                f"Tensor {name!r} in {self.path} has dtype {stored}, which "
                "keras_aim cannot read."
            )
        array = np.empty(shape, _SAFETENSORS_DTYPES[stored])
        if array.nbytes != num_bytes:
            raise ValueError(
                f"Tensor {name!r} in {self.path} has {num_bytes} bytes for "
                f"shape {shape} and dtype {stored}: the file is corrupt."
            )
        self._read_into(name, offset, array)
        if stored == "BF16":
            array = array.view(_bfloat16())
            if not _wants_bfloat16(dtype):
                array = array.astype(np.float32)
        return array if dtype is None else array.astype(dtype, copy=False)

    def _read_into(self, name, offset, array):
        if self._file is None:
            raise ValueError(f"Checkpoint {self.path} is closed.")
        buffer = memoryview(array.reshape(-1).view(np.uint8))
        self._file.seek(offset)
        done = 0
        while done < len(buffer):
            count = self._file.readinto(buffer[done:])
            if not count:
                raise ValueError(
                    f"Could not read tensor {name!r} from {self.path}: the "
                    "file ends early (truncated)."
                )
            done += count

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None


class _TorchReader(StateDictReader):
    def __init__(self, path):
        super().__init__(path)
        try:
            import torch
        except ImportError as error:
            raise ImportError(
                f"Reading the PyTorch checkpoint {path} needs `torch`: "
                "`pip install torch` (the CPU build is enough), or convert "
                "a hub folder (config.json + model.safetensors) instead."
            ) from error
        self._torch = torch
        try:
            try:
                state = torch.load(
                    path, map_location="cpu", weights_only=True, mmap=True
                )
            except RuntimeError as error:
                if "mmap" not in str(error):
                    raise
                # Files in the legacy (non-zip) format cannot be mapped.
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ValueError(
                f"Could not read PyTorch checkpoint {path}: it is truncated, "
                f"corrupt or not a `torch.save` file of tensors ({error})."
            ) from error
        if isinstance(state, dict):
            for wrapper in ("state_dict", "model"):
                if isinstance(state.get(wrapper), dict) and len(state) == 1:
                    state = state[wrapper]
        if not isinstance(state, dict) or not all(
            isinstance(v, torch.Tensor) for v in state.values()
        ):
            raise ValueError(
                f"PyTorch checkpoint {path} must hold a dict of tensors (a "
                f"state dict); got {type(state).__name__}."
            )
        self._state = state

    def keys(self):
        return list(self._state.keys())

    def shape(self, name):
        if name not in self._state:
            raise self._missing(name)
        return tuple(int(s) for s in self._state[name].shape)

    def get(self, name, dtype=None):
        if name not in self._state:
            raise self._missing(name)
        tensor = self._state[name].detach()
        if tensor.dtype == self._torch.bfloat16:
            if _wants_bfloat16(dtype):
                bits = tensor.contiguous().view(self._torch.int16).numpy()
                return bits.view(_bfloat16())
            tensor = tensor.float()
        array = tensor.numpy()
        return array if dtype is None else array.astype(dtype, copy=False)

    def close(self):
        self._state = {}


class _MergedReader(StateDictReader):
    def __init__(self, readers):
        super().__init__(" + ".join(str(r.path) for r in readers))
        self._owner = {}
        for reader in readers:
            for name in reader.keys():
                if name in self._owner:
                    raise ValueError(
                        f"Tensor {name!r} appears in both "
                        f"{self._owner[name].path} and {reader.path}."
                    )
                self._owner[name] = reader
        self._readers = readers

    def keys(self):
        return list(self._owner)

    def shape(self, name):
        if name not in self._owner:
            raise self._missing(name)
        return self._owner[name].shape(name)

    def get(self, name, dtype=None):
        if name not in self._owner:
            raise self._missing(name)
        return self._owner[name].get(name, dtype=dtype)

    def close(self):
        for reader in self._readers:
            reader.close()


def open_state_dict(path, *more_paths):
    """Opens a released checkpoint lazily.

    Args:
        path: a `.safetensors` file or a `.pth` / `.pt` / `.bin` file written
            by `torch.save` (a dict of tensors).
        *more_paths: further files whose tensors are added (e.g. a head
            `.pth` next to a backbone `.pth`); names must not repeat.

    Returns:
        A `StateDictReader` with `keys()`, `shape(name)` and
        `get(name, dtype=None)`. `get` returns a NumPy array; bfloat16
        tensors come back as float32, or as `ml_dtypes.bfloat16` when
        `dtype="bfloat16"` is asked for.

    Raises:
        FileNotFoundError: a file does not exist.
        ValueError: a file is truncated, corrupt or of an unknown kind.

    Example:

    >>> reader = open_state_dict("aim-600M/model.safetensors")  # doctest: +SKIP
    >>> reader.shape("trunk.blocks.0.attn.qkv.weight")  # doctest: +SKIP
    (4608, 1536)
    """
    readers = [_open_one(p) for p in (path,) + more_paths]
    return readers[0] if len(readers) == 1 else _MergedReader(readers)


def _open_one(path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint file {path} does not exist.")
    if path.endswith(".safetensors"):
        return _SafetensorsReader(path)
    if path.endswith((".pth", ".pt", ".bin")):
        return _TorchReader(path)
    raise ValueError(
        f"Unknown checkpoint file type: {path}. Expected a `.safetensors` "
        "file or a `.pth` / `.pt` / `.bin` file written by `torch.save`."
    )


# ---------------------------------------------------------------------------
# Architecture from shapes.
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


# ---------------------------------------------------------------------------
# Name mapping and loading.
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
    if isinstance(reader, dict):
        reader = _DictReader(reader)
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


class _DictReader(StateDictReader):
    def __init__(self, state_dict):
        super().__init__("<state dict>")
        self._state = state_dict

    def keys(self):
        return list(self._state)

    def shape(self, name):
        return tuple(np.shape(self._state[name]))

    def get(self, name, dtype=None):
        array = np.asarray(self._state[name])
        return array if dtype is None else array.astype(dtype)


# ---------------------------------------------------------------------------
# Building models from checkpoints.
# ---------------------------------------------------------------------------


class _FilteredReader(StateDictReader):
    """A reader that hides the `head.*` tensors (backbone-only loading)."""

    def __init__(self, reader):
        super().__init__(reader.path)
        self._reader = reader

    def keys(self):
        return [k for k in self._reader.keys() if not k.startswith("head.")]

    def shape(self, name):
        return self._reader.shape(name)

    def get(self, name, dtype=None):
        return self._reader.get(name, dtype=dtype)


def hub_probe_layers(probe_layers, num_layers):
    """Turns a hub-style `probe_layers` into what the classifier takes.

    Args:
        probe_layers: an int (that many last blocks, as in the release's
            `config.json`), a list of 0-based block indices, or `"best"` /
            `"last"` (passed through).
        num_layers: int, the depth of the trunk.

    Returns:
        A list of block indices, or the string unchanged.
    """
    if isinstance(probe_layers, str):
        return probe_layers
    if isinstance(probe_layers, bool):
        raise ValueError(
            "`probe_layers` must be an int, a list of block indices, "
            f'"best" or "last"; got {probe_layers!r}.'
        )
    if isinstance(probe_layers, (int, np.integer)):
        if not 0 < probe_layers <= num_layers:
            raise ValueError(
                f"`probe_layers`={probe_layers} (the last n blocks) must be "
                f"between 1 and num_layers={num_layers}."
            )
        return list(range(num_layers - int(probe_layers), num_layers))
    return [int(i) for i in probe_layers]


def _check_num_heads(num_heads, hidden_dim):
    if num_heads is None:
        raise ValueError(
            "The number of attention heads is not stored in the tensors; "
            "pass `num_heads` (or a preset name such as 'aim_600m')."
        )
    if (
        isinstance(num_heads, bool)
        or not isinstance(num_heads, (int, np.integer))
        or num_heads <= 0
        or hidden_dim % int(num_heads)
    ):
        raise ValueError(
            f"`num_heads`={num_heads!r} must be a positive integer dividing "
            f"the checkpoint's width hidden_dim={hidden_dim}."
        )


def build_model(
    config,
    num_heads,
    reader=None,
    image_shape=None,
    dtype=None,
    probe_layers=None,
    with_head=None,
    image_size=224,
    **kwargs,
):
    """Builds the Keras model for a checkpoint and loads its weights.

    Args:
        config: dict from `infer_config` (the architecture).
        num_heads: int, attention heads (not recorded in the tensors).
        reader: a `StateDictReader`; `None` builds the architecture only.
        image_shape: `(H, W, C)` to build for. Defaults to
            `(image_size, image_size, num_channels)`; pass
            `(None, None, 3)` for any resolution.
        dtype: optional dtype or policy for the model, e.g. `"bfloat16"`.
        probe_layers: classifier only: `"best"`, `"last"`, an int (the last
            n blocks) or a list of block indices. Defaults to the
            classifier's default (`"best"` for released sizes, else
            `"last"`).
        with_head: `None` builds an `AIMImageClassifier` exactly when the
            checkpoint has `head.*` tensors; `True` requires a classifier;
            `False` builds the backbone and ignores head tensors.
        image_size: int, the default square image size. Defaults to 224.
        **kwargs: more `AIMImageClassifier` arguments (`num_classes`,
            `image_converter`, `name`).

    Returns:
        An `AIMImageClassifier` or an `AIMBackbone`.
    """
    from keras_aim.models.backbone import AIMBackbone

    _check_num_heads(num_heads, config["hidden_dim"])
    checkpoint_classes = config.get("num_classes")
    if reader is not None:
        head_in_checkpoint = has_head(reader.keys())
    else:
        head_in_checkpoint = checkpoint_classes is not None
    if with_head is None:
        with_head = head_in_checkpoint
    if with_head and reader is not None and not head_in_checkpoint:
        raise ValueError(
            f"Checkpoint {reader.path} has no classification head (no head.* "
            "tensors). Load it as an AIMBackbone, or build "
            "AIMImageClassifier(backbone, num_classes=...) to train a head."
        )
    if image_shape is None:
        image_shape = (image_size, image_size, config["num_channels"])
    image_shape = tuple(image_shape)
    backbone = AIMBackbone(
        image_shape=image_shape,
        patch_size=config["patch_size"],
        hidden_dim=config["hidden_dim"],
        num_layers=config["num_layers"],
        num_heads=int(num_heads),
        mlp_ratio=config["mlp_ratio"],
        dtype=dtype,
    )
    if not with_head:
        extra = sorted(set(kwargs) - {"name"})
        if extra or probe_layers is not None:
            extra += ["probe_layers"] if probe_layers is not None else []
            raise ValueError(
                f"An AIMBackbone does not take {extra}; those belong to "
                "AIMImageClassifier."
            )
        model = backbone
        if reader is not None:
            load_released_weights(model, _FilteredReader(reader))
        return model

    from keras_aim.models.classifier import AIMImageClassifier

    num_classes = kwargs.pop("num_classes", None) or checkpoint_classes
    if num_classes is None:
        num_classes = 1000
    if reader is not None and num_classes != checkpoint_classes:
        raise ValueError(
            f"The head in {reader.path} has {checkpoint_classes} classes; "
            f"got num_classes={num_classes}."
        )
    if probe_layers is not None:
        probe_layers = hub_probe_layers(probe_layers, config["num_layers"])
    if "image_converter" not in kwargs:
        kwargs["image_converter"] = default_image_converter(image_shape)
    model = AIMImageClassifier(
        backbone,
        num_classes=num_classes,
        probe_layers=probe_layers,
        dtype=dtype,
        **kwargs,
    )
    if reader is not None:
        load_released_weights(model, reader)
    return model


def is_hub_folder(path):
    """Whether `path` is a folder in the released hub layout."""
    path = os.fspath(path)
    return os.path.isfile(os.path.join(path, HUB_CONFIG_FILE)) and (
        os.path.isfile(os.path.join(path, HUB_WEIGHTS_FILE))
    )


def read_hub_config(folder):
    """Reads a hub folder's `config.json` into a dict."""
    config_path = os.path.join(os.fspath(folder), HUB_CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(
            f"{folder} is not an AIM hub folder: {config_path} does not "
            f"exist (expected {HUB_CONFIG_FILE} and {HUB_WEIGHTS_FILE})."
        )
    try:
        with open(config_path) as f:
            config = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"Could not parse {config_path} ({error}).") from error
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} must hold a JSON object.")
    return config


def _config_from_hub_json(config, path):
    try:
        return {
            "patch_size": _as_int(config["patch_size"]),
            "hidden_dim": int(config["embed_dim"]),
            "num_layers": int(config["num_blocks"]),
            "num_channels": int(config.get("num_channels", 3)),
            "mlp_ratio": 4.0,
            "num_classes": config.get("num_classes"),
        }
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"{path} must give patch_size, embed_dim and num_blocks as "
            f"integers ({type(error).__name__}: {error})."
        ) from error


def _check_hub_config(config, inferred, where):
    for key, name in (
        ("patch_size", "patch_size"),
        ("embed_dim", "hidden_dim"),
        ("num_blocks", "num_layers"),
        ("num_channels", "num_channels"),
    ):
        if key in config and _as_int(config[key]) != inferred[name]:
            raise ValueError(
                f"{where} says {key}={config[key]} but the tensors have "
                f"{name}={inferred[name]}."
            )
    classes = inferred["num_classes"]
    if classes is not None and config.get("num_classes") is not None:
        if _as_int(config["num_classes"]) != classes:
            raise ValueError(
                f"{where} says num_classes={config['num_classes']} but "
                f"'head.linear.weight' has {classes} rows."
            )


def _as_int(value):
    if isinstance(value, (list, tuple)):
        value = value[0]
    return int(value)


def load_hub_folder(
    folder,
    num_heads=None,
    image_shape=None,
    dtype=None,
    probe_layers=None,
    load_weights=True,
    with_head=None,
    **kwargs,
):
    """Loads a folder in the released hub layout into a Keras model.

    The folder holds `config.json` (keys `img_size`, `patch_size`,
    `embed_dim`, `num_blocks`, `num_heads`, `probe_layers`, `num_classes`)
    and `model.safetensors`, as in the `apple/aim-*` hub repositories. The
    architecture is read from the tensors' shapes and checked against the
    config; tensors are read one at a time.

    Args:
        folder: path of the hub folder.
        num_heads: optional int overriding `config.json`'s `num_heads`.
        image_shape: optional `(H, W, C)`; defaults to the config's
            `img_size`. Use `(None, None, 3)` for any resolution.
        dtype: optional model dtype, e.g. `"bfloat16"` (each tensor is cast
            just before assignment; no float32 copy of the model is made).
        probe_layers: optional override of the config's `probe_layers` (an
            int = the last n blocks, a list of block indices, `"best"` or
            `"last"`).
        load_weights: bool; `False` builds the architecture only (from the
            safetensors header, or from `config.json` when the weights file
            is absent). Defaults to `True`.
        with_head: `None` (default) returns a classifier exactly when the
            checkpoint has head tensors; `True` requires one; `False`
            returns the backbone and ignores the head.
        **kwargs: more `AIMImageClassifier` arguments (`num_classes`,
            `image_converter`, `name`).

    Returns:
        An `AIMImageClassifier` or an `AIMBackbone`.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: the config and the tensors disagree, or a tensor is
            missing, unexpected or wrongly shaped.

    Example:

    >>> model = load_hub_folder("aim-600M")  # doctest: +SKIP
    >>> backbone = load_hub_folder("aim-600M", image_shape=(None, None, 3),
    ...                            dtype="bfloat16", with_head=False)
    ... # doctest: +SKIP
    """
    folder = os.fspath(folder)
    config = read_hub_config(folder)
    where = os.path.join(folder, HUB_CONFIG_FILE)
    weights = os.path.join(folder, HUB_WEIGHTS_FILE)
    if num_heads is None:
        num_heads = config.get("num_heads")
    if probe_layers is None and with_head is not False:
        probe_layers = config.get("probe_layers")
    img_size = config.get("img_size", 224)
    if isinstance(img_size, (list, tuple)) and image_shape is None:
        channels = int(config.get("num_channels", 3))
        image_shape = (int(img_size[0]), int(img_size[1]), channels)
    options = dict(
        image_shape=image_shape,
        dtype=dtype,
        with_head=with_head,
        image_size=_as_int(img_size),
        **kwargs,
    )
    if not load_weights and not os.path.isfile(weights):
        inferred = _config_from_hub_json(config, where)
        if with_head is None:
            options["with_head"] = False
        return build_model(
            inferred, num_heads, probe_layers=probe_layers, **options
        )
    with open_state_dict(weights) as reader:
        inferred = infer_config(reader)
        _check_hub_config(config, inferred, where)
        if not has_head(reader.keys()) and with_head is not True:
            probe_layers = None
        return build_model(
            inferred,
            num_heads,
            reader=reader if load_weights else None,
            probe_layers=probe_layers,
            **options,
        )


def load_pth_checkpoint(
    backbone_path,
    head_path=None,
    num_heads=None,
    image_shape=None,
    dtype=None,
    probe_layers=None,
    load_weights=True,
    with_head=None,
    image_size=224,
    **kwargs,
):
    """Loads the released `.pth` files (`apple/AIM` layout) into Keras.

    Args:
        backbone_path: the backbone `.pth` (`preprocessor.*`, `trunk.*`).
        head_path: optional head `.pth` (`head.*`).
        num_heads: int, attention heads (e.g. from
            `keras_aim.presets.num_heads_for_preset`).
        image_shape: optional `(H, W, C)`; defaults to
            `(image_size, image_size, C)`.
        dtype: optional model dtype, e.g. `"bfloat16"`.
        probe_layers: classifier only; `"best"`, `"last"`, an int or a list.
            Defaults to `"last"` / `"best"` when the head file name says
            `last_layers` / `best_layers`, else the classifier's default.
        load_weights: bool; `False` builds the architecture only.
        with_head: as in `load_hub_folder`.
        image_size: int, the default square image size. Defaults to 224.
        **kwargs: more `AIMImageClassifier` arguments.

    Returns:
        An `AIMImageClassifier` (with a head file) or an `AIMBackbone`.

    Example:

    >>> model = load_pth_checkpoint(
    ...     "aim_600m_2bimgs_attnprobe_backbone.pth",
    ...     "aim_600m_2bimgs_attnprobe_head_best_layers.pth",
    ...     num_heads=12)  # doctest: +SKIP
    """
    paths = [backbone_path] + ([head_path] if head_path is not None else [])
    if probe_layers is None and head_path is not None:
        base = os.path.basename(os.fspath(head_path))
        if "last_layers" in base:
            probe_layers = "last"
        elif "best_layers" in base:
            probe_layers = "best"
    with open_state_dict(*paths) as reader:
        inferred = infer_config(reader)
        return build_model(
            inferred,
            num_heads,
            reader=reader if load_weights else None,
            image_shape=image_shape,
            dtype=dtype,
            probe_layers=probe_layers,
            with_head=has_head(reader.keys())
            if with_head is None
            else (with_head),
            image_size=image_size,
            **kwargs,
        )
