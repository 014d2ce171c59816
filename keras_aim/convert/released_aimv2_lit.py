"""The AIMv2 LiT checkpoint (`apple/aimv2-large-patch14-224-lit`) in both
key layouts: its text tower's architecture, the mapping of every tensor
and the checked assignment into an `AIMv2LiT`.

Beside the image trunk (`released_aimv2`, under `image_encoder.` or
`vision_model.`), the checkpoint holds, in the release's layout and in
transformers' `Aimv2Model`:

- the pooling head: `image_encoder.head.{cls_token, k, v, linear}`, or
  `vision_model.head.{cls_token, k_proj, v_proj, output_proj}`;
- the token and position tables:
  `text_encoder.preprocessor.{text_embedding.weight, positional_embedding}`,
  or `text_model.embeddings.{token,position}_embedding.weight`;
- the text blocks and final norm: `text_encoder.trunk.blocks.<i>.*` and
  `.post_trunk_norm.weight`, or `text_model.encoder.layers.<i>.*` and
  `text_model.rms_norm.weight` (the image trunk's key names);
- the projections: `image_projector.weight`, `text_projector.weight`, or
  `visual_projection.weight`, `text_projection.weight`;
- the temperature: `log_logit_scale`, or `logit_scale`.

Every tensor is checked (key, shape) before any is read; any key that no
variable takes is refused. It never imports the models.
"""

import re

import numpy as np

from keras_aim.convert.plans import assign_plan
from keras_aim.convert.plans import check_plan
from keras_aim.convert.readers import StateDictReader
from keras_aim.convert.readers import as_reader
from keras_aim.convert.released_aim import _relative_variables
from keras_aim.convert.released_aimv2 import _LAYOUTS
from keras_aim.convert.released_aimv2 import RELEASE
from keras_aim.convert.released_aimv2 import _config_int
from keras_aim.convert.released_aimv2 import _names
from keras_aim.convert.released_aimv2 import describe
from keras_aim.convert.released_aimv2 import detect_layout
from keras_aim.convert.released_aimv2 import trunk_plan
from keras_aim.models.aimv2.aimv2_presets import PRESETS

LIT_PRESET = "aimv2_large_patch14_224_lit"
TEXT_PREFIX = {RELEASE: "text_encoder.", "transformers": "text_model."}

# `{LiT layer: {its variable path: source key}}` for each layout.
_HEAD_KEYS = {
    RELEASE: {
        "image_head": {
            "query": "image_encoder.head.cls_token",
            "key/kernel": "image_encoder.head.k.weight",
            "value/kernel": "image_encoder.head.v.weight",
            "output_projection/kernel": "image_encoder.head.linear.weight",
            "output_projection/bias": "image_encoder.head.linear.bias",
        },
        "image_projection": {"kernel": "image_projector.weight"},
        "text_projection": {"kernel": "text_projector.weight"},
        "logit_scale": {"log_logit_scale": "log_logit_scale"},
        "text_embedding": {
            "token_embedding/embeddings": (
                "text_encoder.preprocessor.text_embedding.weight"
            ),
            "position_embedding": (
                "text_encoder.preprocessor.positional_embedding"
            ),
        },
    },
    "transformers": {
        "image_head": {
            "query": "vision_model.head.cls_token",
            "key/kernel": "vision_model.head.k_proj.weight",
            "value/kernel": "vision_model.head.v_proj.weight",
            "output_projection/kernel": "vision_model.head.output_proj.weight",
            "output_projection/bias": "vision_model.head.output_proj.bias",
        },
        "image_projection": {"kernel": "visual_projection.weight"},
        "text_projection": {"kernel": "text_projection.weight"},
        "logit_scale": {"log_logit_scale": "logit_scale"},
        "text_embedding": {
            "token_embedding/embeddings": (
                "text_model.embeddings.token_embedding.weight"
            ),
            "position_embedding": (
                "text_model.embeddings.position_embedding.weight"
            ),
        },
    },
}


def _shape(shapes, key, rank, what):
    shape = shapes.get(key)
    if shape is None or len(shape) != rank:
        raise ValueError(
            f"Tensor {key!r} must have shape {what}; got "
            f"{'no such tensor' if shape is None else shape}."
        )
    return shape


