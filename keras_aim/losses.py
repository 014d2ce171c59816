"""The AIM pre-training objective: next-patch pixel regression."""

import keras
import numpy as np
from keras import ops

from keras_aim.layers.patchify import Unpatchify
from keras_aim.layers.patchify import patchify
from keras_aim.utils.validation import check_prefix_lengths

TARGET_NORM_EPSILON = 1e-6


def normalize_patches(patches, epsilon=TARGET_NORM_EPSILON):
    """Normalises each patch vector by its own mean and unbiased variance.

    `(t - mean(t)) / sqrt(var(t) + epsilon)` over the last axis, with the
    unbiased (`n - 1`) variance, as in the AIM (and MAE) pixel targets.

    Args:
        patches: `(..., p * p * C)` float tensor with at least 2 values per
            patch.
        epsilon: float added to the variance. Defaults to `1e-6`.

    Returns:
        A tensor of the same shape and dtype.

    Example:

    >>> out = normalize_patches(keras.ops.convert_to_tensor([[1.0, 3.0]]))
    >>> [round(v, 3) for v in keras.ops.convert_to_numpy(out)[0].tolist()]
    [-0.707, 0.707]
    """
    size = patches.shape[-1]
    if size is not None and size < 2:
        raise ValueError(
            "Target normalisation needs at least 2 values per patch (it "
            f"uses the unbiased variance); got patches of shape "
            f"{tuple(patches.shape)}. Pass normalize_targets=False."
        )
    mean = ops.mean(patches, axis=-1, keepdims=True)
    centred = patches - mean
    var = ops.sum(ops.square(centred), axis=-1, keepdims=True) / (size - 1)
    return centred / ops.sqrt(var + epsilon)


def next_patch_targets(
    images, patch_size, normalize_targets=True, token_order=None
):
    """The pixel targets of AIM pre-training, in float32.

    Args:
        images: `(B, H, W, C)` float images (normalised as for the trunk).
        patch_size: int.
        normalize_targets: bool, normalise each patch by its mean and
            unbiased variance. Defaults to `True`.
        token_order: optional int `(N,)` permutation of the raster patch
            indices (see `keras_aim.layers.token_orders.token_order`).

    Returns:
        `(B, N, p * p * C)` float32 target patches in sequence order.

    Example:

    >>> targets = next_patch_targets(keras.ops.ones((2, 8, 8, 3)), 4)
    >>> tuple(targets.shape)
    (2, 4, 48)
    """
    images = ops.convert_to_tensor(images)
    _check_float(images, "images")
    images = ops.cast(images, "float32")
    targets = patchify(images, patch_size)
    if token_order is not None:
        token_order = ops.cast(ops.convert_to_tensor(token_order), "int32")
        num = targets.shape[1]
        if token_order.shape != (num,) and num is not None:
            raise ValueError(
                f"`token_order` must have shape ({num},), one index per "
                f"patch; got shape {tuple(token_order.shape)}."
            )
        targets = ops.take(targets, token_order, axis=1)
    if normalize_targets:
        targets = normalize_patches(targets)
    return targets


def next_patch_pixel_loss(
    images,
    predictions,
    prefix_lengths,
    patch_size,
    normalize_targets=True,
    token_order=None,
    return_terms=False,
):
    """Next-patch pixel MSE of AIM, pooled over the non-prefix patches.

    Row `i` of `predictions` predicts target patch `i + 1` (sequence order).
    Each target patch's error is the mean squared error over its
    `p * p * C` values; the loss is the mean of these errors over every
    target patch `t` with `t >= K_b` (not in the prefix of its sample `b`),
    pooled over the whole batch (El-Nouby et al., ICML 2024). A prefix
    length of 0 acts as 1: patch 0 has no prediction. Concrete prefix
    lengths must lie in `[0, N - 1]`.
    Computed in float32 whatever the dtype of the inputs.

    Args:
        images: `(B, H, W, C)` float images, the source of the targets.
        predictions: `(B, N, p * p * C)` predictions, e.g. from
            `keras_aim.AIMPretrainer.predict_next_patches`.
        prefix_lengths: int `(B,)` tensor (or an int for every sample), the
            prefix length `K` of each sample.
        patch_size: int.
        normalize_targets: bool, normalise each target patch by its mean and
            unbiased variance (`+ 1e-6` under the square root). Defaults to
            `True`.
        token_order: optional int `(N,)` permutation of the raster patch
            indices; the targets are taken in this order, matching a trunk
            run with the same `token_order`.
        return_terms: bool, return `(sum of patch errors, number of target
            patches)` instead of their ratio (to pool over several
            replicas). Defaults to `False`.

    Returns:
        A float32 scalar (or the two terms).

    Example:

    >>> images = keras.ops.reshape(keras.ops.arange(384.0), (2, 8, 8, 3))
    >>> predictions = keras.ops.zeros((2, 4, 48))
    >>> loss = next_patch_pixel_loss(images, predictions, [1, 3], 4)
    >>> round(float(loss), 4)  # zero predictions of normalised targets
    0.9792
    """
    images = ops.convert_to_tensor(images)
    predictions = ops.convert_to_tensor(predictions)
    if len(images.shape) != 4:
        raise ValueError(
            "`images` must be a 4-D batch (batch, height, width, channels); "
            f"got shape {tuple(images.shape)}."
        )
    if len(predictions.shape) != 3:
        raise ValueError(
            "`predictions` must have shape (batch, num_patches, "
            f"patch_size * patch_size * channels); got shape "
            f"{tuple(predictions.shape)}."
        )
    _check_float(predictions, "predictions")
    if images.shape[0] == 0:
        raise ValueError(
            f"`images` is empty: it holds 0 examples (shape "
            f"{tuple(images.shape)}); the loss needs at least one image."
        )
    targets = next_patch_targets(
        images, patch_size, normalize_targets, token_order
    )
    batch, num, size = targets.shape
    for axis, name, want in ((0, "batch size", batch), (1, "patches", num)):
        got = predictions.shape[axis]
        if want is not None and got is not None and want != got:
            raise ValueError(
                f"`predictions` has {got} {name} but `images` give {want}; "
                f"got predictions {tuple(predictions.shape)} for images "
                f"{tuple(images.shape)} with patch_size={patch_size}."
            )
    if predictions.shape[-1] != size:
        raise ValueError(
            f"`predictions` must have {size} values per patch (patch_size="
            f"{patch_size}, {images.shape[-1]} channels); got shape "
            f"{tuple(predictions.shape)}."
        )
    if num is not None and num < 2:
        raise ValueError(
            "Next-patch prediction needs at least 2 patches per image; got "
            f"{num} for images of shape {tuple(images.shape)}."
        )
    if num is not None:
        check_prefix_lengths(prefix_lengths, num, batch_size=batch)
    prefix_lengths = _prefix_lengths(prefix_lengths, ops.shape(targets)[0])
    got = prefix_lengths.shape[0]
    if batch is not None and got is not None and got != batch:
        raise ValueError(
            f"`prefix_lengths` must have one entry per sample ({batch}); got "
            f"shape {tuple(prefix_lengths.shape)}."
        )
    predictions = ops.cast(predictions, "float32")
    # Row i predicts patch i + 1: compare rows 0..N-2 with patches 1..N-1.
    errors = ops.mean(
        ops.square(predictions[:, :-1, :] - targets[:, 1:, :]), axis=-1
    )
    positions = ops.arange(1, ops.shape(targets)[1], dtype="int32")
    weights = ops.cast(positions[None, :] >= prefix_lengths[:, None], "float32")
    total, count = ops.sum(errors * weights), ops.sum(weights)
    if return_terms:
        return total, count
    return total / ops.maximum(count, 1.0)


