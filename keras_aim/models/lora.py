"""LoRA fine-tuning of the AIM trunk through Keras' own `Dense.enable_lora`.

`AIMBackbone.enable_lora(rank)` adds a low-rank update `A @ B` (scaled by
`alpha / rank`) to the attention (`attn_qkv`, `attn_proj`) and MLP
(`mlp_fc1`, `mlp_fc2`) kernels of the chosen blocks and freezes every
other backbone weight. Only the LoRA matrices are written by
`save_lora_weights` (an HDF5 file keyed by variable path, with the rank,
targets and architecture as attributes) and read back by
`load_lora_weights`, which refuses a file made for another architecture.
"""

import json
import math
import os
import uuid

import keras
import numpy as np

from keras_aim.utils import io_utils
from keras_aim.utils.validation import positive_int

LORA_TARGETS = ("attn_qkv", "attn_proj", "mlp_fc1", "mlp_fc2")
# AIMv2's SwiGLU MLP has a third projection.
AIMV2_LORA_TARGETS = LORA_TARGETS + ("mlp_fc3",)
LORA_ATTRIBUTE = "keras_aim_lora"
ARCHITECTURE_KEYS = (
    "patch_size",
    "hidden_dim",
    "num_layers",
    "num_heads",
    "mlp_ratio",
)


def _targets_of(backbone):
    return tuple(getattr(backbone, "lora_targets", LORA_TARGETS))


def _check_targets(target_layers, allowed=LORA_TARGETS):
    if target_layers is None:
        return list(allowed)
    if isinstance(target_layers, str):
        target_layers = [target_layers]
    try:
        targets = list(target_layers)
    except TypeError:
        targets = [target_layers]
    unknown = [t for t in targets if not isinstance(t, str)]
    unknown += [t for t in targets if t not in allowed]
    if unknown or not targets or len(set(targets)) != len(targets):
        raise ValueError(
            f"`target_layers` must be distinct names among {allowed}; "
            f"got {target_layers!r}."
        )
    return targets


def _check_blocks(blocks, num_layers):
    if blocks is None:
        return list(range(num_layers))
    try:
        given = list(blocks)
    except TypeError:
        given = None
    if given is None or not all(
        isinstance(b, (int, np.integer)) and not isinstance(b, bool)
        for b in given
    ):
        raise ValueError(
            f"`blocks` must be a list of int block indices; got {blocks!r}."
        )
    given = [int(b) for b in given]
    bad = [b for b in given if not 0 <= b < num_layers]
    if bad or not given or len(set(given)) != len(given):
        raise ValueError(
            f"`blocks` must be distinct indices in [0, {num_layers}); got "
            f"{blocks!r}."
        )
    return sorted(given)


def _check_rank(rank, hidden_dim):
    rank = positive_int(rank, "rank")
    if rank > hidden_dim:
        raise ValueError(
            f"`rank`={rank} is above the full rank of the kernels: it must "
            f"be at most hidden_dim={hidden_dim}."
        )
    return rank


def _check_alpha(alpha):
    if alpha is not None and (
        isinstance(alpha, bool)
        or not isinstance(alpha, (int, float))
        or not math.isfinite(alpha)
        or alpha <= 0
    ):
        raise ValueError(
            f"`alpha` must be a positive finite number; got {alpha!r}."
        )
    return alpha


def lora_layers(backbone):
    """`[(block index, target name, Dense)]` with LoRA enabled."""
    found = []
    for index, block in enumerate(backbone.transformer_blocks):
        for name in _targets_of(backbone):
            dense = getattr(block, name)
            if dense.lora_enabled:
                found.append((index, name, dense))
    return found


