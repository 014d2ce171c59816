"""Sanity checks of the NumPy reference itself, against hand computations."""

import json
import math
import os

import numpy as np
import pytest

from tests import reference as ref


def test_sincos_matches_hand_computed_case():
    # Grid of 2 rows x 3 columns, dim 8: quarter 2, omega = [1, 1/100].
    emb = ref.numpy_sincos_2d(2, 3, 8)
    assert emb.shape == (6, 8)
    row, col = 1, 2
    token = emb[row * 3 + col]  # raster order
    expected = [
        math.sin(2.0),
        math.sin(0.02),
        math.cos(2.0),
        math.cos(0.02),
        math.sin(1.0),
        math.sin(0.01),
        math.cos(1.0),
        math.cos(0.01),
    ]
    np.testing.assert_allclose(token, expected, rtol=0, atol=1e-15)
    # Token (0, 0): sin parts 0, cos parts 1.
    np.testing.assert_allclose(emb[0], [0, 0, 1, 1, 0, 0, 1, 1], atol=0)


def test_gelu_is_exact_erf_form():
    x = np.array([-1.0, 0.0, 1.0, 2.0])
    expected = [
        -0.15865525393145707,
        0.0,
        0.8413447460685429,
        1.954499736103642,
    ]
    np.testing.assert_allclose(ref.gelu(x), expected, rtol=1e-14, atol=1e-15)
    # The tanh approximation differs noticeably at 1.0.
    assert abs(ref.gelu_tanh(1.0) - ref.gelu(1.0)) > 1e-4


def test_layer_norm_uses_biased_variance_and_small_epsilon():
    x = np.array([[1.0, 2.0, 3.0, 4.0]])
    out = ref.layer_norm(x, np.ones(4), np.zeros(4))
    expected = (x - 2.5) / math.sqrt(1.25 + 1e-6)
    np.testing.assert_allclose(out, expected, rtol=1e-14)


def test_prefix_causal_mask_small_case():
    mask = ref.numpy_prefix_causal_mask([2, 1], 3)
    expected = np.array(
        [
            [[1, 1, 0], [1, 1, 0], [1, 1, 1]],
            [[1, 0, 0], [1, 1, 0], [1, 1, 1]],
        ],
        bool,
    )
    np.testing.assert_array_equal(mask, expected)


def test_patchify_arange_image():
    images = np.arange(32).reshape(1, 4, 4, 2)  # value = (r * 4 + c) * 2 + ch
    patches = ref.numpy_patchify(images, 2)
    assert patches.shape == (1, 4, 8)
    np.testing.assert_array_equal(patches[0, 0], [0, 1, 2, 3, 8, 9, 10, 11])
    np.testing.assert_array_equal(patches[0, 1], [4, 5, 6, 7, 12, 13, 14, 15])
    np.testing.assert_array_equal(
        patches[0, 2], [16, 17, 18, 19, 24, 25, 26, 27]
    )
    with pytest.raises(ValueError, match="patch_size"):
        ref.numpy_patchify(np.zeros((1, 5, 4, 1)), 2)


def test_next_patch_loss_hand_computed():
    images = np.arange(8, dtype=float).reshape(1, 2, 4, 1)  # patches 0, 1
    # Patch 1 is pixels (0, 2), (0, 3), (1, 2), (1, 3) = [2, 3, 6, 7].
    predictions = np.zeros((1, 2, 4))
    predictions[0, 0] = [2, 3, 6, 8]  # row 0 predicts patch 1
    predictions[0, 1] = 100.0  # the last row predicts nothing
    loss = ref.numpy_next_patch_loss(
        images, predictions, [1], 2, normalize=False
    )
    assert loss == pytest.approx(0.25, abs=1e-15)
    # Normalised targets: mean 4.5, unbiased variance 17 / 3.
    predictions[0, 0] = 0.0
    loss = ref.numpy_next_patch_loss(images, predictions, [1], 2)
    expected = (17.0 / (17.0 / 3.0 + 1e-6)) / 4.0
    assert loss == pytest.approx(expected, rel=1e-13)


def test_next_patch_loss_pools_over_batch():
    # Two samples, 3 patches each (1 x 3 grid of 1 x 1 patches, 1 channel).
    images = np.zeros((2, 1, 3, 1))
    predictions = np.zeros((2, 3, 1))
    predictions[0] = 1.0  # sample 0 (K=1): 2 target patches, error 1 each
    predictions[1] = 4.0  # sample 1 (K=2): 1 target patch, error 16
    loss = ref.numpy_next_patch_loss(
        images, predictions, [1, 2], 1, normalize=False
    )
    assert loss == pytest.approx((1 + 1 + 16) / 3)


def test_patch_embedding_matches_explicit_convolution():
    sd = ref.random_state_dict(8, 1, 2, 2, num_channels=3, seed=1)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(1, 4, 6, 3))
    out = ref.numpy_patch_embed(sd, images)
    w = sd["preprocessor.patchifier.proj.weight"].astype(float)
    b = sd["preprocessor.patchifier.proj.bias"].astype(float)
    conv = np.zeros((2, 3, 8))
    for r in range(2):
        for c in range(3):
            for d in range(8):
                acc = b[d]
                for ch in range(3):
                    for kh in range(2):
                        for kw in range(2):
                            pixel = images[0, r * 2 + kh, c * 2 + kw, ch]
                            acc += w[d, ch, kh, kw] * pixel
                conv[r, c, d] = acc
    x = ref.layer_norm(
        conv.reshape(6, 8),
        sd["preprocessor.patchifier.norm.weight"],
        sd["preprocessor.patchifier.norm.bias"],
    )
    x = x + ref.numpy_sincos_2d(2, 3, 8)
    np.testing.assert_allclose(out[0], x, rtol=1e-12, atol=1e-12)


