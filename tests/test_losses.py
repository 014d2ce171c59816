"""The next-patch pixel loss against an independent NumPy computation."""

import keras
import numpy as np
import pytest
from conftest import to_numpy

from keras_aim.layers.token_orders import token_order
from keras_aim.losses import next_patch_pixel_loss
from keras_aim.losses import next_patch_targets
from keras_aim.losses import normalize_patches

P = 4  # patch size
B, H, W, C = 3, 12, 16, 2  # 3 x 4 = 12 patches of 32 values
N, D = (H // P) * (W // P), P * P * C


def np_patches(images, p):
    b, h, w, c = images.shape
    x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def np_unpatchify(patches, p, grid_h, grid_w, c):
    b = patches.shape[0]
    x = patches.reshape(b, grid_h, grid_w, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, grid_h * p, grid_w * p, c)


def np_loss(images, predictions, prefix_lengths, p, normalize=True):
    """Written from the design notes, one target patch at a time."""
    targets = np_patches(np.asarray(images, np.float64), p)
    predictions = np.asarray(predictions, np.float64)
    errors = []
    for b in range(targets.shape[0]):
        for t in range(max(1, int(prefix_lengths[b])), targets.shape[1]):
            target = targets[b, t]
            if normalize:
                std = np.sqrt(target.var(ddof=1) + 1e-6)
                target = (target - target.mean()) / std
            errors.append(np.mean((predictions[b, t - 1] - target) ** 2))
    return float(np.mean(errors))


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(B, H, W, C)).astype("float32")
    images[0, :P, :P] = 0.5  # a constant patch: variance 0
    predictions = rng.normal(size=(B, N, D)).astype("float32")
    return images, predictions


@pytest.mark.parametrize(
    "prefix_lengths", [[1, 1, 1], [N - 1] * 3, [1, 5, N - 1], [3, 7, 2]]
)
@pytest.mark.parametrize("normalize", [True, False])
def test_loss_matches_numpy(data, prefix_lengths, normalize):
    images, predictions = data
    loss = next_patch_pixel_loss(
        images, predictions, np.array(prefix_lengths), P, normalize
    )
    expected = np_loss(images, predictions, prefix_lengths, P, normalize)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_loss_matches_the_shared_reference(data):
    from reference import numpy_next_patch_loss

    images, predictions = data
    for normalize in (True, False):
        expected = numpy_next_patch_loss(
            images, predictions, [2, 6, 11], P, normalize=normalize
        )
        loss = next_patch_pixel_loss(
            images, predictions, [2, 6, 11], P, normalize_targets=normalize
        )
        np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_only_non_prefix_targets_count(data):
    images, predictions = data
    prefix_lengths = np.array([4, 9, 1])
    base = float(next_patch_pixel_loss(images, predictions, prefix_lengths, P))
    perturbed = predictions.copy()
    for b, k in enumerate(prefix_lengths):
        # Rows 0..K-2 predict prefix patches 1..K-1; row N-1 predicts nothing.
        perturbed[b, : k - 1] += 100.0
        perturbed[b, -1] += 100.0
    same = next_patch_pixel_loss(images, perturbed, prefix_lengths, P)
    np.testing.assert_allclose(float(same), base, rtol=1e-6)
    # Row K-1 predicts patch K, the first target: it must count.
    perturbed[1, prefix_lengths[1] - 1] += 1.0
    changed = next_patch_pixel_loss(images, perturbed, prefix_lengths, P)
    assert abs(float(changed) - base) > 1e-3


def test_patches_are_pooled_over_the_batch_not_per_sample(data):
    images, predictions = data
    prefix_lengths = [1, N - 1, N - 1]  # 11 + 1 + 1 targets
    loss = float(next_patch_pixel_loss(images, predictions, prefix_lengths, P))
    per_sample = [
        np_loss(images[b : b + 1], predictions[b : b + 1], [k], P)
        for b, k in enumerate(prefix_lengths)
    ]
    pooled = (11 * per_sample[0] + per_sample[1] + per_sample[2]) / 13
    np.testing.assert_allclose(loss, pooled, rtol=1e-5)
    assert abs(loss - np.mean(per_sample)) > 1e-3


