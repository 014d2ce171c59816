"""The AIMv2 key layouts: which one a checkpoint uses, its architecture, the
mapping of its tensors and their assignment.

Two layouts hold the same AIMv2 vision trunk (Fini et al., 2024):

- `"release"`: the hub revisions that apple/ml-aim pins
  (`aim-v2/aim/v2/utils.py`), which load strictly into the release's torch
  classes: `preprocessor.patchifier.proj.weight`,
  `preprocessor.pos_embed` (1, N, D), `trunk.blocks.<i>.attn.qkv.weight`,
  `trunk.blocks.<i>.mlp.fc1/fc2/fc3.weight`, `trunk.post_trunk_norm.weight`.
- `"transformers"`: later hub revisions and Hugging Face transformers'
  `Aimv2VisionModel`: `embeddings.patch_embed.weight`,
  `embeddings.position_embedding.weight` (N, D),
  `encoder.layers.<i>.attention.q_proj/k_proj/v_proj/out_proj.weight`,
  `encoder.layers.<i>.ffn.gate_proj/up_proj/down_proj.weight` (fc1, fc3,
  fc2), `rms_norm.weight`.

The LiT checkpoint nests the image tower under `image_encoder.` (release)
or `vision_model.` (transformers); the backbone takes that trunk, and the
tensors that belong to the LiT model (its pooling head, projections, text
tower, temperature) are left for it. Any other key, a missing one, a shape
that does not fit or a non-finite value is refused with a `ValueError`
that names the key and what was expected. It never imports the models.
"""

import math
import re

import numpy as np

from keras_aim.convert.plans import assign_plan
from keras_aim.convert.plans import check_plan
from keras_aim.convert.readers import StateDictReader
from keras_aim.convert.readers import as_reader
from keras_aim.convert.released_aim import _conv_kernel
from keras_aim.convert.released_aim import _relative_variables

RELEASE = "release"
TRANSFORMERS = "transformers"

# Per layout: the patch-embedding key (how a layout is recognised), the
# LiT prefix, and the keys of the LiT model outside the image trunk.
_LAYOUTS = {
    RELEASE: {
        "probe": "preprocessor.patchifier.proj.weight",
        "lit_prefix": "image_encoder.",
        "lit_keys": re.compile(
            r"image_encoder\.head\..*|text_encoder\..*|image_projector\..*|"
            r"text_projector\..*|log_logit_scale"
        ),
        "block": re.compile(r"trunk\.blocks\.(\d+)\."),
    },
    TRANSFORMERS: {
        "probe": "embeddings.patch_embed.weight",
        "lit_prefix": "vision_model.",
        "lit_keys": re.compile(
            r"vision_model\.head\..*|text_model\..*|visual_projection\..*|"
            r"text_projection\..*|logit_scale"
        ),
        "block": re.compile(r"encoder\.layers\.(\d+)\."),
    },
}


def detect_layout(keys):
    """`(layout, prefix)` of an AIMv2 checkpoint, told apart by its keys.

    Raises:
        ValueError: the keys fit neither layout (naming what each expects),
            or they are an AIM (v1) checkpoint.
    """
    keys = set(keys)
    for layout, spec in _LAYOUTS.items():
        for prefix in ("", spec["lit_prefix"]):
            if prefix + spec["probe"] not in keys:
                continue
            if layout == RELEASE and not any(
                k.startswith(prefix + "trunk.blocks.")
                and k.endswith("fc3.weight")
                for k in keys
            ):
                raise ValueError(
                    "This is an AIM (v1) checkpoint, not an AIMv2 one (its "
                    "blocks have no 'mlp.fc3' SwiGLU tensor); load it with "
                    "keras_aim.AIMBackbone.from_preset."
                )
            return layout, prefix
    raise ValueError(
        "The checkpoint's keys fit neither AIMv2 layout: expected "
        "'preprocessor.patchifier.proj.weight' (the release's layout, or "
        "'image_encoder.' + it for LiT) or 'embeddings.patch_embed.weight' "
        "(transformers' layout, or 'vision_model.' + it); found "
        f"{len(keys)} tensors, e.g. {sorted(keys)[:5]}."
    )


def is_lit_only_key(key, layout):
    """Whether `key` belongs to the LiT model outside its image trunk."""
    return bool(_LAYOUTS[layout]["lit_keys"].fullmatch(key))


