"""Attention masks for AIM pre-training, and the prefix lengths they use."""

import keras
from keras import ops

from keras_aim.utils import validation


def prefix_causal_mask(prefix_lengths, num_patches):
    """Builds the prefix-causal attention mask of AIM pre-training.

    Query `i` of sample `b` may attend to key `j` when `j <= i` (causal) or
    `j < prefix_lengths[b]` (the bidirectional prefix). A prefix length of 0
    or 1 gives plain causal attention; `num_patches` gives full attention.

    Args:
        prefix_lengths: int tensor `(B,)`, the prefix length `K` per
            sample, each in `[0, N]`.
        num_patches: int, the sequence length `N` (a positive int).

    Returns:
        A boolean `(B, N, N)` tensor, `True` where attention is allowed.

    Example:

    >>> mask = prefix_causal_mask([2], 3)
    >>> keras.ops.convert_to_numpy(mask)[0].astype(int).tolist()
    [[1, 1, 0], [1, 1, 0], [1, 1, 1]]
    """
    num_patches = validation.positive_int(num_patches, "num_patches")
    validation.check_prefix_lengths(
        prefix_lengths, num_patches, maximum=num_patches
    )
    prefix_lengths = ops.convert_to_tensor(prefix_lengths)
    if len(prefix_lengths.shape) != 1:
        raise ValueError(
            "`prefix_lengths` must be a 1-D tensor (one length per sample); "
            f"got shape {tuple(prefix_lengths.shape)}."
        )
    if prefix_lengths.shape[0] == 0:
        raise ValueError(
            "`prefix_lengths` is empty: give one length per sample (a mask "
            "for 0 samples means nothing)."
        )
    prefix_lengths = ops.cast(prefix_lengths, "int32")
    positions = ops.arange(int(num_patches), dtype="int32")
    causal = positions[None, :] <= positions[:, None]  # (N, N): j <= i
    in_prefix = positions[None, None, :] < prefix_lengths[:, None, None]
    return ops.logical_or(causal[None, :, :], in_prefix)


def causal_mask(batch_size, num_patches):
    """Plain causal mask `(B, N, N)`: query `i` sees keys `j <= i`."""
    return prefix_causal_mask(ops.zeros((batch_size,), "int32"), num_patches)


PREFIX_SAMPLING = ("image", "batch")


def check_prefix_sampling(value):
    """`value` if it is one of `PREFIX_SAMPLING`, else a `ValueError`."""
    if value not in PREFIX_SAMPLING:
        raise ValueError(
            f"`prefix_sampling` must be one of {PREFIX_SAMPLING}; got "
            f"{value!r}."
        )
    return value


def sample_prefix_lengths(
    batch_size, low, high, seed, replica=None, per="image"
):
    """Draws the prefix lengths of one training batch, uniform in
    `[low, high]`.

    Args:
        batch_size: int or scalar tensor, the (per-replica) batch `B`.
        low, high: ints, the inclusive range.
        seed: a `keras.random.SeedGenerator` or int.
        replica: `None`, or an object with `num_replicas` and `index()`
            (data parallelism across processes or replicas): each replica
            takes its slice of the draw for the global batch, so the
            lengths are those one process training the global batch draws.
        per: `"image"` (one length per image, the paper) or `"batch"`
            (one length for the whole global batch, repeated).

    Returns:
        An int32 `(B,)` tensor.
    """
    if check_prefix_sampling(per) == "batch":
        # One draw, the same on every replica (their generators share
        # their state), broadcast to the batch.
        one = keras.random.randint((1,), low, high + 1, "int32", seed=seed)
        return ops.broadcast_to(one, (batch_size,))
    if replica is None:
        return keras.random.randint(
            (batch_size,), low, high + 1, dtype="int32", seed=seed
        )
    every = keras.random.randint(
        (batch_size * replica.num_replicas,),
        low,
        high + 1,
        dtype="int32",
        seed=seed,
    )
    return ops.slice(every, [replica.index() * batch_size], [batch_size])
