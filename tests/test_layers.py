"""Every layer through the shared harness (config round trip, symbolic and
eager calls, a fit step, mixed precision, `.keras` save/load), and values
against NumPy where the layer has a formula."""

import numpy as np
import pytest
from conftest import to_numpy
from harness import run_layer_test

from keras_aim import layers

LAYER_CASES = [
    (
        layers.AIMPatchEmbedding,
        dict(hidden_dim=16, patch_size=4),
        (2, 8, 12, 3),
        (2, 2, 3, 16),
        {},
    ),
    (layers.SinCos2DPositionEmbedding, dict(), (2, 2, 3, 16), (2, 6, 16), {}),
    (
        layers.AIMTransformerBlock,
        dict(hidden_dim=16, num_heads=2),
        (2, 6, 16),
        (2, 6, 16),
        {},
    ),
    (
        layers.AIMAttentivePooling,
        dict(hidden_dim=16, num_heads=2, num_classes=3),
        (2, 6, 16),
        (2, 3),
        {},
    ),
    (
        layers.AIMLinearProbe,
        dict(hidden_dim=16, num_classes=3),
        (2, 6, 16),
        (2, 3),
        {},
    ),
    (
        layers.AIMPixelHead,
        dict(hidden_dim=16, output_dim=12, num_layers=2),
        (2, 6, 8),
        (2, 6, 12),
        dict(grid_size=(2, 3)),
    ),
    (layers.Patchify, dict(patch_size=2), (2, 4, 6, 3), (2, 6, 12), {}),
    (
        layers.Unpatchify,
        dict(patch_size=2),
        (2, 6, 12),
        (2, 4, 6, 3),
        dict(grid_size=(2, 3)),
    ),
]


@pytest.mark.parametrize(
    "cls,kwargs,shape,output_shape,call_kwargs", LAYER_CASES
)
def test_layer_harness(cls, kwargs, shape, output_shape, call_kwargs, tmp_path):
    x = np.random.default_rng(1).normal(size=shape).astype("float32")
    run_layer_test(
        cls,
        kwargs,
        x,
        output_shape,
        call_kwargs=call_kwargs,
        tmp_path=tmp_path,
    )


def numpy_sincos(h, w, d):
    quarter = d // 4
    omega = 1.0 / 10000 ** (np.arange(quarter) / quarter)
    table = np.zeros((h, w, d))
    for r in range(h):
        for c in range(w):
            table[r, c, :quarter] = np.sin(c * omega)
            table[r, c, quarter : 2 * quarter] = np.cos(c * omega)
            table[r, c, 2 * quarter : 3 * quarter] = np.sin(r * omega)
            table[r, c, 3 * quarter :] = np.cos(r * omega)
    return table.reshape(h * w, d)


@pytest.mark.parametrize("h,w,d", [(2, 3, 8), (4, 4, 16), (3, 5, 12)])
def test_sincos_table_matches_numpy(h, w, d):
    table = layers.sincos_2d_position_embedding(h, w, d)
    np.testing.assert_allclose(
        to_numpy(table), numpy_sincos(h, w, d), atol=1e-6
    )


def test_position_embedding_adds_table_to_raster_tokens():
    grid = np.random.default_rng(3).normal(size=(2, 3, 5, 8)).astype("float32")
    out = to_numpy(layers.SinCos2DPositionEmbedding()(grid))
    expected = grid.reshape(2, 15, 8) + numpy_sincos(3, 5, 8)[None]
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_sincos_rejects_width_not_divisible_by_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        layers.sincos_2d_position_embedding(2, 2, 6)


def test_patchify_layout_and_inverse():
    images = np.arange(2 * 4 * 6 * 3, dtype="float32").reshape(2, 4, 6, 3)
    patches = to_numpy(layers.Patchify(2)(images))
    assert patches.shape == (2, 6, 12)
    # Patch 4 is grid row 1, column 1: pixels rows 2-3, columns 2-3, with
    # (row in patch, column in patch, channel) order, channel fastest.
    expected = images[1, 2:4, 2:4, :].reshape(-1)
    np.testing.assert_array_equal(patches[1, 4], expected)
    back = layers.Unpatchify(2)(patches.astype("float32"), grid_size=(2, 3))
    np.testing.assert_array_equal(to_numpy(back), images)


