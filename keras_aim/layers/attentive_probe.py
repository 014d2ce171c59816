"""The attentive-probe classification head of the AIM release."""

import keras
from keras import ops

from keras_aim.layers.dense import AIMDense
from keras_aim.layers.transformer_block import flash_attention_setting
from keras_aim.layers.transformer_block import merge_heads
from keras_aim.layers.transformer_block import split_heads


def first_feature_shape(input_shape):
    """The shape of one feature map, from one shape or a list of them.

    A saved `build_config` turns a shape tuple into a list, so a list of
    ints is one shape and a list of lists is several.
    """
    if isinstance(input_shape, (list, tuple)) and input_shape:
        if isinstance(input_shape[0], (list, tuple)):
            return tuple(input_shape[0])
    return tuple(input_shape)


def average_features(features):
    """The mean of a list of `(B, N, D)` block outputs (or one of them)."""
    if not isinstance(features, (list, tuple)):
        return features
    x = features[0]
    for other in features[1:]:
        x = x + other
    if len(features) > 1:
        x = x / float(len(features))
    return x


@keras.saving.register_keras_serializable(package="keras_aim")
class AIMAttentivePooling(keras.layers.Layer):
    """Attentive probe: averages block outputs, pools them with one query.

    The chosen blocks' raw outputs are averaged, normalised by a BatchNorm
    without scale or offset (epsilon `1e-6`, running statistics at
    inference), and pooled by one learned query that attends over the tokens
    through bias-free key and value projections (no query projection). A
    bias-free linear layer gives the logits. This matches the released AIM
    heads (El-Nouby et al., 2024).

    Args:
        hidden_dim: int, token width.
        num_heads: int, attention heads; must divide `hidden_dim`.
        num_classes: int, number of output logits.
        batch_norm_epsilon: float. Defaults to `1e-6`.
        batch_norm_momentum: float, Keras convention (`0.9` equals PyTorch's
            `momentum=0.1`). Defaults to `0.9`.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        features: one `(B, N, hidden_dim)` tensor or a list of them (averaged).
        training: bool, BatchNorm uses batch statistics when `True`.

    Example:

    >>> head = AIMAttentivePooling(hidden_dim=16, num_heads=2, num_classes=3)
    >>> tuple(head([keras.ops.ones((2, 5, 16))] * 2).shape)
    (2, 3)
    """

    def __init__(
        self,
        hidden_dim,
        num_heads,
        num_classes,
        batch_norm_epsilon=1e-6,
        batch_norm_momentum=0.9,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_heads <= 0 or hidden_dim % num_heads != 0:
            raise ValueError(
                f"`num_heads` must be a positive divisor of `hidden_dim`; got "
                f"num_heads={num_heads} for hidden_dim={hidden_dim}."
            )
        if int(num_classes) <= 0:
            raise ValueError(
                f"`num_classes` must be a positive integer; got {num_classes}."
            )
        self.hidden_dim = int(hidden_dim)
        self.num_heads = int(num_heads)
        self.num_classes = int(num_classes)
        self.batch_norm_epsilon = float(batch_norm_epsilon)
        self.batch_norm_momentum = float(batch_norm_momentum)
        self.batch_norm = keras.layers.BatchNormalization(
            epsilon=self.batch_norm_epsilon,
            momentum=self.batch_norm_momentum,
            center=False,
            scale=False,
            dtype=self.dtype_policy,
            name="batch_norm",
        )
        self.key = AIMDense(
            self.hidden_dim, use_bias=False, dtype=self.dtype_policy, name="key"
        )
        self.value = AIMDense(
            self.hidden_dim,
            use_bias=False,
            dtype=self.dtype_policy,
            name="value",
        )
        self.classifier = AIMDense(
            self.num_classes,
            use_bias=False,
            dtype=self.dtype_policy,
            name="classifier",
        )

    def build(self, input_shape):
        input_shape = first_feature_shape(input_shape)
        token_shape = tuple(input_shape)
        self.query = self.add_weight(
            name="query",
            shape=(1, 1, self.hidden_dim),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        )
        self.batch_norm.build(token_shape)
        self.key.build(token_shape)
        self.value.build(token_shape)
        self.classifier.build(token_shape[:1] + (self.hidden_dim,))
        self.built = True

    def call(self, features, training=None):
        x = self.batch_norm(average_features(features), training=training)
        batch = ops.shape(x)[0]
        query = ops.cast(self.query, x.dtype)
        query = ops.broadcast_to(query, (batch, 1, self.hidden_dim))
        pooled = ops.dot_product_attention(
            split_heads(query, self.num_heads),
            split_heads(self.key(x), self.num_heads),
            split_heads(self.value(x), self.num_heads),
            flash_attention=flash_attention_setting(),
        )
        pooled = merge_heads(pooled)[:, 0, :]
        return self.classifier(pooled)

    def compute_output_shape(self, input_shape):
        input_shape = first_feature_shape(input_shape)
        return (input_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            num_heads=self.num_heads,
            num_classes=self.num_classes,
            batch_norm_epsilon=self.batch_norm_epsilon,
            batch_norm_momentum=self.batch_norm_momentum,
        )
        return config
