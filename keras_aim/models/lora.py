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
import os
import uuid

import keras
import numpy as np

from keras_aim.utils.validation import positive_int

LORA_TARGETS = ("attn_qkv", "attn_proj", "mlp_fc1", "mlp_fc2")
LORA_ATTRIBUTE = "keras_aim_lora"
ARCHITECTURE_KEYS = (
    "patch_size",
    "hidden_dim",
    "num_layers",
    "num_heads",
    "mlp_ratio",
)


def _check_targets(target_layers):
    if target_layers is None:
        return list(LORA_TARGETS)
    if isinstance(target_layers, str):
        target_layers = [target_layers]
    targets = list(target_layers)
    unknown = [t for t in targets if t not in LORA_TARGETS]
    if unknown or not targets or len(set(targets)) != len(targets):
        raise ValueError(
            f"`target_layers` must be distinct names among {LORA_TARGETS}; "
            f"got {target_layers!r}."
        )
    return targets


def _check_blocks(blocks, num_layers):
    if blocks is None:
        return list(range(num_layers))
    blocks = [int(b) for b in blocks]
    bad = [b for b in blocks if not 0 <= b < num_layers]
    if bad or not blocks or len(set(blocks)) != len(blocks):
        raise ValueError(
            f"`blocks` must be distinct indices in [0, {num_layers}); got "
            f"{blocks!r}."
        )
    return sorted(blocks)


def lora_layers(backbone):
    """`[(block index, target name, Dense)]` with LoRA enabled."""
    found = []
    for index, block in enumerate(backbone.transformer_blocks):
        for name in LORA_TARGETS:
            dense = getattr(block, name)
            if dense.lora_enabled:
                found.append((index, name, dense))
    return found


def enable_lora(backbone, rank, target_layers=None, blocks=None, alpha=None):
    """Implements `AIMBackbone.enable_lora`; returns the LoRA variables."""
    rank = positive_int(rank, "rank")
    targets = _check_targets(target_layers)
    blocks = _check_blocks(blocks, backbone.num_layers)
    if alpha is not None and (
        isinstance(alpha, bool)
        or not isinstance(alpha, (int, float))
        or alpha <= 0
    ):
        raise ValueError(f"`alpha` must be a positive number; got {alpha!r}.")
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


def load_lora_weights(backbone, path):
    """Reads a `save_lora_weights` file, enabling LoRA first if needed."""
    import h5py

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"LoRA weights file {path} does not exist.")
    try:
        with h5py.File(path, "r") as f:
            info = json.loads(f.attrs[LORA_ATTRIBUTE])
            arrays = {}
            f.visititems(
                lambda name, item: (
                    arrays.__setitem__(name, item[()])
                    if isinstance(item, h5py.Dataset)
                    else None
                )
            )
    except (OSError, KeyError, ValueError) as error:
        raise ValueError(
            f"{path} is not a keras_aim LoRA weights file ({error})."
        ) from error
    ours = _architecture(backbone)
    theirs = {k: info.get(k) for k in ARCHITECTURE_KEYS}
    if ours != theirs:
        differ = ", ".join(
            f"{k}={theirs[k]} (this backbone: {ours[k]})"
            for k in ARCHITECTURE_KEYS
            if theirs[k] != ours[k]
        )
        raise ValueError(
            f"The LoRA weights in {path} were made for another "
            f"architecture: {differ}."
        )
    config = info["lora"]
    if not lora_layers(backbone):
        enable_lora(
            backbone,
            config["rank"],
            config["target_layers"],
            config["blocks"],
            config["alpha"],
        )
    elif backbone.lora_config != config:
        raise ValueError(
            f"This backbone has LoRA {backbone.lora_config}, but {path} holds "
            f"LoRA {config}."
        )
    variables = lora_variables(backbone)
    missing = [v.path for v in variables if v.path not in arrays]
    if missing or len(arrays) != len(variables):
        raise ValueError(
            f"{path} does not hold this backbone's LoRA matrices (missing "
            f"{missing[:4]}, {len(arrays)} arrays for {len(variables)})."
        )
    for variable in variables:
        value = np.asarray(arrays[variable.path])
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(
                f"{path}: {variable.path} has shape {value.shape}, expected "
                f"{tuple(variable.shape)}."
            )
        variable.assign(value)


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