def enable_lora(backbone, rank, target_layers=None, blocks=None, alpha=None):
    """Implements `AIMBackbone.enable_lora`; returns the LoRA variables."""
    rank = _check_rank(rank, backbone.hidden_dim)
    targets = _check_targets(target_layers, _targets_of(backbone))
    blocks = _check_blocks(blocks, backbone.num_layers)
    alpha = _check_alpha(alpha)
    if lora_layers(backbone):
        raise ValueError(
            "LoRA is already enabled on this backbone; build a new one (or "
            "call load_lora_weights on a fresh backbone) to change it."
        )
    modes = {
        getattr(backbone.transformer_blocks[i], name).quantization_mode
        for i in blocks
        for name in targets
    }
    if "float8" in modes:
        raise ValueError(
            "LoRA on a float8-quantized backbone is not supported by Keras "
            "3.15 (its float8 Dense has no LoRA path); quantize to 'int8' or "
            "'int4' for QLoRA, or enable LoRA on the float backbone."
        )
    for index in blocks:
        block = backbone.transformer_blocks[index]
        for name in targets:
            getattr(block, name).enable_lora(rank, lora_alpha=alpha)
    variables = lora_variables(backbone)
    keep = {id(v) for v in variables}
    for variable in backbone.weights:
        if id(variable) not in keep:
            variable.trainable = False
    backbone.lora_config = {
        "rank": rank,
        "alpha": float(rank if alpha is None else alpha),
        "target_layers": targets,
        "blocks": blocks,
    }
    return variables


def lora_variables(backbone):
    """The LoRA matrices (A and B of every enabled kernel), in order."""
    out = []
    for _, _, dense in lora_layers(backbone):
        out.extend([dense.lora_kernel_a, dense.lora_kernel_b])
    return out


def lora_parameter_count(hidden_dim, mlp_ratio, rank, targets, num_blocks):
    """`rank * (in + out)` summed over the LoRA kernels (the formula)."""
    mlp = int(mlp_ratio * hidden_dim)
    sizes = {
        "attn_qkv": (hidden_dim, 3 * hidden_dim),
        "attn_proj": (hidden_dim, hidden_dim),
        "mlp_fc1": (hidden_dim, mlp),
        "mlp_fc2": (mlp, hidden_dim),
        "mlp_fc3": (hidden_dim, mlp),
    }
    per_block = sum(rank * sum(sizes[t]) for t in targets)
    return per_block * num_blocks


def _architecture(backbone):
    return {key: getattr(backbone, key) for key in ARCHITECTURE_KEYS}


def save_lora_weights(backbone, path):
    """Writes only the LoRA matrices to an HDF5 file, atomically."""
    import h5py

    if not lora_layers(backbone):
        raise ValueError("LoRA is not enabled: call enable_lora(rank) first.")
    path = os.fspath(path)
    if not path.endswith(".h5"):
        raise ValueError(f"A LoRA weights file must end in .h5; got {path!r}.")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{uuid.uuid4().hex[:8]}.tmp.h5")
    info = {"lora": backbone.lora_config, **_architecture(backbone)}
    try:
        with h5py.File(temporary, "w") as f:
            f.attrs[LORA_ATTRIBUTE] = json.dumps(info)
            for variable in lora_variables(backbone):
                f.create_dataset(
                    variable.path, data=keras.ops.convert_to_numpy(variable)
                )
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _read_info(f, path):
    """The file's LoRA attribute, checked against the schema."""
    try:
        info = json.loads(f.attrs[LORA_ATTRIBUTE])
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise ValueError(
            f"{path} is not a keras_aim LoRA weights file ({error})."
        ) from error
    config = info.get("lora") if isinstance(info, dict) else None
    keys = ("rank", "alpha", "target_layers", "blocks")
    if not isinstance(config, dict) or set(config) != set(keys):
        raise ValueError(
            f"{path} is not a keras_aim LoRA weights file: its "
            f"{LORA_ATTRIBUTE!r} attribute must hold a 'lora' object with "
            f"the keys {keys}; got {config!r}."
        )
    return info


def _check_config(backbone, config, path):
    """Validates a file's LoRA settings with `enable_lora`'s own checks."""
    try:
        rank = _check_rank(config["rank"], backbone.hidden_dim)
        targets = _check_targets(config["target_layers"], _targets_of(backbone))
        if isinstance(config["target_layers"], str):
            raise ValueError("`target_layers` must be a list")
        blocks = _check_blocks(config["blocks"], backbone.num_layers)
        alpha = _check_alpha(config["alpha"])
    except ValueError as error:
        raise ValueError(
            f"{path} holds invalid LoRA settings: {error}"
        ) from error
    return rank, targets, blocks, alpha


def _allowed_shapes(backbone, rank, targets):
    mlp = getattr(backbone, "intermediate_dim", None)
    if mlp is None:
        mlp = int(backbone.mlp_ratio * backbone.hidden_dim)
    width = backbone.hidden_dim
    sizes = {
        "attn_qkv": (width, 3 * width),
        "attn_proj": (width, width),
        "mlp_fc1": (width, mlp),
        "mlp_fc2": (mlp, width),
        "mlp_fc3": (width, mlp),
    }
    shapes = set()
    for target in targets:
        fan_in, fan_out = sizes[target]
        shapes |= {(fan_in, rank), (rank, fan_out)}
    return shapes