def test_patchify_bad_inputs():
    with pytest.raises(ValueError, match="not divisible"):
        layers.Patchify(4)(np.zeros((1, 6, 8, 3), "float32"))
    with pytest.raises(ValueError, match="batch, height, width"):
        layers.Patchify(2)(np.zeros((4, 4, 3), "float32"))
    with pytest.raises(ValueError, match="positive integer"):
        layers.Patchify(0)
    with pytest.raises(ValueError, match="grid_size"):
        layers.Unpatchify(2)(np.zeros((1, 5, 12), "float32"), grid_size=(2, 3))


def numpy_block(x, weights, num_heads, eps=1e-6):
    from math import erf

    qkv_w, proj_w, g1, b1, fc1, fc2, g2, b2 = weights

    def ln(v, g, b):
        mu = v.mean(-1, keepdims=True)
        var = v.var(-1, keepdims=True)
        return (v - mu) / np.sqrt(var + eps) * g + b

    batch, n, d = x.shape
    hd = d // num_heads
    qkv = ln(x, g1, b1) @ qkv_w
    q, k, v = (
        qkv[..., i * d : (i + 1) * d]
        .reshape(batch, n, num_heads, hd)
        .transpose(0, 2, 1, 3)
        for i in range(3)
    )
    scores = q @ k.transpose(0, 1, 3, 2) * hd**-0.5
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    attn = scores / scores.sum(-1, keepdims=True)
    out = (attn @ v).transpose(0, 2, 1, 3).reshape(batch, n, d)
    x = x + out @ proj_w
    h = ln(x, g2, b2) @ fc1
    h = 0.5 * h * (1 + np.vectorize(erf)(h / np.sqrt(2)))
    return x + h @ fc2


def test_transformer_block_matches_numpy():
    rng = np.random.default_rng(4)
    block = layers.AIMTransformerBlock(hidden_dim=16, num_heads=4)
    x = rng.normal(size=(3, 7, 16)).astype("float32")
    block(x)
    for var in block.weights:
        var.assign(rng.normal(scale=0.3, size=var.shape).astype("float32"))
    weights = [
        to_numpy(block.attn_qkv.kernel),
        to_numpy(block.attn_proj.kernel),
        to_numpy(block.norm_1.gamma),
        to_numpy(block.norm_1.beta),
        to_numpy(block.mlp_fc1.kernel),
        to_numpy(block.mlp_fc2.kernel),
        to_numpy(block.norm_2.gamma),
        to_numpy(block.norm_2.beta),
    ]
    expected = numpy_block(x.astype("float64"), weights, 4)
    np.testing.assert_allclose(to_numpy(block(x)), expected, atol=2e-5)


def test_transformer_block_has_no_projection_bias():
    block = layers.AIMTransformerBlock(hidden_dim=16, num_heads=2)
    block(np.zeros((1, 3, 16), "float32"))
    names = sorted(v.path for v in block.weights)
    assert all("bias" not in name for name in names), names
    assert len(names) == 8  # 4 kernels + 2 LayerNorms x (gamma, beta)


def test_block_rejects_heads_not_dividing_width():
    with pytest.raises(ValueError, match="num_heads"):
        layers.AIMTransformerBlock(hidden_dim=10, num_heads=3)


def test_block_mask_batch_equal_to_heads_is_not_misread():
    # With B == num_heads a (B, N, N) mask broadcast from the right would be
    # read per head; the block must apply it per sample.
    rng = np.random.default_rng(5)
    block = layers.AIMTransformerBlock(hidden_dim=8, num_heads=2)
    x = rng.normal(size=(2, 4, 8)).astype("float32")
    full = np.ones((2, 4, 4), bool)
    causal = np.tril(np.ones((4, 4), bool))
    mask = np.stack([full[0], causal])
    both = to_numpy(block(x, attention_mask=mask))
    alone0 = to_numpy(block(x[:1], attention_mask=full[:1]))
    alone1 = to_numpy(block(x[1:], attention_mask=causal[None]))
    np.testing.assert_allclose(both[0], alone0[0], atol=1e-5)
    np.testing.assert_allclose(both[1], alone1[0], atol=1e-5)
