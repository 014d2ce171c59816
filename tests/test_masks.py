"""Prefix-causal attention: the mask, and what it hides inside the trunk."""

import keras
import numpy as np
import pytest
from conftest import to_numpy
from keras import ops

import keras_aim
from keras_aim.layers.masks import prefix_causal_mask
from keras_aim.layers.masks import sample_prefix_lengths
from keras_aim.layers.token_orders import token_order

P, GRID = 4, 4
N = GRID * GRID


def np_mask(prefix_lengths, n):
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    return np.stack([(j <= i) | (j < k) for k in prefix_lengths])


def test_mask_matches_numpy_and_the_shared_reference():
    from reference import numpy_prefix_causal_mask

    prefix_lengths = [0, 1, 2, 5, N - 1, N]
    mask = keras.ops.convert_to_numpy(prefix_causal_mask(prefix_lengths, N))
    assert mask.dtype == bool and mask.shape == (6, N, N)
    np.testing.assert_array_equal(mask, np_mask(prefix_lengths, N))
    np.testing.assert_array_equal(
        mask, numpy_prefix_causal_mask(prefix_lengths, N)
    )
    np.testing.assert_array_equal(mask[0], mask[1])  # K = 0 and 1: causal
    assert mask[-1].all()  # K = N: bidirectional


@pytest.fixture(scope="module")
def backbone():
    keras.utils.set_random_seed(1)
    return keras_aim.AIMBackbone(
        image_shape=(GRID * P, GRID * P, 3),
        patch_size=P,
        hidden_dim=32,
        num_layers=2,
        num_heads=2,
    )


def perturb_patch(images, raster_index):
    images = images.copy()
    row, col = divmod(int(raster_index), GRID)
    images[:, row * P : (row + 1) * P, col * P : (col + 1) * P] += 3.0
    return images


@pytest.mark.parametrize("name", ["raster", "spiral"])
def test_outputs_see_only_the_prefix_and_the_past(backbone, name):
    prefix = 5
    order = token_order(name, GRID, GRID)
    images = np.random.default_rng(0).normal(size=(1, 16, 16, 3))
    images = images.astype("float32")
    mask = prefix_causal_mask([prefix], N)
    kwargs = dict(attention_mask=mask, token_order=order)
    base = to_numpy(backbone.encode(images, **kwargs))[0]
    for position in (1, 3, 4, 5, 6, 10, N - 1):
        changed = perturb_patch(images, order[position])
        out = to_numpy(backbone.encode(changed, **kwargs))[0]
        delta = np.abs(out - base).max(axis=-1)  # per sequence position
        hidden = np.arange(N) < position  # queries i < position ...
        if position < prefix:
            # ... still see a prefix patch: they must change.
            assert np.all(delta[hidden] > 1e-4), (position, delta)
        else:
            # ... may not see patch j >= max(i + 1, K): exactly unchanged.
            np.testing.assert_allclose(delta[hidden], 0.0, atol=1e-6)
        assert np.all(delta[~hidden] > 1e-4)  # later tokens do see it


def test_bidirectional_without_mask_sees_everything(backbone):
    images = np.random.default_rng(1).normal(size=(1, 16, 16, 3))
    images = images.astype("float32")
    base = to_numpy(backbone.encode(images))[0]
    out = to_numpy(backbone.encode(perturb_patch(images, N - 1)))[0]
    assert np.all(np.abs(out - base).max(axis=-1) > 1e-4)


def test_per_sample_prefix_lengths_in_one_batch(backbone):
    images = np.random.default_rng(2).normal(size=(2, 16, 16, 3))
    images = images.astype("float32")
    mask = prefix_causal_mask([2, 8], N)
    base = to_numpy(backbone.encode(images, attention_mask=mask))
    out = to_numpy(
        backbone.encode(perturb_patch(images, 6), attention_mask=mask)
    )
    delta = np.abs(out - base).max(axis=-1)
    # Patch 6 is past the prefix of sample 0 and inside that of sample 1.
    np.testing.assert_allclose(delta[0, :6], 0.0, atol=1e-6)
    assert np.all(delta[1, :6] > 1e-4)


class Replica:
    def __init__(self, index, num_replicas):
        self._index, self.num_replicas = index, num_replicas

    def index(self):
        return self._index


def test_sampled_prefix_lengths_per_image_per_batch_and_per_replica():
    """Per image: each replica takes its slice of the global batch's draw
    (what one process drawing for the global batch gets); per batch: one
    length, the same on every replica."""
    every = ops.convert_to_numpy(sample_prefix_lengths(8, 1, 15, seed=3))
    assert every.shape == (8,) and every.min() >= 1 and every.max() <= 15
    assert len(set(every.tolist())) > 1  # 8 equal draws of 15: p = 15**-7
    for index in range(4):
        mine = sample_prefix_lengths(2, 1, 15, 3, replica=Replica(index, 4))
        np.testing.assert_array_equal(
            ops.convert_to_numpy(mine), every[2 * index : 2 * index + 2]
        )
    shared = [
        ops.convert_to_numpy(
            sample_prefix_lengths(
                3, 4, 6, 3, replica=Replica(index, 2), per="batch"
            )
        )
        for index in range(2)
    ]
    np.testing.assert_array_equal(shared[0], shared[1])
    assert len(set(shared[0].tolist())) == 1 and 4 <= shared[0][0] <= 6
    # A seed generator moves on: the shared length changes between steps
    # (8 equal draws of 15 values: p = 15**-7).
    generator = keras.random.SeedGenerator(0)
    steps = [
        int(
            ops.convert_to_numpy(
                sample_prefix_lengths(4, 1, 15, generator, per="batch")
            )[0]
        )
        for _ in range(8)
    ]
    assert len(set(steps)) > 1
    with pytest.raises(ValueError, match="prefix_sampling.*'image'"):
        sample_prefix_lengths(2, 1, 3, 0, per="sample")
