"""The linear probe: BatchNorm without affine terms, then a linear layer."""

import keras
from keras import ops

from keras_aim.layers.attentive_probe import average_features
from keras_aim.layers.attentive_probe import first_feature_shape
from keras_aim.layers.dense import AIMDense
from keras_aim.utils.validation import positive_int


@keras.saving.register_keras_serializable(package="keras_aim")
class AIMLinearProbe(keras.layers.Layer):
    """Linear probe on mean-pooled tokens (MAE, AIM's linear evaluation).

    The chosen blocks' outputs are averaged, the tokens mean-pooled, then a
    BatchNorm without scale or offset (epsilon `1e-6`, running statistics
    at inference) and a linear classifier with bias give the logits, as in
    the linear probes MAE and AIM report next to attentive probes.

    Args:
        hidden_dim: int, token width.
        num_classes: int, number of output logits.
        batch_norm_epsilon: float. Defaults to `1e-6`.
        batch_norm_momentum: float, Keras convention. Defaults to `0.9`.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        features: one `(B, N, hidden_dim)` tensor or a list of them.
        training: bool, BatchNorm uses batch statistics when `True`.

    Example:

    >>> probe = AIMLinearProbe(hidden_dim=16, num_classes=3)
    >>> tuple(probe(keras.ops.ones((2, 5, 16))).shape)
    (2, 3)
    """

    def __init__(
        self,
        hidden_dim,
        num_classes,
        batch_norm_epsilon=1e-6,
        batch_norm_momentum=0.9,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = positive_int(hidden_dim, "hidden_dim")
        self.num_classes = positive_int(num_classes, "num_classes")
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
        self.classifier = AIMDense(
            self.num_classes, dtype=self.dtype_policy, name="classifier"
        )

    def build(self, input_shape):
        pooled_shape = (None, self.hidden_dim)
        self.batch_norm.build(pooled_shape)
        self.classifier.build(pooled_shape)
        self.built = True

    def call(self, features, training=None):
        pooled = ops.mean(average_features(features), axis=1)
        return self.classifier(self.batch_norm(pooled, training=training))

    def compute_output_shape(self, input_shape):
        return (first_feature_shape(input_shape)[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            num_classes=self.num_classes,
            batch_norm_epsilon=self.batch_norm_epsilon,
            batch_norm_momentum=self.batch_norm_momentum,
        )
        return config
