"""Fixed 2-D sine-cosine position embedding, computed from the runtime grid."""

import keras
from keras import ops


def sincos_2d_position_embedding(height, width, dim, dtype="float32"):
    """Returns the AIM 2-D sin-cos table for a `height` x `width` patch grid.

    The first `dim / 2` channels encode the column index and the last
    `dim / 2` the row index; each half is `concat(sin(pos * w), cos(pos * w))`
    with `w_i = 1 / 10000 ** (i / (dim / 4))`. Rows of the result follow the
    raster (row-major) order of the patches.

    Args:
        height: int or scalar tensor, number of patch rows.
        width: int or scalar tensor, number of patch columns.
        dim: int, embedding width; must be divisible by 4.
        dtype: dtype of the returned table.

    Returns:
        A `(height * width, dim)` tensor.

    Example:

    >>> table = sincos_2d_position_embedding(2, 3, 8)
    >>> tuple(table.shape)
    (6, 8)
    """
    if dim % 4 != 0:
        raise ValueError(
            f"The sin-cos position embedding needs a width divisible by 4; "
            f"got dim={dim}."
        )
    quarter = dim // 4
    omega = ops.arange(quarter, dtype="float32") / float(quarter)
    omega = 1.0 / ops.power(10000.0, omega)
    # `arange(0, n, 1, dtype)` rather than `arange(n)`: with a symbolic `n`
    # (an export with dynamic sizes) the one-argument form fails to convert
    # in jax2onnx, and without a dtype Keras' torch backend asks the dtype
    # of a `torch.SymInt` (torch.export); this form traces everywhere.
    rows = ops.cast(ops.arange(0, height, 1, dtype="int32"), "float32")
    cols = ops.cast(ops.arange(0, width, 1, dtype="int32"), "float32")

    def encode(positions):
        angles = positions[:, None] * omega[None, :]
        return ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)

    col_table = encode(cols)[None, :, :]  # (1, W, D/2)
    row_table = encode(rows)[:, None, :]  # (H, 1, D/2)
    grid_shape = (height, width, dim // 2)
    table = ops.concatenate(
        [
            ops.broadcast_to(col_table, grid_shape),
            ops.broadcast_to(row_table, grid_shape),
        ],
        axis=-1,
    )
    # Explicit sizes, no `-1`: with symbolic sizes (jax2tf's shape
    # polymorphism) inferring a `-1` needs a sign check that cannot be
    # decided.
    return ops.cast(ops.reshape(table, (height * width, dim)), dtype)


@keras.saving.register_keras_serializable(package="keras_aim")
class SinCos2DPositionEmbedding(keras.layers.Layer):
    """Adds the fixed AIM sin-cos embedding to a patch grid and flattens it.

    The table is computed from the grid the layer sees at call time, so any
    image size (also non-square) works with the same weights.

    Args:
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`).

    Example:

    >>> layer = SinCos2DPositionEmbedding()
    >>> tuple(layer(keras.ops.zeros((2, 3, 4, 8))).shape)
    (2, 12, 8)
    """

    def call(self, grid):
        shape = ops.shape(grid)
        height, width, dim = shape[1], shape[2], grid.shape[-1]
        table = sincos_2d_position_embedding(height, width, dim, grid.dtype)
        tokens = ops.reshape(grid, (shape[0], height * width, dim))
        return tokens + table[None, :, :]

    def compute_output_shape(self, input_shape):
        batch, height, width, dim = input_shape
        num = None if height is None or width is None else height * width
        return (batch, num, dim)
