"""Patch embedding: a strided convolution followed by LayerNorm."""

import keras


@keras.saving.register_keras_serializable(package="keras_aim")
class AIMPatchEmbedding(keras.layers.Layer):
    """Cuts images into patches and embeds each one, then applies LayerNorm.

    A convolution with kernel = stride = `patch_size` (with bias) maps each
    non-overlapping patch to `hidden_dim` channels; a LayerNorm follows, as in
    the AIM release. The output keeps the patch grid, `(B, H/p, W/p, D)`.

    Args:
        hidden_dim: int, embedding width.
        patch_size: int, side of the square patches.
        layer_norm_epsilon: float, LayerNorm epsilon. Defaults to `1e-6`.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:

    >>> layer = AIMPatchEmbedding(hidden_dim=16, patch_size=4)
    >>> tuple(layer(keras.ops.zeros((1, 8, 12, 3))).shape)
    (1, 2, 3, 16)
    """

    def __init__(
        self, hidden_dim, patch_size, layer_norm_epsilon=1e-6, **kwargs
    ):
        super().__init__(**kwargs)
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
        self.norm = keras.layers.LayerNormalization(
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
        return config
