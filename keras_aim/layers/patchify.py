"""Cutting images into flat patch vectors and putting them back."""

import keras
from keras import ops


def _check_images(images):
    if isinstance(images, (list, tuple)) or not hasattr(images, "shape"):
        raise ValueError(
            "Patchify expects `images` as an array or tensor of shape "
            "(batch, height, width, channels); got a "
            f"{type(images).__name__}. Pass np.asarray(images, 'float32')."
        )
    if len(images.shape) != 4:
        raise ValueError(
            "Patchify expects images of shape (batch, height, width, "
            f"channels); got shape {tuple(images.shape)}."
        )
    if "complex" in str(images.dtype):
        raise ValueError(
            f"Patchify expects real images; got dtype {images.dtype}."
        )
    if images.shape[0] == 0:
        raise ValueError(
            f"Patchify got empty `images` (0 examples, shape "
            f"{tuple(images.shape)}); pass at least one image."
        )


def patchify(images, patch_size):
    """`(B, H, W, C)` to `(B, N, p * p * C)`; the function behind `Patchify`.

    A plain function (no layer is created), so that it can also run inside
    traced or compiled training steps (e.g. `torch.compile`).
    """
    _check_images(images)
    p = int(patch_size)
    for axis, name in ((1, "height"), (2, "width")):
        size = images.shape[axis]
        if size is not None and size % p != 0:
            raise ValueError(
                f"Image {name} {size} is not divisible by patch_size={p}."
            )
    shape = ops.shape(images)
    channels = images.shape[-1]
    x = ops.reshape(
        images, (shape[0], shape[1] // p, p, shape[2] // p, p, channels)
    )
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (shape[0], -1, p * p * channels))


@keras.saving.register_keras_serializable(package="keras_aim")
class Patchify(keras.layers.Layer):
    """Cuts `(B, H, W, C)` images into `(B, N, p * p * C)` patch vectors.

    Patches come in raster (row-major) order; each vector is laid out as
    (row in patch, column in patch, channel), channel fastest. These are the
    pixel targets of AIM pre-training.

    Args:
        patch_size: int, side of the square patches; must divide H and W.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:

    >>> patches = Patchify(2)(keras.ops.zeros((1, 4, 6, 3)))
    >>> tuple(patches.shape)
    (1, 6, 12)
    """

    def __init__(self, patch_size, **kwargs):
        super().__init__(**kwargs)
        if int(patch_size) <= 0:
            raise ValueError(
                f"`patch_size` must be a positive integer; got {patch_size}."
            )
        self.patch_size = int(patch_size)

    def __call__(self, images, *args, **kwargs):
        _check_images(images)  # before Keras wraps the error
        return super().__call__(images, *args, **kwargs)

    def call(self, images):
        return patchify(images, self.patch_size)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        p = self.patch_size
        num = None
        if height is not None and width is not None:
            num = (height // p) * (width // p)
        return (batch, num, p * p * channels)

    def get_config(self):
        config = super().get_config()
        config.update(patch_size=self.patch_size)
        return config


@keras.saving.register_keras_serializable(package="keras_aim")
class Unpatchify(keras.layers.Layer):
    """Inverse of `Patchify`: `(B, gh * gw, p * p * C)` to `(B, H, W, C)`.

    Args:
        patch_size: int, side of the square patches.
        num_channels: int, image channels. Defaults to 3.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        patches: `(B, N, p * p * C)` patch vectors in raster order.
        grid_size: `(gh, gw)`, patch rows and columns with `gh * gw == N`.

    Example:

    >>> images = keras.ops.ones((1, 4, 6, 3))
    >>> patches = Patchify(2)(images)
    >>> tuple(Unpatchify(2)(patches, grid_size=(2, 3)).shape)
    (1, 4, 6, 3)
    """

    def __init__(self, patch_size, num_channels=3, **kwargs):
        super().__init__(**kwargs)
        if int(patch_size) <= 0:
            raise ValueError(
                f"`patch_size` must be a positive integer; got {patch_size}."
            )
        self.patch_size = int(patch_size)
        self.num_channels = int(num_channels)

    def call(self, patches, grid_size):
        p, c = self.patch_size, self.num_channels
        grid_h, grid_w = (int(s) for s in grid_size)
        if patches.shape[-1] != p * p * c:
            raise ValueError(
                f"Patch vectors must have p * p * C = {p * p * c} values; got "
                f"{patches.shape[-1]}."
            )
        if patches.shape[1] is not None and patches.shape[1] != grid_h * grid_w:
            raise ValueError(
                f"grid_size={tuple(grid_size)} needs {grid_h * grid_w} "
                f"patches; got {patches.shape[1]}."
            )
        batch = ops.shape(patches)[0]
        x = ops.reshape(patches, (batch, grid_h, grid_w, p, p, c))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (batch, grid_h * p, grid_w * p, c))

    def compute_output_spec(self, patches, grid_size):
        # Symbolic calls must not trace `grid_size` (static ints).
        grid_h, grid_w = (int(s) for s in grid_size)
        p = self.patch_size
        shape = (patches.shape[0], grid_h * p, grid_w * p, self.num_channels)
        return keras.KerasTensor(shape, dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            patch_size=self.patch_size, num_channels=self.num_channels
        )
        return config