def _names(layout, prefix, num_layers, position):
    """`{keras path: [source keys]}` for every trunk variable."""
    if layout == RELEASE:
        stem = {
            "patch_embedding/proj/kernel": [
                "preprocessor.patchifier.proj.weight"
            ],
            "patch_embedding/proj/bias": ["preprocessor.patchifier.proj.bias"],
            "patch_embedding/norm/scale": [
                "preprocessor.patchifier.norm.weight"
            ],
            "post_trunk_norm/scale": ["trunk.post_trunk_norm.weight"],
        }
        if position:
            stem["position_embedding/embeddings"] = ["preprocessor.pos_embed"]
        block = {
            "norm_1/scale": ["norm_1.weight"],
            "attn_qkv/kernel": ["attn.qkv.weight"],
            "attn_proj/kernel": ["attn.proj.weight"],
            "norm_2/scale": ["norm_2.weight"],
            "mlp_fc1/kernel": ["mlp.fc1.weight"],
            "mlp_fc2/kernel": ["mlp.fc2.weight"],
            "mlp_fc3/kernel": ["mlp.fc3.weight"],
        }
        block_prefix = "trunk.blocks.{}."
    else:
        stem = {
            "patch_embedding/proj/kernel": ["embeddings.patch_embed.weight"],
            "patch_embedding/proj/bias": ["embeddings.patch_embed.bias"],
            "patch_embedding/norm/scale": ["embeddings.rms_norm.weight"],
            "post_trunk_norm/scale": ["rms_norm.weight"],
        }
        if position:
            stem["position_embedding/embeddings"] = [
                "embeddings.position_embedding.weight"
            ]
        block = {
            "norm_1/scale": ["rms_norm1.weight"],
            "attn_qkv/kernel": [
                f"attention.{n}_proj.weight" for n in ("q", "k", "v")
            ],
            "attn_proj/kernel": ["attention.out_proj.weight"],
            "norm_2/scale": ["rms_norm2.weight"],
            "mlp_fc1/kernel": ["ffn.gate_proj.weight"],
            "mlp_fc2/kernel": ["ffn.down_proj.weight"],
            "mlp_fc3/kernel": ["ffn.up_proj.weight"],
        }
        block_prefix = "encoder.layers.{}."
    names = {path: [prefix + k for k in keys] for path, keys in stem.items()}
    for i in range(num_layers):
        for path, keys in block.items():
            names[f"block_{i}/{path}"] = [
                prefix + block_prefix.format(i) + k for k in keys
            ]
    return names


def infer_architecture(shapes, layout=None, prefix=None):
    """The AIMv2 architecture from a checkpoint's tensor shapes.

    The head count is not in the tensors (it comes from the hub config or
    a preset). The learned position table gives its grid, which must be
    square (`(1, N, D)` in the release, `(N, D)` in transformers).

    Returns:
        dict with `layout`, `prefix`, `patch_size`, `hidden_dim`,
        `num_layers`, `num_channels`, `intermediate_dim`,
        `position_embedding` (`"absolute"` or `"sincos"`) and
        `position_grid_size` (`None` for sin-cos).
    """
    if isinstance(shapes, StateDictReader):
        shapes = shapes.shapes()
    shapes = {k: tuple(int(s) for s in v) for k, v in shapes.items()}
    if layout is None:
        layout, prefix = detect_layout(shapes)
    spec = _LAYOUTS[layout]
    name = prefix + spec["probe"]
    proj = shapes[name]
    if len(proj) != 4 or proj[2] != proj[3]:
        raise ValueError(
            f"Tensor {name!r} must have shape (hidden_dim, channels, patch, "
            f"patch); got {proj}."
        )
    hidden_dim, num_channels, patch_size = proj[0], proj[1], proj[2]
    pattern = re.compile(re.escape(prefix) + spec["block"].pattern)
    indices = sorted(
        {int(m.group(1)) for k in shapes if (m := pattern.match(k))}
    )
    if not indices or indices != list(range(len(indices))):
        raise ValueError(
            "The transformer blocks must be numbered 0..N-1; found block "
            f"indices {indices} (keys {pattern.pattern!r})."
        )
    names = _names(layout, prefix, 1, False)
    fc1_key = names["block_0/mlp_fc1/kernel"][0]
    fc1 = shapes.get(fc1_key)
    if fc1 is None or len(fc1) != 2 or fc1[1] != hidden_dim:
        raise ValueError(
            f"Tensor {fc1_key!r} must have shape (intermediate_dim, "
            f"{hidden_dim}); got {fc1}."
        )
    position_key = (
        "preprocessor.pos_embed"
        if layout == RELEASE
        else "embeddings.position_embedding.weight"
    )
    table = shapes.get(prefix + position_key)
    grid = None
    if table is not None:
        rows = table[-2] if len(table) >= 2 else 0
        side = math.isqrt(rows)
        if len(table) not in (2, 3) or side * side != rows or rows == 0:
            raise ValueError(
                f"Tensor {prefix + position_key!r} must hold a square grid of "
                f"positions, shape ({'1, ' if layout == RELEASE else ''}"
                f"rows * columns, {hidden_dim}); got {table}."
            )
        grid = (side, side)
    return {
        "layout": layout,
        "prefix": prefix,
        "patch_size": patch_size,
        "hidden_dim": hidden_dim,
        "num_layers": len(indices),
        "num_channels": num_channels,
        "intermediate_dim": fc1[0],
        "position_embedding": "sincos" if grid is None else "absolute",
        "position_grid_size": grid,
    }