def infer_text_architecture(shapes, layout=None):
    """The text tower and projection sizes of a LiT checkpoint.

    Returns:
        dict with `layout`, `vocabulary_size`, `hidden_dim`, `num_layers`,
        `intermediate_dim`, `max_sequence_length` and `projection_dim`.

    Raises:
        ValueError: the checkpoint is a vision trunk alone (no text tower),
            or a text tensor has a shape that does not fit the others.
    """
    if isinstance(shapes, StateDictReader):
        shapes = shapes.shapes()
    shapes = {k: tuple(int(s) for s in v) for k, v in shapes.items()}
    if layout is None:
        layout, prefix = detect_layout(shapes)
        if not prefix:
            raise ValueError(
                "The checkpoint is an AIMv2 image trunk without a text tower "
                f"(no '{_LAYOUTS[layout]['lit_prefix']}' keys); load it with "
                "keras_aim.AIMv2Backbone.from_preset."
            )
    keys = _HEAD_KEYS[layout]
    stem = keys["text_embedding"]
    vocabulary, width = _shape(
        shapes,
        stem["token_embedding/embeddings"],
        2,
        "(vocabulary_size, hidden_dim)",
    )
    length, _ = _shape(
        shapes,
        stem["position_embedding"],
        2,
        f"(max_sequence_length, {width})",
    )
    prefix = TEXT_PREFIX[layout]
    pattern = re.compile(re.escape(prefix) + _LAYOUTS[layout]["block"].pattern)
    indices = sorted(
        {int(m.group(1)) for k in shapes if (m := pattern.match(k))}
    )
    if not indices or indices != list(range(len(indices))):
        raise ValueError(
            "The text tower's blocks must be numbered 0..N-1; found block "
            f"indices {indices} (keys {pattern.pattern!r})."
        )
    fc1_key = _names(layout, prefix, 1, False)["block_0/mlp_fc1/kernel"][0]
    intermediate, _ = _shape(shapes, fc1_key, 2, f"(intermediate_dim, {width})")
    projection, _ = _shape(
        shapes,
        keys["text_projection"]["kernel"],
        2,
        f"(projection_dim, {width})",
    )
    return {
        "layout": layout,
        "vocabulary_size": vocabulary,
        "hidden_dim": width,
        "num_layers": len(indices),
        "intermediate_dim": intermediate,
        "max_sequence_length": length,
        "projection_dim": projection,
    }


def _kernel(arrays):
    return np.transpose(arrays[0])


def _same(arrays):
    return arrays[0]


def lit_plan(lit, layout):
    """The assignment plan of every variable of an `AIMv2LiT`."""
    image_prefix = _LAYOUTS[layout]["lit_prefix"]
    plan = trunk_plan(lit.image_encoder, layout, image_prefix)
    plan += trunk_plan(
        lit.text_encoder, layout, TEXT_PREFIX[layout], stem=False
    )
    layers = {
        "image_head": lit.image_head,
        "image_projection": lit.image_projection,
        "text_projection": lit.text_projection,
        "logit_scale": lit.logit_layer,
        "text_embedding": lit.text_encoder.text_embedding,
    }
    for name, keys in _HEAD_KEYS[layout].items():
        variables = _relative_variables(layers[name])
        if sorted(variables) != sorted(keys):
            raise ValueError(
                f"The LiT layer {name!r} has variables {sorted(variables)}; "
                f"expected {sorted(keys)} (the keras_aim layer names)."
            )
        for path, key in keys.items():
            variable = variables[path]
            shape = tuple(variable.shape)
            if path.endswith("kernel"):
                plan.append((variable, [key], [shape[::-1]], _kernel))
            else:
                plan.append((variable, [key], [shape], _same))
    return plan


