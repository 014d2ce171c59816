"""The AIMv2 vision transformer trunk."""

import keras

from keras_aim.layers.learned_position_embedding import LearnedPositionEmbedding
from keras_aim.layers.patch_embedding import AIMPatchEmbedding
from keras_aim.layers.position_embedding import SinCos2DPositionEmbedding
from keras_aim.layers.swiglu_transformer_block import AIMv2TransformerBlock
from keras_aim.models.aim.aim_backbone import _bytes_per_parameter
from keras_aim.models.aim.aim_backbone import _check_config
from keras_aim.models.aimv2.aimv2_presets import parameter_count
from keras_aim.models.backbone import Backbone
from keras_aim.models.backbone import run_trunk
from keras_aim.models.lora import AIMV2_LORA_TARGETS
from keras_aim.utils import validation

POSITION_EMBEDDINGS = ("absolute", "sincos")


@keras.saving.register_keras_serializable(package="keras_aim")
class AIMv2Backbone(Backbone, keras.Model):
    """AIMv2 vision transformer trunk (Fini et al., 2024).

    The vision encoder of "Multimodal Autoregressive Pre-training of Large
    Vision Encoders": patch embedding (strided conv with bias + RMSNorm), a
    learned absolute position table (`"absolute"`, resampled bicubically
    for another patch grid) or the fixed 2-D sin-cos table of the native-
    resolution model (`"sincos"`, any size and aspect ratio),
    `num_layers` pre-norm blocks (RMSNorm, fused-qkv attention, SwiGLU
    MLP, no biases) and a final RMSNorm; every norm has epsilon `1e-5`.
    No class token: one output token per patch in raster order. Inputs are
    channels-last images normalised with the ImageNet mean and std (the
    same evaluation transform as AIM at 224, 336 or 448 pixels).

    Args:
        image_shape: `(H, W, C)` of the input; `(None, None, C)` accepts any
            size divisible by `patch_size`. Defaults to `(224, 224, 3)`.
        patch_size: int. Defaults to 14.
        hidden_dim: int, token width. Defaults to 1024 (AIMv2-Large).
        num_layers: int, number of blocks. Defaults to 24.
        num_heads: int, attention heads. Defaults to 8.
        intermediate_dim: int, SwiGLU hidden width. Defaults to 2816.
        position_embedding: `"absolute"` (learned) or `"sincos"`.
            Defaults to `"absolute"`.
        position_grid_size: `(rows, columns)` of the learned table.
            Defaults to the patch grid of `image_shape`; needed with an
            `image_shape` of free size.
        layer_norm_epsilon: float, the RMSNorm epsilon. Defaults to `1e-5`.
        dtype: dtype or `keras.DTypePolicy` for every layer.
        **kwargs: `keras.Model` arguments such as `name`.

    Example:

    >>> backbone = AIMv2Backbone(image_shape=(28, 28, 3), patch_size=4,
    ...     hidden_dim=48, num_layers=2, num_heads=2, intermediate_dim=128)
    >>> tuple(backbone(keras.ops.zeros((1, 28, 28, 3))).shape)
    (1, 49, 48)
    >>> blocks = backbone.extract_features(keras.ops.zeros((1, 20, 36, 3)),
    ...                                    layers=[0, 1])
    >>> tuple(blocks[1].shape)
    (1, 45, 48)
    """

    lora_targets = AIMV2_LORA_TARGETS

    def __init__(
        self,
        image_shape=(224, 224, 3),
        patch_size=14,
        hidden_dim=1024,
        num_layers=24,
        num_heads=8,
        intermediate_dim=2816,
        position_embedding="absolute",
        position_grid_size=None,
        layer_norm_epsilon=1e-5,
        dtype=None,
        **kwargs,
    ):
        validation.check_model_kwargs(type(self), kwargs)
        image_shape = _check_config(
            image_shape, patch_size, hidden_dim, num_layers, num_heads
        )
        intermediate_dim = validation.check_size_limit(
            validation.positive_int(intermediate_dim, "intermediate_dim"),
            "hidden_dim",
            "intermediate_dim",
        )
        grid = _position_grid(
            position_embedding, position_grid_size, image_shape, patch_size
        )
        epsilon = layer_norm_epsilon
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)):
            epsilon = -1.0
        if not 0.0 < epsilon <= 1.0:
            raise ValueError(
                "`layer_norm_epsilon` must be a number in (0, 1]; got "
                f"layer_norm_epsilon={layer_norm_epsilon!r}."
            )
        validation.check_parameter_memory(
            parameter_count(
                image_shape,
                patch_size,
                hidden_dim,
                num_layers,
                intermediate_dim,
                position_embedding,
                grid,
            ),
            _bytes_per_parameter(dtype),
            f"AIMv2Backbone(hidden_dim={hidden_dim}, num_layers={num_layers})",
        )
        # === Layers ===
        patch_embedding = AIMPatchEmbedding(
            hidden_dim=hidden_dim,
            patch_size=patch_size,
            layer_norm_epsilon=layer_norm_epsilon,
            norm="rms",
            dtype=dtype,
            name="patch_embedding",
        )
        if position_embedding == "absolute":
            position_layer = LearnedPositionEmbedding(
                grid_size=grid, dtype=dtype, name="position_embedding"
            )
        else:
            position_layer = SinCos2DPositionEmbedding(
                dtype=dtype, name="position_embedding"
            )
        transformer_blocks = [
            AIMv2TransformerBlock(
                hidden_dim=hidden_dim,
                num_heads=num_heads,
                intermediate_dim=intermediate_dim,
                layer_norm_epsilon=layer_norm_epsilon,
                dtype=dtype,
                name=f"block_{i}",
            )
            for i in range(num_layers)
        ]
        post_trunk_norm = keras.layers.RMSNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="post_trunk_norm"
        )

        # === Functional model ===
        images = keras.Input(shape=image_shape, name="images")
        layers = (patch_embedding, position_layer, transformer_blocks)
        blocks = run_trunk(layers, images, num_layers - 1)
        tokens = post_trunk_norm(blocks[-1])
        super().__init__(inputs=images, outputs=tokens, dtype=dtype, **kwargs)
        self._keep_dtype_policy(dtype)
        self.patch_embedding = patch_embedding
        self.position_embedding = position_layer
        self.transformer_blocks = transformer_blocks
        self.post_trunk_norm = post_trunk_norm

        # === Config ===
        self.image_shape = image_shape
        self.patch_size = int(patch_size)
        self.hidden_dim = int(hidden_dim)
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.intermediate_dim = int(intermediate_dim)
        self.position_embedding_type = position_embedding
        self.position_grid_size = grid
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.lora_config = None

    @property
    def mlp_ratio(self):
        """`intermediate_dim / hidden_dim` (2.75 or 8 / 3 when released)."""
        return self.intermediate_dim / self.hidden_dim

    def get_config(self):
        return {
            **self._base_config(),
            "image_shape": self.image_shape,
            "patch_size": self.patch_size,
            "hidden_dim": self.hidden_dim,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "position_embedding": self.position_embedding_type,
            "position_grid_size": self.position_grid_size,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }


def _position_grid(kind, grid_size, image_shape, patch_size):
    """The learned table's `(rows, columns)`, or `None` for sin-cos."""
    if kind not in POSITION_EMBEDDINGS:
        raise ValueError(
            f"`position_embedding` must be one of {POSITION_EMBEDDINGS}; got "
            f"position_embedding={kind!r}."
        )
    if kind == "sincos":
        return None
    if grid_size is None:
        height, width = image_shape[:2]
        if height is None or width is None:
            raise ValueError(
                "A learned position table needs its grid: pass "
                "`position_grid_size=(rows, columns)` with an image_shape "
                f"of free size ({image_shape!r})."
            )
        return (height // patch_size, width // patch_size)
    grid = validation.size_pair(grid_size, "position_grid_size")
    for value in grid:
        validation.check_size_limit(value, "hidden_dim", "position_grid_size")
    return grid
