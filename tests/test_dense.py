"""`AIMDense` gives Keras Dense's values and gradients (its JAX backward is
our own): one SGD step (learning rate 1) moves each weight by minus its
gradient, which is checked against NumPy and against `keras.layers.Dense`."""

import keras
import numpy as np
import pytest
from conftest import to_numpy
from harness import run_layer_test

from keras_aim import layers


def test_layer_harness(tmp_path):
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype("float32")
    run_layer_test(
        layers.AIMDense,
        dict(units=5, use_bias=True),
        x,
        (2, 3, 5),
        tmp_path=tmp_path,
    )


def _sgd_step(layer, x):
    """Weights after one SGD step on `mean(layer(x) ** 2)`."""
    inputs = keras.Input(x.shape[1:])
    model = keras.Model(inputs, layer(inputs))
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    model.train_on_batch(x, np.zeros(model.output.shape[1:], "float32")[None])
    return [to_numpy(w) for w in layer.weights]


# Wider outputs (x is transposed in the kernel gradient) and narrower
# outputs (g is), with and without a bias, 2-D and 3-D inputs.
@pytest.mark.parametrize(
    "shape, units, use_bias",
    [((4, 3, 6), 10, True), ((4, 3, 10), 6, False), ((5, 7), 3, True)],
)
def test_gradient_step_matches_numpy(shape, units, use_bias):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype("float32")
    layer = layers.AIMDense(units, use_bias=use_bias)
    layer.build(shape)
    kernel = rng.normal(size=(shape[-1], units)).astype("float32")
    layer.kernel.assign(kernel)
    bias = rng.normal(size=(units,)).astype("float32")
    if use_bias:
        layer.bias.assign(bias)
    else:
        bias = np.zeros(units, "float32")
    y = x @ kernel + bias
    g = 2 * y / y.size  # d mean(y ** 2) / dy
    x2, g2 = x.reshape(-1, shape[-1]), g.reshape(-1, units)
    after = _sgd_step(layer, x)
    np.testing.assert_allclose(after[0], kernel - x2.T @ g2, atol=1e-5)
    if use_bias:
        np.testing.assert_allclose(after[1], bias - g2.sum(0), atol=1e-5)


def _stacks(dtype, lora_rank):
    """Two Dense layers (8 -> 12 -> 6) of Keras and of ours, same weights.

    The second layer's input gradient reaches the first layer's weights,
    and the two layers take the two branches of the kernel gradient.
    """
    rng = np.random.default_rng(1)
    stacks = []
    for cls in (keras.layers.Dense, layers.AIMDense):
        stack = []
        for units, width in ((12, 8), (6, 12)):
            layer = cls(units, dtype=dtype)
            layer.build((None, 5, width))
            if lora_rank:
                layer.enable_lora(lora_rank)
            stack.append(layer)
        stacks.append(keras.Sequential(stack))
    for pair in zip(stacks[0].weights, stacks[1].weights):
        value = rng.normal(size=pair[0].shape).astype("float32")
        for w in pair:
            w.assign(value)
    return stacks


@pytest.mark.parametrize(
    "dtype, lora_rank, rtol, atol",
    [
        ("float32", 0, 1e-5, 1e-6),
        ("float32", 2, 1e-5, 1e-6),
        # bfloat16 compute: within two bfloat16 steps (measured: equal).
        ("mixed_bfloat16", 0, 8e-3, 1e-2),
    ],
)
def test_matches_keras_dense(dtype, lora_rank, rtol, atol):
    x = np.random.default_rng(2).normal(size=(3, 5, 8)).astype("float32")
    reference, ours = _stacks(dtype, lora_rank)
    np.testing.assert_allclose(
        to_numpy(ours(x)).astype("float32"),
        to_numpy(reference(x)).astype("float32"),
        rtol=rtol,
        atol=atol,
    )
    before = [to_numpy(w) for w in ours.weights]
    trainable = [id(w) for w in ours.trainable_weights]
    expected = _sgd_step(reference, x)
    got = _sgd_step(ours, x)
    assert len(got) == len(expected) == (8 if lora_rank else 4)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    # Every trainable weight moved and the frozen ones did not.
    for w, old, new in zip(ours.weights, before, got):
        assert np.array_equal(old, new) == (id(w) not in trainable), w.path
