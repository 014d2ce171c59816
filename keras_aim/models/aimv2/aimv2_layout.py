"""How each AIMv2 weight is sharded over a `batch x model` device mesh: the
rules that `keras_aim.distribution.layout` adds to the AIM ones (pure data).

AIMv2's trunk uses the AIM variable paths (`block_<i>/attn_qkv`,
`attn_proj`, `mlp_fc1`, `mlp_fc2`, `patch_embedding/...`), which the AIM
rules already shard. Its own variables: the SwiGLU `mlp_fc3` (column-
parallel, like `mlp_fc1`, so that `silu(fc1 x) * fc3 x` stays local to
each shard), the RMSNorm `scale`s and the learned position table
(replicated). The LiT model's text tower uses the same block paths; its
own variables: the pooling head's key and value (column-parallel, as the
probe's) and output (row-parallel), both projections (column-parallel),
the token table (vocabulary on `model`), the query, the text position
table, the temperature and a zero-shot head's class embeddings
(replicated).
"""

SHARDED = "sharded"
REPLICATED = "replicated"


def layout_rules(model_dim, data_dim):
    """`[(pattern, axes, kind)]` for the AIMv2-only variable paths."""
    column = (data_dim, model_dim)
    row = (model_dim, data_dim)
    return [
        (r"(.*/)?block_\d+/mlp_fc3/kernel", column, SHARDED),
        (
            r"(.*/)?block_\d+/mlp_fc3/(bias|lora_kernel_a|lora_kernel_b)",
            None,
            REPLICATED,
        ),
        (r"(.*/)?block_\d+/norm_[12]/scale", None, REPLICATED),
        (r"(.*/)?post_trunk_norm/scale", None, REPLICATED),
        (r"(.*/)?position_embedding/embeddings", None, REPLICATED),
        # AIMv2 LiT.
        (r"(.*/)?image_head/(key|value)/kernel", column, SHARDED),
        (r"(.*/)?image_head/output_projection/kernel", row, SHARDED),
        (
            r"(.*/)?image_head/(query|output_projection/bias|"
            r"(key|value|output_projection)/lora_kernel_[ab])",
            None,
            REPLICATED,
        ),
        (r"(.*/)?(image|text)_projection/kernel", column, SHARDED),
        (
            r"(.*/)?text_embedding/token_embedding/embeddings",
            (model_dim, data_dim),
            SHARDED,
        ),
        (r"(.*/)?text_embedding/position_embedding", None, REPLICATED),
        (r"(.*/)?logit_scale/log_logit_scale", None, REPLICATED),
        (r"(.*/)?classes/class_embeddings", None, REPLICATED),
    ]
