"""Patch embedding: a strided convolution followed by a norm."""

import keras

NORMS = ("layer", "rms")


@keras.saving.register_keras_serializable(package="keras_aim")
class AIMPatchEmbedding(keras.layers.Layer):
    """Cuts images into patches and embeds each one, then normalises them.

    A convolution with kernel = stride = `patch_size` (with bias) maps each
    non-overlapping patch to `hidden_dim` channels; a LayerNorm follows, as in
    the AIM release (an RMSNorm in AIMv2's). The output keeps the patch grid,
    `(B, H/p, W/p, D)`.

    Args:
        hidden_dim: int, embedding width.
        patch_size: int, side of the square patches.
        layer_norm_epsilon: float, the norm's epsilon. Defaults to `1e-6`.
        norm: `"layer"` (LayerNorm, AIM) or `"rms"` (RMSNorm, AIMv2).
            Defaults to `"layer"`.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:

    >>> layer = AIMPatchEmbedding(hidden_dim=16, patch_size=4)
    >>> tuple(layer(keras.ops.zeros((1, 8, 12, 3))).shape)
    (1, 2, 3, 16)
    """

    def __init__(
        self,
        hidden_dim,
        patch_size,
        layer_norm_epsilon=1e-6,
        norm="layer",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if norm not in NORMS:
            raise ValueError(f"`norm` must be one of {NORMS}; got {norm!r}.")
        self.norm_type = norm
        self.hidden_dim = int(hidden_dim)
        self.patch_size = int(patch_size)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.proj = keras.layers.Conv2D(
            self.hidden_dim,
            kernel_size=self.patch_size,
            strides=self.patch_size,
            padding="valid",
            use_bias=True,
            data_format="channels_last",
            kernel_initializer="glorot_uniform",
            dtype=self.dtype_policy,
            name="proj",
        )
        norm_class = (
            keras.layers.LayerNormalization
            if norm == "layer"
            else keras.layers.RMSNormalization
        )
        self.norm = norm_class(
            epsilon=self.layer_norm_epsilon,
            dtype=self.dtype_policy,
            name="norm",
        )

    def build(self, input_shape):
        self.proj.build(input_shape)
        self.norm.build(self.proj.compute_output_shape(input_shape))
        self.built = True

    def call(self, images):
        return self.norm(self.proj(images))

    def compute_output_shape(self, input_shape):
        return self.proj.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            patch_size=self.patch_size,
            layer_norm_epsilon=self.layer_norm_epsilon,
        )
        if self.norm_type != "layer":
            config["norm"] = self.norm_type
        return config
