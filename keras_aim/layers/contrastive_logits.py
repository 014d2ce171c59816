"""Image-text logits: the learned temperature times the cosine similarity."""

import math

import keras
from keras import ops


def l2_normalize(x, axis=-1, epsilon=1e-12):
    """`x / max(||x||, epsilon)` along `axis` (torch's `F.normalize`)."""
    norm = ops.sqrt(ops.sum(ops.square(x), axis=axis, keepdims=True))
    return x / ops.maximum(norm, epsilon)


@keras.saving.register_keras_serializable(package="keras_aim")
class ContrastiveLogits(keras.layers.Layer):
    """`scale * cos(image, text)` with a learned, clamped temperature.

    As in CLIP and the AIMv2 LiT model (Fini et al., 2024): both
    embeddings are L2-normalised, and the logit of image `i` and text `t`
    is `exp(clip(log_logit_scale, 0, log(max_logit_scale))) * <i, t>`.

    Args:
        initial_temperature: float, `log_logit_scale` starts at
            `log(1 / initial_temperature)`. Defaults to `0.07`.
        max_logit_scale: float, the largest scale. Defaults to `100`.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        image_embeddings: `(B_i, P)` image embeddings.
        text_embeddings: `(B_t, P)` text embeddings.

    Returns:
        `(B_i, B_t)` logits per image (transpose them for logits per text).

    Example:

    >>> logits = ContrastiveLogits()
    >>> scores = logits(keras.ops.eye(2), keras.ops.eye(2))
    >>> [round(float(v), 2) for v in keras.ops.convert_to_numpy(scores)[0]]
    [14.29, 0.0]
    """

    def __init__(
        self, initial_temperature=0.07, max_logit_scale=100.0, **kwargs
    ):
        super().__init__(**kwargs)
        for name, value in (
            ("initial_temperature", initial_temperature),
            ("max_logit_scale", max_logit_scale),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 < value < float("inf")
            ):
                raise ValueError(
                    f"`{name}` must be a positive number; got {name}={value!r}."
                )
        self.initial_temperature = float(initial_temperature)
        self.max_logit_scale = float(max_logit_scale)

    def build(self, image_embeddings_shape, text_embeddings_shape):
        self.log_logit_scale = self.add_weight(
            name="log_logit_scale",
            shape=(),
            initializer=keras.initializers.Constant(
                math.log(1.0 / self.initial_temperature)
            ),
        )
        self.built = True

    def logit_scale(self):
        """`exp(clip(log_logit_scale, 0, log(max_logit_scale)))`."""
        log_scale = ops.clip(
            ops.cast(self.log_logit_scale, "float32"),
            0.0,
            math.log(self.max_logit_scale),
        )
        return ops.exp(log_scale)

    def call(self, image_embeddings, text_embeddings):
        images = l2_normalize(image_embeddings)
        texts = l2_normalize(text_embeddings)
        scale = ops.cast(self.logit_scale(), images.dtype)
        return scale * ops.matmul(images, ops.transpose(texts))

    def compute_output_shape(
        self, image_embeddings_shape, text_embeddings_shape
    ):
        return (image_embeddings_shape[0], text_embeddings_shape[0])

    def get_config(self):
        config = super().get_config()
        config.update(
            initial_temperature=self.initial_temperature,
            max_logit_scale=self.max_logit_scale,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_aim")
class ZeroShotLogits(keras.layers.Layer):
    """`logit_scale * cos(embedding, class)` for fixed class embeddings.

    The head of a zero-shot classifier: one unit vector per class (from
    class-name prompts, see `keras_aim.AIMv2LiT.zero_shot_classifier`),
    kept as a non-trainable weight.

    Args:
        class_embeddings: `(num_classes, dim)` array (rows normalised here).
        logit_scale: float, the scale of the logits.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        embeddings: `(B, dim)` image embeddings.

    Example:

    >>> head = ZeroShotLogits([[1.0, 0.0], [0.0, 2.0]], logit_scale=10.0)
    >>> keras.ops.convert_to_numpy(head(keras.ops.ones((1, 2)))).round(3)
    array([[7.071, 7.071]], dtype=float32)
    """

    def __init__(self, class_embeddings, logit_scale, **kwargs):
        super().__init__(**kwargs)
        import numpy as np

        embeddings = np.asarray(class_embeddings, "float32")
        if embeddings.ndim != 2 or not embeddings.size:
            raise ValueError(
                "`class_embeddings` must be a non-empty (num_classes, dim) "
                f"array; got shape {embeddings.shape}."
            )
        if not np.isfinite(embeddings).all():
            raise ValueError("`class_embeddings` hold NaN or infinite values.")
        norms = np.linalg.norm(embeddings, axis=-1, keepdims=True)
        self._initial = embeddings / np.maximum(norms, 1e-12)
        self.num_classes, self.dim = embeddings.shape
        self.logit_scale = float(logit_scale)

    def build(self, input_shape=None):
        self.class_embeddings = self.add_weight(
            name="class_embeddings",
            shape=(self.num_classes, self.dim),
            initializer=keras.initializers.Constant(self._initial),
            trainable=False,
        )
        self.built = True

    def call(self, embeddings):
        classes = ops.cast(self.class_embeddings, embeddings.dtype)
        scores = ops.matmul(l2_normalize(embeddings), ops.transpose(classes))
        return self.logit_scale * scores

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            class_embeddings=keras.ops.convert_to_numpy(
                self.class_embeddings
            ).tolist()
            if self.built
            else self._initial.tolist(),
            logit_scale=self.logit_scale,
        )
        return config