def load_lora_weights(backbone, path):
    """Reads a `save_lora_weights` file, enabling LoRA first if needed.

    Everything is checked from the file's metadata before any array is
    read or any LoRA variable created: a regular file, the settings'
    schema and ranges (rank at most `hidden_dim`), the architecture, the
    number of datasets, and each dataset's shape, dtype and stored size.
    """
    import h5py

    path = os.fspath(path)
    file_size = io_utils.check_regular_file(path, what="LoRA weights file")
    try:
        f = h5py.File(path, "r")
    except OSError as error:
        raise ValueError(
            f"{path} is not a keras_aim LoRA weights file ({error})."
        ) from error
    with f:
        info = _read_info(f, path)
        ours = _architecture(backbone)
        theirs = {k: info.get(k) for k in ARCHITECTURE_KEYS}
        if ours != theirs:
            differ = ", ".join(
                f"{k}={theirs[k]!r} (this backbone: {ours[k]})"
                for k in ARCHITECTURE_KEYS
                if theirs[k] != ours[k]
            )
            raise ValueError(
                f"The LoRA weights in {path} were made for another "
                f"architecture: {differ}."
            )
        rank, targets, blocks, alpha = _check_config(
            backbone, info["lora"], path
        )
        datasets = io_utils.h5_datasets(f)
        expected = 2 * len(targets) * len(blocks)
        if len(datasets) != expected:
            raise ValueError(
                f"{path} holds {len(datasets)} arrays; its settings "
                f"({len(blocks)} blocks x {len(targets)} targets) need "
                f"{expected}."
            )
        allowed = _allowed_shapes(backbone, rank, targets)
        for name, dataset in datasets.items():
            if dataset.dtype.kind != "f" or tuple(dataset.shape) not in allowed:
                raise ValueError(
                    f"{path}: dataset {name!r} has shape {dataset.shape} and "
                    f"dtype {dataset.dtype}; LoRA matrices of rank {rank} "
                    f"are float with shapes among {sorted(allowed)}."
                )
            io_utils.check_h5_dataset(dataset, path, file_size)
        config = {
            "rank": rank,
            "alpha": float(alpha if alpha is not None else rank),
            "target_layers": targets,
            "blocks": blocks,
        }
        if not lora_layers(backbone):
            enable_lora(backbone, rank, targets, blocks, alpha)
        elif backbone.lora_config != config:
            raise ValueError(
                f"This backbone has LoRA {backbone.lora_config}, but {path} "
                f"holds LoRA {config}."
            )
        variables = lora_variables(backbone)
        missing = [v.path for v in variables if v.path not in datasets]
        if missing:
            raise ValueError(
                f"{path} does not hold this backbone's LoRA matrices (missing "
                f"{missing[:4]})."
            )
        for variable in variables:
            dataset = datasets[variable.path]
            if tuple(dataset.shape) != tuple(variable.shape):
                raise ValueError(
                    f"{path}: {variable.path} has shape {dataset.shape}, "
                    f"expected {tuple(variable.shape)}."
                )
            variable.assign(dataset[()])


def merge_lora_weights(backbone):
    """Folds each `A @ B` update into its kernel, then zeroes `B`.

    The outputs are unchanged; the kernels now hold the fine-tuned weights
    (as Keras' own weight saving writes them), and LoRA stays enabled with
    a zero update, so training can go on from the merged weights.
    """
    layers = lora_layers(backbone)
    if not layers:
        raise ValueError("LoRA is not enabled: nothing to merge.")
    if any(dense.quantization_mode for _, _, dense in layers):
        raise ValueError(
            "The kernels are quantized: merging would need re-quantizing "
            "them. save_to_preset (or model.save) writes the merged, "
            "re-quantized kernels (Keras does it when saving); reload that."
        )
    for _, _, dense in layers:
        merged = keras.ops.convert_to_numpy(dense.kernel)  # base + update
        base = [
            w for w in dense.non_trainable_weights if w.path.endswith("/kernel")
        ]
        base[0].assign(merged.astype(base[0].dtype))
        dense.lora_kernel_b.assign(np.zeros(dense.lora_kernel_b.shape))
