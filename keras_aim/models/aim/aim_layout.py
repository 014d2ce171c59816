"""How each AIM weight is sharded over a `batch x model` device mesh: the
rules of `keras_aim.distribution.layout` for this family (pure data).

Megatron-style tensor parallelism on the `model` axis, with the other
dimension of each large kernel sharded on the `batch` axis (as keras-hub's
layout maps do, so that a 7B model's weights are spread over every device).
"""

SHARDED = "sharded"
REPLICATED = "replicated"


def layout_rules(model_dim, data_dim):
    """`[(pattern, axes, kind)]` for every AIM variable path."""
    column = (data_dim, model_dim)
    row = (model_dim, data_dim)
    return [
        # The trunk.
        (r"(.*/)?block_\d+/(attn_qkv|mlp_fc1)/kernel", column, SHARDED),
        (r"(.*/)?block_\d+/(attn_proj|mlp_fc2)/kernel", row, SHARDED),
        (
            r"(.*/)?block_\d+/(attn_qkv|attn_proj|mlp_fc1|mlp_fc2)/"
            r"(bias|lora_kernel_a|lora_kernel_b)",
            None,
            REPLICATED,
        ),
        (r"(.*/)?block_\d+/norm_[12]/(gamma|beta)", None, REPLICATED),
        (r"(.*/)?patch_embedding/.*", None, REPLICATED),
        (r"(.*/)?post_trunk_norm/(gamma|beta)", None, REPLICATED),
        # The pixel head of pre-training.
        (r"(.*/)?pixel_head/block_\d+_fc1/kernel", column, SHARDED),
        (r"(.*/)?pixel_head/(proj|block_\d+_fc2|output)/kernel", row, SHARDED),
        (r"(.*/)?pixel_head/(proj|output)/bias", None, REPLICATED),
        (r"(.*/)?pixel_head/(block_\d+_)?norm/(gamma|beta)", None, REPLICATED),
        # The attentive and linear probes.
        (r"(.*/)?probe_head/(key|value)/kernel", column, SHARDED),
        (r"(.*/)?probe_head/classifier/kernel", row, SHARDED),
        (r"(.*/)?probe_head/classifier/bias", None, REPLICATED),
        (r"(.*/)?probe_head/query", None, REPLICATED),
        (
            r"(.*/)?probe_head/batch_norm/(moving_mean|moving_variance)",
            None,
            REPLICATED,
        ),
        (r"(.*/)?[^/]*seed_generator[^/]*/.*", None, REPLICATED),
    ]