def test_prefix_zero_acts_as_one_and_an_int_is_broadcast(data):
    images, predictions = data
    zero = next_patch_pixel_loss(images, predictions, [0, 0, 0], P)
    one = next_patch_pixel_loss(images, predictions, 1, P)
    np.testing.assert_allclose(float(zero), float(one), rtol=1e-6)


def test_normalised_targets_have_zero_mean_and_unit_unbiased_variance(data):
    images, _ = data
    targets = to_numpy(next_patch_targets(images, P))
    raw = to_numpy(next_patch_targets(images, P, normalize_targets=False))
    np.testing.assert_allclose(raw, np_patches(images, P), atol=1e-6)
    np.testing.assert_allclose(targets.mean(-1), 0.0, atol=1e-5)
    variance = targets[0, 1:].var(-1, ddof=1)
    np.testing.assert_allclose(variance, 1.0, atol=1e-4)
    np.testing.assert_allclose(targets[0, 0], 0.0)  # the constant patch
    # Biased vs unbiased variance is visible in a 2-value example.
    pair = to_numpy(
        normalize_patches(keras.ops.convert_to_tensor([[1.0, 3.0]]))
    )
    np.testing.assert_allclose(pair, [[-1 / np.sqrt(2), 1 / np.sqrt(2)]], 1e-5)


@pytest.mark.parametrize("name", ["spiral", "checkerboard", "random"])
def test_token_order_equals_loss_on_permuted_images(data, name):
    images, predictions = data
    order = token_order(name, H // P, W // P, seed=5)
    # The same patches, moved by NumPy into raster positions 0..N-1.
    permuted = np_unpatchify(
        np_patches(images, P)[:, order], P, H // P, W // P, C
    )
    prefix_lengths = [1, 4, 10]
    loss = next_patch_pixel_loss(
        images, predictions, prefix_lengths, P, token_order=order
    )
    expected = np_loss(permuted, predictions, prefix_lengths, P)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    raster = np_loss(images, predictions, prefix_lengths, P)
    assert abs(float(loss) - raster) > 1e-3


def test_bfloat16_predictions_are_scored_in_float32(data):
    images, predictions = data
    low = keras.ops.cast(predictions, "bfloat16")
    loss = next_patch_pixel_loss(
        keras.ops.cast(images, "bfloat16"), low, [2, 3, 4], P
    )
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    rounded_images = to_numpy(keras.ops.cast(images, "bfloat16"))
    expected = np_loss(rounded_images, to_numpy(low), [2, 3, 4], P)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_bad_inputs_raise(data):
    images, predictions = data
    cases = [
        (images, predictions[:, :-1], [1, 1, 1], "patches"),
        (images, predictions[:, :, :-1], [1, 1, 1], "values per patch"),
        (images, predictions[:2], [1, 1], "batch size"),
        (images, predictions, [[1, 1, 1]], "1-D"),
        (images, predictions, [1, 1], "one entry per sample"),
        (images, predictions, [1.0, 2.0, 3.0], "integers"),
        (images[..., :1], predictions, [1, 1, 1], "values per patch"),
        (images[0], predictions, [1, 1, 1], "4-D"),
        (images[:, :10], predictions, [1, 1, 1], "divisible"),
        ((images * 100).astype("uint8"), predictions, [1, 1, 1], "float"),
    ]
    for bad_images, bad_predictions, prefix_lengths, message in cases:
        with pytest.raises(ValueError, match=message):
            next_patch_pixel_loss(
                bad_images, bad_predictions, prefix_lengths, P
            )
    with pytest.raises(ValueError, match="token_order"):
        next_patch_pixel_loss(
            images, predictions, [1, 1, 1], P, token_order=np.arange(N - 1)
        )
