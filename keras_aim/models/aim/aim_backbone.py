"""The AIM vision transformer trunk."""

import keras

from keras_aim.layers.patch_embedding import AIMPatchEmbedding
from keras_aim.layers.position_embedding import SinCos2DPositionEmbedding
from keras_aim.layers.transformer_block import AIMTransformerBlock
from keras_aim.models.backbone import Backbone
from keras_aim.models.backbone import run_trunk
from keras_aim.utils import validation
from keras_aim.utils.validation import check_image_shape
from keras_aim.utils.validation import check_num_heads
from keras_aim.utils.validation import positive_int


@keras.saving.register_keras_serializable(package="keras_aim")
class AIMBackbone(Backbone, keras.Model):
    """AIM vision transformer trunk (El-Nouby et al., ICML 2024).

    Patch embedding (strided conv + LayerNorm), a fixed 2-D sin-cos position
    embedding computed from the runtime grid, `num_layers` pre-norm blocks
    and a final LayerNorm. No class token: the output is one token per patch
    in raster order. Inputs are channels-last images already normalised with
    the ImageNet mean and std.

    Args:
        image_shape: `(H, W, C)` of the input. Use `(None, None, C)` to accept
            any size divisible by `patch_size`. Defaults to `(224, 224, 3)`.
        patch_size: int. Defaults to 14.
        hidden_dim: int, token width; divisible by 4 and by `num_heads`.
            Defaults to 1536.
        num_layers: int, number of transformer blocks. Defaults to 24.
        num_heads: int, attention heads. Defaults to 12.
        mlp_ratio: float, MLP width over `hidden_dim`. Defaults to 4.
        layer_norm_epsilon: float. Defaults to `1e-6`.
        dtype: dtype or `keras.DTypePolicy` for every layer.
        **kwargs: `keras.Model` arguments such as `name`.

    Example:

    >>> backbone = AIMBackbone(image_shape=(28, 28, 3), patch_size=4,
    ...                        hidden_dim=48, num_layers=2, num_heads=2)
    >>> tokens = backbone(keras.ops.zeros((1, 28, 28, 3)))
    >>> tuple(tokens.shape)
    (1, 49, 48)
    >>> blocks = backbone.extract_features(keras.ops.zeros((1, 28, 28, 3)),
    ...                                    layers=[0, 1])
    >>> len(blocks)
    2
    """

    def __init__(
        self,
        image_shape=(224, 224, 3),
        patch_size=14,
        hidden_dim=1536,
        num_layers=24,
        num_heads=12,
        mlp_ratio=4.0,
        layer_norm_epsilon=1e-6,
        dtype=None,
        **kwargs,
    ):
        validation.check_model_kwargs(type(self), kwargs)
        image_shape = _check_config(
            image_shape, patch_size, hidden_dim, num_layers, num_heads
        )
        _check_numbers(mlp_ratio, layer_norm_epsilon)
        validation.check_parameter_memory(
            validation.backbone_parameter_count(
                patch_size, hidden_dim, num_layers, mlp_ratio, image_shape[-1]
            ),
            _bytes_per_parameter(dtype),
            f"AIMBackbone(hidden_dim={hidden_dim}, num_layers={num_layers})",
        )
        # === Layers ===
        patch_embedding = AIMPatchEmbedding(
            hidden_dim=hidden_dim,
            patch_size=patch_size,
            layer_norm_epsilon=layer_norm_epsilon,
            dtype=dtype,
            name="patch_embedding",
        )
        position_embedding = SinCos2DPositionEmbedding(
            dtype=dtype, name="position_embedding"
        )
        transformer_blocks = [
            AIMTransformerBlock(
                hidden_dim=hidden_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                layer_norm_epsilon=layer_norm_epsilon,
                dtype=dtype,
                name=f"block_{i}",
            )
            for i in range(num_layers)
        ]
        post_trunk_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="post_trunk_norm"
        )

        # === Functional model ===
        images = keras.Input(shape=image_shape, name="images")
        layers = (patch_embedding, position_embedding, transformer_blocks)
        blocks = run_trunk(layers, images, num_layers - 1)
        tokens = post_trunk_norm(blocks[-1])
        super().__init__(inputs=images, outputs=tokens, dtype=dtype, **kwargs)
        self._keep_dtype_policy(dtype)
        # Assigned after `super().__init__` so the torch backend's Module
        # bookkeeping exists; they are the same objects as in the graph.
        self.patch_embedding = patch_embedding
        self.position_embedding = position_embedding
        self.transformer_blocks = transformer_blocks
        self.post_trunk_norm = post_trunk_norm

        # === Config ===
        self.image_shape = image_shape
        self.patch_size = int(patch_size)
        self.hidden_dim = int(hidden_dim)
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.mlp_ratio = float(mlp_ratio)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.lora_config = None

    def get_config(self):
        return {
            **self._base_config(),
            "image_shape": self.image_shape,
            "patch_size": self.patch_size,
            "hidden_dim": self.hidden_dim,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "mlp_ratio": self.mlp_ratio,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }


def _check_config(image_shape, patch_size, hidden_dim, num_layers, num_heads):
    for name, value in (
        ("patch_size", patch_size),
        ("hidden_dim", hidden_dim),
        ("num_layers", num_layers),
        ("num_heads", num_heads),
    ):
        validation.check_size_limit(positive_int(value, name), name)
    check_num_heads(num_heads, hidden_dim)
    if hidden_dim % 4 != 0:
        raise ValueError(
            "`hidden_dim` must be divisible by 4 for the 2-D sin-cos position "
            f"embedding; got {hidden_dim}."
        )
    try:
        image_shape = tuple(None if s is None else int(s) for s in image_shape)
    except TypeError as error:
        raise ValueError(
            "`image_shape` must be a tuple (height, width, channels); got "
            f"{image_shape!r}."
        ) from error
    if len(image_shape) != 3 or image_shape[-1] is None:
        raise ValueError(
            "`image_shape` must be (height, width, channels) with a fixed "
            f"channel count; got {image_shape!r}."
        )
    check_image_shape((None,) + image_shape, patch_size, image_shape[-1])
    if None not in image_shape[:2]:
        # Attention is quadratic in the tokens: refused before any step.
        validation.check_size_limit(
            (image_shape[0] // patch_size) * (image_shape[1] // patch_size),
            "num_patches",
            f"num_patches (image_shape={image_shape}, patch_size={patch_size})",
        )
    return image_shape


def _check_numbers(mlp_ratio, layer_norm_epsilon):
    for name, value, low, high in (
        ("mlp_ratio", mlp_ratio, 0.0, 64.0),
        ("layer_norm_epsilon", layer_norm_epsilon, 0.0, 1.0),
    ):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not low < value <= high
        ):
            raise ValueError(
                f"`{name}` must be a number in ({low}, {high}]; got "
                f"{name}={value!r}."
            )


def _bytes_per_parameter(dtype):
    if dtype is None:
        policy = keras.config.dtype_policy()
    else:
        policy = keras.dtype_policies.get(dtype)
    name = policy.variable_dtype
    return 2 if "16" in str(name) else 8 if "64" in str(name) else 4
