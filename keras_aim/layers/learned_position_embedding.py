"""A learned absolute position table, resampled for other patch grids."""

import keras
from keras import ops


def _cubic_weight(distance, a=-0.75):
    """Keys' cubic convolution kernel at `distance` (PyTorch's `a`)."""
    d = ops.abs(distance)
    near = ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0
    far = ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a
    return ops.where(d <= 1.0, near, ops.where(d < 2.0, far, 0.0))


def bicubic_resize_matrix(in_size, out_size):
    """The `(out_size, in_size)` matrix of 1-D bicubic resampling.

    The rule of `torch.nn.functional.interpolate(mode="bicubic",
    align_corners=False)` without antialiasing: output sample `o` reads
    the input at `x = (o + 0.5) * in_size / out_size - 0.5` from the four
    neighbours `floor(x) - 1 .. floor(x) + 2` (indices clamped to the
    edges) with Keys' kernel, `a = -0.75`. At `out_size == in_size` it is
    the identity. Written with `keras.ops`, so `out_size` may be symbolic
    and every backend gives the same numbers.

    Args:
        in_size: int, the stored length.
        out_size: int or scalar tensor, the wanted length.

    Returns:
        A float32 `(out_size, in_size)` tensor.

    Example:

    >>> matrix = bicubic_resize_matrix(4, 4)
    >>> keras.ops.convert_to_numpy(matrix).diagonal().tolist()
    [1.0, 1.0, 1.0, 1.0]
    """
    in_size = int(in_size)
    scale = ops.cast(in_size, "float32") / ops.cast(out_size, "float32")
    positions = ops.cast(ops.arange(0, out_size, 1), "float32")
    source = (positions + 0.5) * scale - 0.5
    base = ops.floor(source)
    fraction = source - base
    matrix = 0.0
    for tap in (-1, 0, 1, 2):
        index = ops.clip(ops.cast(base, "int32") + tap, 0, in_size - 1)
        weight = _cubic_weight(fraction - float(tap))
        matrix = matrix + weight[:, None] * ops.one_hot(index, in_size)
    return matrix


@keras.saving.register_keras_serializable(package="keras_aim")
class LearnedPositionEmbedding(keras.layers.Layer):
    """Adds a learned position table to a patch grid and flattens it.

    The table holds one `hidden_dim` row per patch of a `grid_size` grid, in
    raster order (AIMv2's `pos_embed`). On that grid it is added as is; on
    any other grid (another resolution or aspect ratio) the table is
    resampled bicubically, separately along rows and columns (see
    `bicubic_resize_matrix`), as timm does for a ViT at a new size. The
    AIMv2 release itself adds `pos_embed[:, :N]` without resampling, which
    only runs at the trained size.

    Args:
        grid_size: `(rows, columns)` of the stored table.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:

    >>> layer = LearnedPositionEmbedding(grid_size=(2, 2))
    >>> tuple(layer(keras.ops.zeros((1, 3, 5, 8))).shape)
    (1, 15, 8)
    """

    def __init__(self, grid_size, **kwargs):
        super().__init__(**kwargs)
        rows, columns = (int(v) for v in grid_size)
        if rows <= 0 or columns <= 0:
            raise ValueError(
                f"`grid_size` must be two positive ints; got {grid_size!r}."
            )
        self.grid_size = (rows, columns)

    def build(self, input_shape):
        rows, columns = self.grid_size
        self.embeddings = self.add_weight(
            shape=(rows * columns, int(input_shape[-1])),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            name="embeddings",
        )
        self.built = True

    def table(self, height, width):
        """The `(height * width, hidden_dim)` table for a patch grid."""
        rows, columns = self.grid_size
        dim = self.embeddings.shape[-1]
        table = ops.convert_to_tensor(self.embeddings)
        static = isinstance(height, int) and isinstance(width, int)
        if static and (height, width) == (rows, columns):
            return table
        grid = ops.reshape(ops.cast(table, "float32"), (rows, columns, dim))
        row_matrix = bicubic_resize_matrix(rows, height)
        column_matrix = bicubic_resize_matrix(columns, width)
        grid = ops.einsum("hi,ijd->hjd", row_matrix, grid)
        grid = ops.einsum("wj,hjd->hwd", column_matrix, grid)
        return ops.cast(ops.reshape(grid, (height * width, dim)), table.dtype)

    def call(self, grid):
        shape = ops.shape(grid)
        height, width, dim = shape[1], shape[2], grid.shape[-1]
        table = ops.cast(self.table(height, width), grid.dtype)
        tokens = ops.reshape(grid, (shape[0], height * width, dim))
        return tokens + table[None, :, :]

    def compute_output_shape(self, input_shape):
        batch, height, width, dim = input_shape
        num = None if height is None or width is None else height * width
        return (batch, num, dim)

    def get_config(self):
        config = super().get_config()
        config.update(grid_size=self.grid_size)
        return config
