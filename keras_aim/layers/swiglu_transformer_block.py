"""The pre-norm AIMv2 transformer block: RMSNorm, attention, SwiGLU MLP."""

import keras
from keras import ops

from keras_aim.layers.dense import AIMDense
from keras_aim.layers.transformer_block import attention_mask_for_heads
from keras_aim.layers.transformer_block import flash_attention_setting
from keras_aim.layers.transformer_block import merge_heads
from keras_aim.layers.transformer_block import split_heads


@keras.saving.register_keras_serializable(package="keras_aim")
class AIMv2TransformerBlock(keras.layers.Layer):
    """Pre-norm transformer block of the AIMv2 trunk.

    `x += proj(attention(RMSNorm1(x)))` then
    `x += fc2(silu(fc1(h)) * fc3(h))` with `h = RMSNorm2(x)`: a fused
    `[q | k | v]` projection, scale `head_dim ** -0.5`, a SwiGLU MLP, no
    bias on any projection and RMSNorm epsilon `1e-5`, as in the AIMv2
    release (Fini et al., 2024, "Multimodal Autoregressive Pre-training of
    Large Vision Encoders"). Variable paths match `AIMTransformerBlock`
    (`attn_qkv`, `attn_proj`, `mlp_fc1`, `mlp_fc2`) plus `mlp_fc3`, so
    LoRA, quantization and the layout map treat both alike.

    Args:
        hidden_dim: int, token width.
        num_heads: int, attention heads; must divide `hidden_dim`.
        intermediate_dim: int, width of the SwiGLU hidden layer.
        layer_norm_epsilon: float, the RMSNorm epsilon. Defaults to `1e-5`.
        use_bias: bool, bias on every projection. Defaults to `False`.
        causal: bool, causal attention (query `i` sees keys `j <= i`), as
            in the LiT text tower. Defaults to `False` (bidirectional).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        x: `(B, N, hidden_dim)` tokens.
        attention_mask: optional boolean `(B, N, N)` mask; `True` where query
            `i` may attend to key `j`. `None` means bidirectional attention
            (causal with `causal=True`, which a mask narrows further).

    Example:

    >>> block = AIMv2TransformerBlock(hidden_dim=16, num_heads=2,
    ...                               intermediate_dim=40)
    >>> tuple(block(keras.ops.zeros((2, 5, 16))).shape)
    (2, 5, 16)
    """

    def __init__(
        self,
        hidden_dim,
        num_heads,
        intermediate_dim,
        layer_norm_epsilon=1e-5,
        use_bias=False,
        causal=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_heads <= 0 or hidden_dim % num_heads != 0:
            raise ValueError(
                f"`num_heads` must be a positive divisor of `hidden_dim`; got "
                f"num_heads={num_heads} for hidden_dim={hidden_dim}."
            )
        self.hidden_dim = int(hidden_dim)
        self.num_heads = int(num_heads)
        self.intermediate_dim = int(intermediate_dim)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.use_bias = bool(use_bias)
        self.causal = bool(causal)

        def norm(name):
            return keras.layers.RMSNormalization(
                epsilon=self.layer_norm_epsilon,
                dtype=self.dtype_policy,
                name=name,
            )

        def dense(units, name):
            return AIMDense(
                units,
                use_bias=self.use_bias,
                kernel_initializer="glorot_uniform",
                dtype=self.dtype_policy,
                name=name,
            )

        self.norm_1 = norm("norm_1")
        self.attn_qkv = dense(3 * self.hidden_dim, "attn_qkv")
        self.attn_proj = dense(self.hidden_dim, "attn_proj")
        self.norm_2 = norm("norm_2")
        self.mlp_fc1 = dense(self.intermediate_dim, "mlp_fc1")
        self.mlp_fc3 = dense(self.intermediate_dim, "mlp_fc3")
        self.mlp_fc2 = dense(self.hidden_dim, "mlp_fc2")

    def build(self, input_shape):
        token_shape = tuple(input_shape)
        hidden_shape = token_shape[:-1] + (self.intermediate_dim,)
        for layer in (self.norm_1, self.attn_qkv, self.attn_proj):
            layer.build(token_shape)
        for layer in (self.norm_2, self.mlp_fc1, self.mlp_fc3):
            layer.build(token_shape)
        self.mlp_fc2.build(hidden_shape)
        self.built = True

    def call(self, x, attention_mask=None):
        qkv = self.attn_qkv(self.norm_1(x))
        q, k, v = ops.split(qkv, 3, axis=-1)
        mask = attention_mask_for_heads(attention_mask)
        if self.causal:
            positions = ops.arange(0, ops.shape(x)[1], 1, dtype="int32")
            causal = positions[None, :] <= positions[:, None]
            causal = causal[None, None, :, :]
            mask = causal if mask is None else ops.logical_and(mask, causal)
        attended = ops.dot_product_attention(
            split_heads(q, self.num_heads),
            split_heads(k, self.num_heads),
            split_heads(v, self.num_heads),
            mask=mask,
            flash_attention=flash_attention_setting(),
        )
        x = x + self.attn_proj(merge_heads(attended))
        h = self.norm_2(x)
        hidden = ops.silu(self.mlp_fc1(h)) * self.mlp_fc3(h)
        return x + self.mlp_fc2(hidden)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            num_heads=self.num_heads,
            intermediate_dim=self.intermediate_dim,
            layer_norm_epsilon=self.layer_norm_epsilon,
            use_bias=self.use_bias,
        )
        if self.causal:
            config["causal"] = True
        return config
