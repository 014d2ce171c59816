"""The pre-norm AIM transformer block with fused-qkv attention."""

import keras
from keras import ops

from keras_aim.layers.activations import exact_gelu
from keras_aim.layers.dense import AIMDense


def split_heads(x, num_heads):
    """Reshapes `(B, T, H * d)` to `(B, T, H, d)`."""
    shape = ops.shape(x)
    return ops.reshape(x, (shape[0], -1, num_heads, x.shape[-1] // num_heads))


def merge_heads(x):
    """Reshapes `(B, T, H, d)` to `(B, T, H * d)`."""
    shape = ops.shape(x)
    return ops.reshape(x, (shape[0], -1, x.shape[-2] * x.shape[-1]))


def _accelerator_platform():
    """`"tpu"`, `"gpu"` or `"cpu"`: where JAX runs (other backends: None)."""
    if keras.backend.backend() != "jax":
        return None
    import jax

    return jax.devices()[0].platform


def flash_attention_setting(platform=None):
    """The `flash_attention` argument for every `ops.dot_product_attention`.

    On TPU, Keras 3.15's flash path (Splash attention, taken by default)
    is wrong for AIM with or without a mask: without one it builds a causal
    mask, so bidirectional attention silently turns causal; with one it
    applies the first sample's mask (`mask[0]`) to the whole batch; and it
    leaves out the `head_dim ** -0.5` scale. On TPU the flash path is
    therefore off (`False`); elsewhere Keras chooses (`None`: on torch its
    SDPA kernels, on JAX GPU cuDNN or XLA). See `docs/accelerators.md`.

    Args:
        platform: `"tpu"`, `"gpu"` or `"cpu"`. Defaults to where JAX runs
            (`None` on other backends).
    """
    platform = _accelerator_platform() if platform is None else platform
    return False if platform == "tpu" else None


def attention_mask_for_heads(attention_mask):
    """Turns a `(B, T, S)` boolean mask into the `(B, 1, T, S)` Keras wants.

    `keras.ops.dot_product_attention` broadcasts a 3-D mask from the right,
    reading the batch axis as the heads axis; the explicit heads axis avoids
    that silent error.
    """
    if attention_mask is None:
        return None
    attention_mask = ops.convert_to_tensor(attention_mask)
    if len(attention_mask.shape) == 3:
        attention_mask = attention_mask[:, None, :, :]
    if len(attention_mask.shape) != 4:
        raise ValueError(
            "`attention_mask` must have shape (batch, queries, keys) or "
            "(batch, 1, queries, keys); got shape "
            f"{tuple(attention_mask.shape)}."
        )
    return ops.cast(attention_mask, "bool")


@keras.saving.register_keras_serializable(package="keras_aim")
class AIMTransformerBlock(keras.layers.Layer):
    """Pre-norm transformer block of the AIM trunk.

    `x += proj(attention(LN1(x)))` then `x += fc2(gelu(fc1(LN2(x))))`, with a
    fused `[q | k | v]` projection, scale `head_dim ** -0.5`, exact (erf)
    GELU, no bias on the projections and LayerNorm epsilon `1e-6`
    (El-Nouby et al., 2024, "Scalable Pre-training of Large Autoregressive
    Image Models").

    Args:
        hidden_dim: int, token width.
        num_heads: int, attention heads; must divide `hidden_dim`.
        mlp_ratio: float, MLP hidden width over `hidden_dim`. Defaults to 4.
        layer_norm_epsilon: float. Defaults to `1e-6`.
        use_bias: bool, bias on qkv, proj, fc1 and fc2. Defaults to `False`.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        x: `(B, N, hidden_dim)` tokens.
        attention_mask: optional boolean `(B, N, N)` mask; `True` where query
            `i` may attend to key `j`. `None` means bidirectional attention.

    Example:

    >>> block = AIMTransformerBlock(hidden_dim=16, num_heads=2)
    >>> tuple(block(keras.ops.zeros((2, 5, 16))).shape)
    (2, 5, 16)
    """

    def __init__(
        self,
        hidden_dim,
        num_heads,
        mlp_ratio=4.0,
        layer_norm_epsilon=1e-6,
        use_bias=False,
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
        self.mlp_ratio = float(mlp_ratio)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.use_bias = bool(use_bias)
        mlp_dim = int(self.mlp_ratio * self.hidden_dim)

        def norm(name):
            return keras.layers.LayerNormalization(
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
        self.mlp_fc1 = dense(mlp_dim, "mlp_fc1")
        self.mlp_fc2 = dense(self.hidden_dim, "mlp_fc2")

    def build(self, input_shape):
        token_shape = tuple(input_shape)
        hidden_shape = token_shape[:-1] + (
            int(self.mlp_ratio * self.hidden_dim),
        )
        self.norm_1.build(token_shape)
        self.attn_qkv.build(token_shape)
        self.attn_proj.build(token_shape)
        self.norm_2.build(token_shape)
        self.mlp_fc1.build(token_shape)
        self.mlp_fc2.build(hidden_shape)
        self.built = True

    def call(self, x, attention_mask=None):
        qkv = self.attn_qkv(self.norm_1(x))
        q, k, v = ops.split(qkv, 3, axis=-1)
        attended = ops.dot_product_attention(
            split_heads(q, self.num_heads),
            split_heads(k, self.num_heads),
            split_heads(v, self.num_heads),
            mask=attention_mask_for_heads(attention_mask),
            flash_attention=flash_attention_setting(),
        )
        x = x + self.attn_proj(merge_heads(attended))
        hidden = exact_gelu(self.mlp_fc1(self.norm_2(x)))
        return x + self.mlp_fc2(hidden)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            layer_norm_epsilon=self.layer_norm_epsilon,
            use_bias=self.use_bias,
        )
        return config
