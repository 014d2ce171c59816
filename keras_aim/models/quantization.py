"""Post-training quantization of keras_aim models with Keras' own kernels.

`model.quantize(mode)` quantizes every projection (each `AIMDense`: the
blocks' `attn_qkv`, `attn_proj`, `mlp_fc1`, `mlp_fc2`, the probe's key,
value and classifier) with Keras' quantized `Dense`: `"int8"` (abs-max
weights per output channel, inputs per token at run time, int8 products),
`"int4"` (weights only, asymmetric in groups of 128 inputs, two values a
byte) or `"float8"` (e4m3 weights and inputs, scales from an amax
history). The patch-embedding conv, the norms and the probe's query stay in
the float dtype (Keras 3.15 quantizes `Dense` and `EinsumDense` only).

Saving: a quantized layer's dtype policy names its mode
(`"int8_from_float32"`) and Keras builds the layer with the quantized
variables from it, so the model config records one policy per quantized
layer in a `keras.dtype_policies.DTypePolicyMap` keyed by layer path (as
keras-hub's `Backbone.get_config` does); `.keras` files and presets then
reload quantized, with the same variables and outputs.
"""

import re

import keras

MODES = ("int8", "int4", "float8")


def projection_layers(model):
    """The model's `Dense` layers (every `AIMDense`), in Keras' order."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.Dense)
    ]


def layer_policy(layer):
    """The layer's own policy (its entry when it holds a policy map)."""
    policy = layer.dtype_policy
    if isinstance(policy, keras.dtype_policies.DTypePolicyMap):
        return policy[layer.path]
    return policy


def quantized_layers(model):
    """`{layer path: quantization mode}` of the quantized layers."""
    return {
        layer.path: layer.quantization_mode
        for layer in model._flatten_layers(include_self=False)
        if layer.quantization_mode is not None
    }


def _selected(layer, filters):
    if filters is None:
        return True
    if isinstance(filters, str):
        return bool(re.search(filters, layer.name))
    if isinstance(filters, (list, tuple)):
        return any(re.search(pattern, layer.name) for pattern in filters)
    if callable(filters):
        return bool(filters(layer))
    raise ValueError(
        "`filters` must be a regex string, a list of them or a callable; "
        f"got {type(filters).__name__}."
    )


def quantize(model, mode=None, config=None, filters=None):
    """Implements `quantize` on the backbones and tasks; see the module."""
    if mode is None and config is not None:
        mode = getattr(config, "mode", None)
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(
            f"`mode` must be one of {MODES}; got mode={mode!r}. (Keras' "
            "'gptq' and 'awq' need a calibration structure that keras_aim "
            "does not define.)"
        )
    done = quantized_layers(model)
    if done:
        path, got = next(iter(done.items()))
        raise ValueError(
            f"{model.name!r} is already quantized ({len(done)} layers, e.g. "
            f"{path!r} in {got!r}); quantize a float model instead (rebuild "
            "it from its float preset)."
        )
    if any(layer.lora_enabled for layer in projection_layers(model)):
        raise ValueError(
            "LoRA is enabled on this model: call merge_lora_weights() and "
            "save, then quantize the reloaded model (QLoRA: quantize first, "
            "then enable_lora)."
        )
    selected = [
        layer for layer in projection_layers(model) if _selected(layer, filters)
    ]
    if not selected:
        raise ValueError(f"`filters` selects no projection; got {filters!r}.")
    ids = {id(layer) for layer in selected}
    # keras.Model.quantize itself (not the instance's wrapper): it retraces
    # the predict/train functions and, on torch, re-tracks the variables.
    keras.Model.quantize(
        model, mode, config=config, filters=lambda layer: id(layer) in ids
    )


def dtype_config(model):
    """The serialized `dtype` for `model.get_config()`.

    A float model records its policy; a quantized one a `DTypePolicyMap`
    with that policy as default and one entry per quantized layer.
    """
    policy = model.dtype_policy
    if isinstance(policy, keras.dtype_policies.DTypePolicyMap):
        policy = policy.default_policy
    entries = {
        layer.path: layer_policy(layer)
        for layer in model._flatten_layers(include_self=False)
        if layer.quantization_mode is not None
    }
    if entries:
        policy = keras.dtype_policies.DTypePolicyMap(
            default_policy=policy, policy_map=entries
        )
    return keras.dtype_policies.serialize(policy)


def is_quantized_config(dtype):
    """Whether a serialized `dtype` is a policy map of quantized layers."""
    return isinstance(dtype, dict) and dtype.get("class_name") == (
        "DTypePolicyMap"
    )


def preset_dtype(saved, override=None):
    """The `dtype` to build a saved model with.

    Args:
        saved: the `dtype` entry of the saved config.
        override: the caller's `dtype`, or `None`.

    Returns:
        `override` for a float model; for a quantized one the saved policy
        map, rebased on `override` (the quantized layers keep their mode and
        compute in `override`, the other layers use it) when one is given.
    """
    if not is_quantized_config(saved):
        return override
    saved = keras.dtype_policies.deserialize(saved)
    if override is None:
        return saved
    new = keras.dtype_policies.get(override)
    if new.quantization_mode is not None or isinstance(
        new, keras.dtype_policies.DTypePolicyMap
    ):
        raise ValueError(
            "A quantized preset takes a float `dtype` (e.g. 'bfloat16'); got "
            f"dtype={override!r}."
        )
    entries = {}
    for path, policy in saved._policy_map.items():
        config = policy.get_config()
        config["source_name"] = new.name
        entries[path] = type(policy).from_config(config)
    return keras.dtype_policies.DTypePolicyMap(
        default_policy=new, policy_map=entries
    )