def load_lit_weights(lit, reader, layout, dtype=None):
    """Assigns a LiT checkpoint to an `AIMv2LiT`, tensor by tensor.

    Every key and shape of both towers, the head, the projections and the
    temperature is checked before any data is read (nothing half-loaded);
    then each tensor is read, checked for NaN and infinity and assigned.

    Raises:
        ValueError: listing every missing key, unexpected key and wrongly
            shaped tensor, or naming a tensor with NaN or infinite values.
    """
    reader = as_reader(reader)
    plan = lit_plan(lit, layout)
    text = lit.text_encoder
    what = (
        f"{type(lit).__name__}(image tower "
        f"{describe(lit.image_encoder, layout)}; text tower hidden_dim="
        f"{text.hidden_dim}, num_layers="
        f"{text.num_layers}, vocabulary_size={text.vocabulary_size}, "
        f"max_sequence_length={text.max_sequence_length}; projection_dim="
        f"{lit.projection_dim})"
    )
    check_plan(plan, reader, lambda key: False, what)
    assign_plan(plan, reader, dtype)
    return lit


# ---------------------------------------------------------------------------
# The LiT hub config: transformers' `Aimv2Config` has a `text_config`.
# ---------------------------------------------------------------------------

_TEXT_CONFIG_KEYS = (
    ("hidden_size", "hidden_dim"),
    ("num_hidden_layers", "num_layers"),
    ("intermediate_size", "intermediate_dim"),
    ("vocab_size", "vocabulary_size"),
    ("max_position_embeddings", "max_sequence_length"),
)


def text_config(config):
    """The text tower's part of a LiT hub config (`{}` if none)."""
    inner = (config or {}).get("text_config")
    return inner if isinstance(inner, dict) else {}


def check_text_config(config, architecture, where):
    """Raises a `ValueError` where the config contradicts the tensors."""
    inner = text_config(config)
    for key, name in _TEXT_CONFIG_KEYS:
        if (
            key in inner
            and _config_int(inner, key, where) != architecture[name]
        ):
            raise ValueError(
                f"{where} says text_config.{key}={inner[key]} but the tensors "
                f"have {name}={architecture[name]}."
            )
    if "projection_dim" in (config or {}):
        value = _config_int(config, "projection_dim", where)
        if value != architecture["projection_dim"]:
            raise ValueError(
                f"{where} says projection_dim={value} but the tensors have "
                f"projection_dim={architecture['projection_dim']}."
            )


def text_settings(config, where):
    """`(num_heads, eos_token_id, max_logit_scale)` from a LiT hub config;
    each `None` where the config does not say."""
    inner = text_config(config)
    heads = eos = scale = None
    if "num_attention_heads" in inner:
        heads = _config_int(inner, "num_attention_heads", where)
    if inner.get("eos_token_id") is not None:
        eos = inner["eos_token_id"]
        if isinstance(eos, bool) or not isinstance(eos, int) or eos < 0:
            raise ValueError(
                f"{where}: text_config.eos_token_id={eos!r} must be a "
                "non-negative integer."
            )
    if "max_logit_scale" in (config or {}):
        scale = config["max_logit_scale"]
        if (
            isinstance(scale, bool)
            or not isinstance(scale, (int, float))
            or not 1 <= scale < float("inf")
        ):
            raise ValueError(
                f"{where}: max_logit_scale={scale!r} must be a number >= 1."
            )
    return heads, eos, scale


def text_architecture_from_config(config, where):
    """The text tower a LiT hub config describes (without the tensors)."""
    inner = text_config(config)
    try:
        architecture = {
            name: _config_int(inner, key, where)
            for key, name in _TEXT_CONFIG_KEYS
        }
        architecture["projection_dim"] = _config_int(
            config, "projection_dim", where
        )
    except KeyError as error:
        raise ValueError(
            f"{where} must give text_config (hidden_size, num_hidden_layers, "
            "intermediate_size, vocab_size, max_position_embeddings) and "
            f"projection_dim to build a LiT model without its weights "
            f"(missing {error})."
        ) from error
    return architecture


def released_text_heads(hidden_dim):
    """The head count of the released LiT text tower's width, or `None`."""
    text = PRESETS[LIT_PRESET]["lit"]["text"]
    return text["num_heads"] if hidden_dim == text["hidden_dim"] else None


def released_eos_token_id():
    """The end-of-text id of CLIP's BPE vocabulary (the released tower)."""
    return PRESETS[LIT_PRESET]["lit"]["text"]["eos_token_id"]
