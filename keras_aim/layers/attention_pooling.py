"""The attention-pooling head of the AIMv2 LiT image tower."""

import keras
from keras import ops

from keras_aim.layers.dense import AIMDense
from keras_aim.layers.transformer_block import flash_attention_setting
from keras_aim.layers.transformer_block import merge_heads
from keras_aim.layers.transformer_block import split_heads


@keras.saving.register_keras_serializable(package="keras_aim")
class AttentionPooling(keras.layers.Layer):
    """Pools tokens into one vector with one learned query.

    The head of the AIMv2 LiT image tower (the release's
    `AttentionPoolingClassifier` without BatchNorm, one query, average
    pooling over that one query): the learned query (no projection) attends
    over the tokens through bias-free key and value projections, heads
    `num_heads`, scale `head_dim ** -0.5`; a linear layer with bias maps the
    pooled vector to `output_dim`.

    Args:
        hidden_dim: int, token width.
        num_heads: int, attention heads; must divide `hidden_dim`.
        output_dim: int, width of the output. Defaults to `hidden_dim`.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        tokens: `(B, N, hidden_dim)` tokens.

    Example:

    >>> pool = AttentionPooling(hidden_dim=16, num_heads=2)
    >>> tuple(pool(keras.ops.ones((2, 5, 16))).shape)
    (2, 16)
    """

    def __init__(self, hidden_dim, num_heads, output_dim=None, **kwargs):
        super().__init__(**kwargs)
        if num_heads <= 0 or hidden_dim % num_heads != 0:
            raise ValueError(
                f"`num_heads` must be a positive divisor of `hidden_dim`; got "
                f"num_heads={num_heads} for hidden_dim={hidden_dim}."
            )
        self.hidden_dim = int(hidden_dim)
        self.num_heads = int(num_heads)
        self.output_dim = int(output_dim or hidden_dim)

        def dense(units, name, use_bias=False):
            return AIMDense(
                units, use_bias=use_bias, dtype=self.dtype_policy, name=name
            )

        self.key = dense(self.hidden_dim, "key")
        self.value = dense(self.hidden_dim, "value")
        self.output_projection = dense(
            self.output_dim, "output_projection", use_bias=True
        )

    def build(self, input_shape):
        token_shape = tuple(input_shape)
        self.query = self.add_weight(
            name="query",
            shape=(1, 1, self.hidden_dim),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )
        self.key.build(token_shape)
        self.value.build(token_shape)
        self.output_projection.build(token_shape[:1] + (self.hidden_dim,))
        self.built = True

    def call(self, tokens):
        batch = ops.shape(tokens)[0]
        query = ops.cast(self.query, tokens.dtype)
        query = ops.broadcast_to(query, (batch, 1, self.hidden_dim))
        pooled = ops.dot_product_attention(
            split_heads(query, self.num_heads),
            split_heads(self.key(tokens), self.num_heads),
            split_heads(self.value(tokens), self.num_heads),
            flash_attention=flash_attention_setting(),
        )
        return self.output_projection(merge_heads(pooled)[:, 0, :])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            num_heads=self.num_heads,
            output_dim=self.output_dim,
        )
        return config