def _prefix_lengths(prefix_lengths, batch):
    prefix_lengths = ops.convert_to_tensor(prefix_lengths)
    dtype = keras.backend.standardize_dtype(prefix_lengths.dtype)
    if "int" not in dtype:
        raise ValueError(
            f"`prefix_lengths` must be integers; got dtype {dtype}."
        )
    prefix_lengths = ops.cast(prefix_lengths, "int32")
    if len(prefix_lengths.shape) == 0:
        return ops.broadcast_to(prefix_lengths, (batch,))
    if len(prefix_lengths.shape) != 1:
        raise ValueError(
            "`prefix_lengths` must be an int or a 1-D tensor with one length "
            f"per sample; got shape {tuple(prefix_lengths.shape)}."
        )
    return prefix_lengths


def _check_float(tensor, name):
    dtype = keras.backend.standardize_dtype(tensor.dtype)
    if "float" not in dtype:
        raise ValueError(
            f"`{name}` must be a float tensor; got dtype {dtype}. Convert "
            "integer images to float and normalise them (e.g. with "
            "keras_aim.AIMImageConverter) first."
        )


def next_patch_reconstruction(
    images,
    predictions,
    prefix_lengths,
    patch_size,
    normalize_targets=True,
    token_order=None,
    grid_size=None,
):
    """Images rebuilt from next-patch predictions, for inspection.

    Patches of the prefix (and the first patch, which has no prediction)
    are copied from `images`; every other patch is its prediction, moved
    to the patch it predicts and, with `normalize_targets`, de-normalised
    with that true patch's mean and unbiased std (as MAE does for display).

    Args:
        images: `(B, H, W, C)` normalised float images.
        predictions: `(B, N, p * p * C)`; row `i` predicts patch `i + 1`.
        prefix_lengths: int `(B,)` or int.
        patch_size: int.
        normalize_targets: bool, whether the predictions are in units of
            each patch's normalisation.
        token_order: optional `(N,)` permutation the sequence is in.
        grid_size: `(grid_h, grid_w)`; defaults to the images' grid.

    Returns:
        `(B, H, W, C)` float32 images in the input's normalisation.
    """

    images = ops.convert_to_tensor(images)
    if grid_size is None:
        grid_size = (
            images.shape[1] // patch_size,
            images.shape[2] // patch_size,
        )
    grid_h, grid_w = grid_size
    predictions = ops.cast(predictions, "float32")
    targets = next_patch_targets(images, patch_size, False, token_order)
    shifted = ops.concatenate([targets[:, :1], predictions[:, :-1]], axis=1)
    if normalize_targets:
        mean = ops.mean(targets, axis=-1, keepdims=True)
        var = ops.var(targets, axis=-1, keepdims=True)
        var = var * targets.shape[-1] / (targets.shape[-1] - 1)
        shifted = shifted * ops.sqrt(var + TARGET_NORM_EPSILON) + mean
    prefix_lengths = ops.cast(ops.convert_to_tensor(prefix_lengths), "int32")
    prefix_lengths = ops.reshape(prefix_lengths, (-1, 1, 1))
    positions = ops.arange(grid_h * grid_w, dtype="int32")[None, :, None]
    keep = ops.logical_or(positions < prefix_lengths, positions < 1)
    sequence = ops.where(keep, targets, shifted)
    if token_order is not None:
        inverse = np.argsort(np.asarray(token_order))
        sequence = ops.take(sequence, inverse, axis=1)
    unpatchify = Unpatchify(patch_size, images.shape[-1], dtype="float32")
    return unpatchify(sequence, grid_size=(grid_h, grid_w))
