"""The pixel-regression head of AIM pre-training."""

import keras
from keras import ops

from keras_aim.layers.activations import exact_gelu
from keras_aim.layers.dense import AIMDense
from keras_aim.layers.position_embedding import sincos_2d_position_embedding
from keras_aim.utils.validation import check_parameter_memory
from keras_aim.utils.validation import check_size_limit
from keras_aim.utils.validation import positive_int


@keras.saving.register_keras_serializable(package="keras_aim")
class AIMPixelHead(keras.layers.Layer):
    """Maps trunk tokens to the pixels of the next patch (AIM pre-training).

    `proj` (Dense to `hidden_dim`, with bias), plus the fixed 2-D sin-cos
    position embedding at `hidden_dim` (taken in `token_order` when one is
    given), then `num_layers` residual MLP blocks
    `x += fc2(gelu(fc1(LN(x))))` (ratio `mlp_ratio`, no bias, exact GELU), a
    final LayerNorm `norm` and `output` (Dense to `output_dim`, with bias)
    (El-Nouby et al., ICML 2024: width 2048, 12 blocks).

    `num_layers=0` is the paper's "linear" head ablation: a single
    `output` Dense (with bias) applied to the trunk tokens, with no `proj`,
    position embedding or LayerNorm (none of those sublayers exist then).

    Args:
        hidden_dim: int, head width; divisible by 4 (sin-cos embedding).
            Ignored when `num_layers=0`.
        output_dim: int, values per patch, `patch_size**2 * channels`.
        num_layers: int >= 0, residual MLP blocks. Defaults to 12.
        mlp_ratio: float, MLP width over `hidden_dim`. Defaults to 4.
        layer_norm_epsilon: float. Defaults to `1e-6`.
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`).

    Call arguments:
        tokens: `(B, N, D)` trunk tokens (final-LayerNorm output).
        grid_size: `(grid_h, grid_w)` with `grid_h * grid_w == N`. When
            `None`, a square grid is assumed.
        token_order: optional int `(N,)` permutation of raster patch indices
            the tokens are in; the position table is taken in this order.

    Example:

    >>> head = AIMPixelHead(hidden_dim=32, output_dim=48, num_layers=1)
    >>> tuple(head(keras.ops.zeros((2, 6, 16)), grid_size=(2, 3)).shape)
    (2, 6, 48)
    """

    def __init__(
        self,
        hidden_dim,
        output_dim,
        num_layers=12,
        mlp_ratio=4.0,
        layer_norm_epsilon=1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        hidden_dim = positive_int(hidden_dim, "hidden_dim")
        output_dim = positive_int(output_dim, "output_dim")
        num_layers = positive_int(num_layers, "num_layers", minimum=0)
        check_size_limit(hidden_dim, "hidden_dim")
        check_size_limit(num_layers, "num_layers")
        mlp = int(float(mlp_ratio) * hidden_dim)
        check_parameter_memory(
            num_layers * (2 * hidden_dim * mlp + 2 * hidden_dim)
            + hidden_dim * (output_dim + 1),
            4,
            f"AIMPixelHead(hidden_dim={hidden_dim}, num_layers={num_layers})",
        )
        if num_layers > 0 and hidden_dim % 4 != 0:
            raise ValueError(
                "`hidden_dim` of the pixel head must be divisible by 4 for "
                f"the sin-cos position embedding; got {hidden_dim}."
            )
        self.hidden_dim = hidden_dim
        self.output_dim = output_dim
        self.num_layers = num_layers
        self.mlp_ratio = float(mlp_ratio)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.mlp_dim = int(self.mlp_ratio * hidden_dim)

        def dense(units, name, use_bias=False):
            return AIMDense(
                units,
                use_bias=use_bias,
                kernel_initializer="glorot_uniform",
                dtype=self.dtype_policy,
                name=name,
            )

        def norm(name):
            return keras.layers.LayerNormalization(
                epsilon=self.layer_norm_epsilon,
                dtype=self.dtype_policy,
                name=name,
            )

        # Flat lists (one per sublayer kind) so that Keras tracks them.
        self.block_norms = []
        self.block_fc1s = []
        self.block_fc2s = []
        if num_layers > 0:
            self.proj = dense(hidden_dim, "proj", use_bias=True)
            for i in range(num_layers):
                self.block_norms.append(norm(f"block_{i}_norm"))
                self.block_fc1s.append(dense(self.mlp_dim, f"block_{i}_fc1"))
                self.block_fc2s.append(dense(hidden_dim, f"block_{i}_fc2"))
            self.norm = norm("norm")
        self.output_dense = dense(output_dim, "output", use_bias=True)

    def build(self, input_shape):
        token_shape = tuple(input_shape)
        if self.num_layers == 0:
            self.output_dense.build(token_shape)
            self.built = True
            return
        self.proj.build(token_shape)
        hidden_shape = token_shape[:-1] + (self.hidden_dim,)
        mlp_shape = token_shape[:-1] + (self.mlp_dim,)
        for block_norm, fc1, fc2 in self._blocks():
            block_norm.build(hidden_shape)
            fc1.build(hidden_shape)
            fc2.build(mlp_shape)
        self.norm.build(hidden_shape)
        self.output_dense.build(hidden_shape)
        self.built = True

    def call(self, tokens, grid_size=None, token_order=None):
        if self.num_layers == 0:
            return self.output_dense(tokens)
        x = self.proj(tokens)
        table = self._position_table(tokens, grid_size, token_order)
        x = x + ops.cast(table, x.dtype)[None, :, :]
        for block_norm, fc1, fc2 in self._blocks():
            hidden = exact_gelu(fc1(block_norm(x)))
            x = x + fc2(hidden)
        return self.output_dense(self.norm(x))

    def _blocks(self):
        return zip(self.block_norms, self.block_fc1s, self.block_fc2s)

    def _position_table(self, tokens, grid_size, token_order):
        num = tokens.shape[1]
        if grid_size is None:
            side = None if num is None else int(round(num**0.5))
            if side is None or side * side != num:
                raise ValueError(
                    "AIMPixelHead needs `grid_size=(grid_h, grid_w)` unless "
                    f"the {num} tokens form a square grid."
                )
            grid_size = (side, side)
        grid_h, grid_w = (int(s) for s in grid_size)
        if num is not None and grid_h * grid_w != num:
            raise ValueError(
                f"`grid_size`={(grid_h, grid_w)} has {grid_h * grid_w} "
                f"patches but the tokens have {num}."
            )
        table = sincos_2d_position_embedding(grid_h, grid_w, self.hidden_dim)
        if token_order is not None:
            order = ops.cast(ops.convert_to_tensor(token_order), "int32")
            table = ops.take(table, order, axis=0)
        return table

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            output_dim=self.output_dim,
            num_layers=self.num_layers,
            mlp_ratio=self.mlp_ratio,
            layer_norm_epsilon=self.layer_norm_epsilon,
        )
        return config