def _transform(path, layout):
    """The function from source arrays to the Keras variable's value."""
    if path.endswith("proj/kernel") and path.startswith("patch_embedding"):
        return lambda arrays: _conv_kernel(arrays[0])
    if path.endswith("/kernel"):
        return lambda arrays: np.transpose(np.concatenate(arrays, axis=0))
    if path.endswith("position_embedding/embeddings"):
        return lambda arrays: arrays[0].reshape(arrays[0].shape[-2:])
    return lambda arrays: arrays[0]


def _source_shapes(path, keras_shape, layout, count):
    """The source tensors' expected shapes for a Keras variable."""
    if path.startswith("patch_embedding/proj/kernel"):
        kh, kw, c, d = keras_shape
        return [(d, c, kh, kw)]
    if path.endswith("/kernel"):
        fan_in, fan_out = keras_shape
        return [(fan_out // count, fan_in)] * count
    if path.endswith("position_embedding/embeddings"):
        return [((1,) if layout == RELEASE else ()) + tuple(keras_shape)]
    return [tuple(keras_shape)]


_ROOTS = re.compile(
    r"patch_embedding|position_embedding|block_\d+|post_trunk_norm"
)


def trunk_plan(trunk, layout, prefix, stem=True):
    """`[(variable, source keys, their shapes, transform)]` of a trunk.

    `trunk` is an `AIMv2Backbone` (`stem=False`: a LiT text tower, whose
    blocks and final norm are those of the image trunk, without the patch
    and position embeddings).
    """
    variables = _relative_variables(trunk, _ROOTS)
    if not stem:
        variables = {
            k: v
            for k, v in variables.items()
            if k.startswith(("block_", "post_trunk_norm"))
        }
    names = _names(
        layout,
        prefix,
        trunk.num_layers,
        "position_embedding/embeddings" in variables,
    )
    if not stem:
        names = {k: v for k, v in names.items() if k in variables}
    unmapped = [path for path in names if path not in variables]
    uncovered = [path for path in variables if path not in names]
    if unmapped or uncovered:
        raise ValueError(
            f"{type(trunk).__name__} does not have the AIMv2 variables "
            f"(no variable at {unmapped}; nothing fills {uncovered}); was it "
            "built with the keras_aim layer names?"
        )
    return [
        (
            variables[path],
            sources,
            _source_shapes(
                path, tuple(variables[path].shape), layout, len(sources)
            ),
            _transform(path, layout),
        )
        for path, sources in names.items()
    ]


def describe(backbone, layout):
    """How messages name an `AIMv2Backbone` and the layout it is read in."""
    return (
        f"{type(backbone).__name__}(hidden_dim={backbone.hidden_dim}, "
        f"num_layers={backbone.num_layers}, intermediate_dim="
        f"{backbone.intermediate_dim}, patch_size={backbone.patch_size}, "
        f"position_embedding={backbone.position_embedding_type!r}) in the "
        f"{layout!r} layout"
    )


def load_aimv2_weights(backbone, reader, layout, prefix, dtype=None):
    """Assigns an AIMv2 checkpoint to an `AIMv2Backbone`, tensor by tensor.

    Every key and shape is checked before any data is read; then each
    tensor is read (cast to the variable's dtype, so a bfloat16 model never
    holds a float32 copy), checked for NaN and infinity, transposed to the
    Keras layout and assigned.

    Args:
        backbone: an `AIMv2Backbone` with the keras_aim layer names.
        reader: a `StateDictReader` or a plain `{key: array}` dict.
        layout: `"release"` or `"transformers"` (see `detect_layout`).
        prefix: `""`, or the LiT image-tower prefix.
        dtype: optional dtype to read tensors as. Defaults to each
            variable's own.

    Raises:
        ValueError: listing every missing key, unexpected key and wrongly
            shaped tensor (key, expected shape, found shape), or naming a
            tensor with NaN or infinite values.
    """
    reader = as_reader(reader)
    plan = trunk_plan(backbone, layout, prefix)
    check_plan(
        plan,
        reader,
        lambda key: bool(prefix) and is_lit_only_key(key, layout),
        describe(backbone, layout),
    )
    assign_plan(plan, reader, dtype)
    return backbone


# ---------------------------------------------------------------------------
# The hub config.json: remote-code ("aimv2") or transformers' own
# ("aimv2_vision_model"; LiT: "aimv2" with a "vision_config").
# ---------------------------------------------------------------------------

_CONFIG_KEYS = (
    ("hidden_size", "hidden_dim"),
    ("num_hidden_layers", "num_layers"),
    ("intermediate_size", "intermediate_dim"),
    ("patch_size", "patch_size"),
    ("num_channels", "num_channels"),
)


def is_aimv2_config(config):
    """Whether a hub `config.json` (a dict) describes an AIMv2 model."""
    if not isinstance(config, dict) or "embed_dim" in config:
        return False
    model_type = str(config.get("model_type", "")).lower()
    architectures = " ".join(map(str, config.get("architectures") or []))
    return (
        model_type.startswith("aimv2")
        or "aimv2" in architectures.lower()
        or "vision_config" in config
    )


def vision_config(config):
    """The image tower's part of an AIMv2 hub config."""
    inner = config.get("vision_config")
    return inner if isinstance(inner, dict) else config


def _config_int(config, key, where):
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(
            f"{where}: `{key}`={value!r} must be a positive integer."
        )
    return value


def check_hub_config(config, architecture, where):
    """Raises a `ValueError` where the config contradicts the tensors."""
    config = vision_config(config)
    for key, name in _CONFIG_KEYS:
        if key in config:
            if _config_int(config, key, where) != architecture[name]:
                raise ValueError(
                    f"{where} says {key}={config[key]} but the tensors have "
                    f"{name}={architecture[name]}."
                )
    native = config.get("is_native")
    if native is not None and bool(native) != (
        architecture["position_embedding"] == "sincos"
    ):
        raise ValueError(
            f"{where} says is_native={native} but the checkpoint "
            f"{'has no' if native is False else 'has a'} learned position "
            "table."
        )


def hub_settings(config, where):
    """`(num_heads, image_size, layer_norm_epsilon)` from a hub config;
    each `None` where the config does not say."""
    config = vision_config(config)
    heads = size = epsilon = None
    if "num_attention_heads" in config:
        heads = _config_int(config, "num_attention_heads", where)
    if "image_size" in config:
        size = _config_int(config, "image_size", where)
    if "rms_norm_eps" in config:
        epsilon = config["rms_norm_eps"]
        if (
            isinstance(epsilon, bool)
            or not isinstance(epsilon, (int, float))
            or not 0 < epsilon <= 1
        ):
            raise ValueError(
                f"{where}: `rms_norm_eps`={epsilon!r} must be in (0, 1]."
            )
    return heads, size, epsilon


def hub_architecture(config, where):
    """The architecture a hub config describes (without the tensors)."""
    inner = vision_config(config)
    try:
        architecture = {
            name: _config_int(inner, key, where)
            for key, name in _CONFIG_KEYS
            if key != "num_channels"
        }
    except KeyError as error:
        raise ValueError(
            f"{where} must give hidden_size, num_hidden_layers, "
            f"intermediate_size and patch_size (missing {error})."
        ) from error
    architecture["num_channels"] = (
        _config_int(inner, "num_channels", where)
        if "num_channels" in inner
        else 3
    )
    native = bool(inner.get("is_native", False))
    architecture["position_embedding"] = "sincos" if native else "absolute"
    architecture["position_grid_size"] = None
    if not native:
        side = (
            _config_int(inner, "image_size", where)
            // architecture["patch_size"]
        )
        architecture["position_grid_size"] = (side, side)
    return architecture