def test_state_dict_layout():
    sd = ref.random_state_dict(48, 3, 4, 4, num_classes=7)
    assert sd["preprocessor.patchifier.proj.weight"].shape == (48, 3, 4, 4)
    assert sd["trunk.blocks.2.attn.qkv.weight"].shape == (144, 48)
    assert sd["trunk.blocks.2.mlp.fc1.weight"].shape == (192, 48)
    assert sd["trunk.blocks.2.mlp.fc2.weight"].shape == (48, 192)
    assert sd["head.cls_token"].shape == (1, 1, 48)
    assert sd["head.linear.weight"].shape == (7, 48)
    assert (sd["head.bn.running_var"] > 0).all()
    assert sd["head.bn.num_batches_tracked"].dtype == np.int64
    assert sd["head.bn.num_batches_tracked"].shape == ()
    assert all(
        v.dtype == np.float32
        for k, v in sd.items()
        if k != "head.bn.num_batches_tracked"
    )
    assert not any(
        k.startswith("head.") for k in ref.random_state_dict(48, 1, 4, 4)
    )
    with pytest.raises(ValueError, match="num_heads"):
        ref.random_state_dict(48, 1, 5, 4)


def test_causal_mask_makes_first_token_ignore_later_patches():
    sd = ref.random_state_dict(16, 2, 2, 2, seed=3)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(1, 4, 4, 3))
    changed = images.copy()
    changed[0, 2:, :, :] += 1.0  # patches 2 and 3 (second patch row)
    mask = ref.numpy_prefix_causal_mask([1], 4)
    a = ref.numpy_forward(sd, images, 2, attention_mask=mask)["tokens"]
    b = ref.numpy_forward(sd, changed, 2, attention_mask=mask)["tokens"]
    np.testing.assert_allclose(a[0, :2], b[0, :2], atol=1e-14)
    assert np.abs(a[0, 2:] - b[0, 2:]).max() > 1e-3
    full = ref.numpy_forward(sd, images, 2)["tokens"]
    ones = np.ones((1, 4, 4), bool)
    masked = ref.numpy_forward(sd, images, 2, attention_mask=ones)["tokens"]
    np.testing.assert_allclose(full, masked, atol=1e-14)


def test_attentive_probe_on_identical_tokens():
    # With identical tokens attention is uniform: the pooled vector is v(x).
    sd = ref.random_state_dict(8, 1, 2, 2, num_classes=3, seed=4)
    x = np.tile(np.arange(8.0)[None, None], (2, 5, 1))
    logits = ref.numpy_attentive_probe(sd, x, 2)
    f = {k: np.asarray(v, float) for k, v in sd.items()}
    normed = (x[0, 0] - f["head.bn.running_mean"]) / np.sqrt(
        f["head.bn.running_var"] + 1e-6
    )
    expected = f["head.linear.weight"] @ (f["head.v.weight"] @ normed)
    np.testing.assert_allclose(logits[0], expected, rtol=1e-12)
    np.testing.assert_allclose(logits[1], expected, rtol=1e-12)


def test_forward_outputs_and_token_order():
    sd = ref.random_state_dict(16, 3, 4, 4, num_classes=5, seed=2)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 8, 12, 3))
    out = ref.numpy_forward(sd, images, 4, probe_layers=[1, 2])
    assert out["tokens"].shape == (2, 6, 16)
    assert len(out["blocks"]) == 3
    assert out["logits"].shape == (2, 5)
    # Without an attention mask, blocks are permutation-equivariant.
    order = np.array([5, 0, 3, 1, 4, 2])
    perm = ref.numpy_forward(sd, images, 4, token_order=order)
    np.testing.assert_allclose(
        perm["tokens"], out["tokens"][:, order], atol=1e-12
    )
    assert "logits" not in ref.numpy_forward(sd, images, 4)


def test_writers_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from safetensors.numpy import load_file

    sd = ref.random_state_dict(16, 2, 2, 4, num_classes=3)
    config = ref.hub_config(sd, num_heads=2, img_size=16, probe_layers=[0, 1])
    folder = ref.write_hub_folder(str(tmp_path / "hub"), sd, config)
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    assert cfg == {
        "img_size": 16,
        "patch_size": 4,
        "embed_dim": 16,
        "num_blocks": 2,
        "num_heads": 2,
        "probe_layers": [0, 1],
        "num_classes": 3,
    }
    loaded = load_file(os.path.join(folder, "model.safetensors"))
    assert set(loaded) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(loaded[k], sd[k])
    bb, hd = str(tmp_path / "b.pth"), str(tmp_path / "h.pth")
    ref.write_pth_pair(bb, hd, sd)
    backbone = torch.load(bb, weights_only=True)
    head = torch.load(hd, weights_only=True)
    assert all(k.startswith(("preprocessor.", "trunk.")) for k in backbone)
    assert all(k.startswith("head.") for k in head)
    assert set(backbone) | set(head) == set(sd)
    assert head["head.bn.num_batches_tracked"].dtype == torch.int64
    np.testing.assert_array_equal(
        head["head.k.weight"].numpy(), sd["head.k.weight"]
    )
