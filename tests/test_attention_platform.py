"""Every attention call keeps AIM's semantics on TPU (issue 19).

Keras 3.15's JAX `dot_product_attention` takes the Splash flash path on any
TPU; that path turns unmasked attention causal, reads only `mask[0]` and
drops the `head_dim ** -0.5` scale. keras_aim passes `flash_attention=False`
there. No TPU is needed: the platform checks are faked and, on JAX, Keras'
Splash path is run in Pallas interpret mode on the CPU.
"""

import functools
import types

import keras
import numpy as np
import pytest
import reference as ref
from conftest import TINY
from conftest import to_numpy

import keras_aim
from keras_aim import layers
from keras_aim.layers import attentive_probe
from keras_aim.layers import transformer_block


@pytest.fixture
def on_tpu(monkeypatch):
    """keras_aim believes it runs on a TPU."""
    monkeypatch.setattr(
        transformer_block, "_accelerator_platform", lambda: "tpu"
    )


@pytest.fixture
def attention_calls(monkeypatch):
    """Records the arguments of every `ops.dot_product_attention` call."""
    calls = []
    original = keras.ops.dot_product_attention

    def recording(query, key, value, **kwargs):
        calls.append(kwargs)
        return original(query, key, value, **kwargs)

    for module in (transformer_block, attentive_probe):
        monkeypatch.setattr(module.ops, "dot_product_attention", recording)
    return calls


@pytest.fixture
def keras_sees_a_tpu(monkeypatch, on_tpu):
    """Keras' JAX attention believes it runs on a TPU; Splash is interpreted."""
    if keras.backend.backend() != "jax":
        pytest.skip("the Splash path is JAX's")
    import jax

    splash = pytest.importorskip(
        "jax.experimental.pallas.ops.tpu.splash_attention."
        "splash_attention_kernel"
    )
    from keras.src.backend.jax import nn as jax_nn

    if not hasattr(jax_nn, "wrap_flash_attention"):
        pytest.skip("this Keras has no Splash path to emulate")

    class JaxOnATPU:
        def __getattr__(self, name):
            return getattr(jax, name)

        def devices(self, *args, **kwargs):
            return [types.SimpleNamespace(platform="tpu")]

    monkeypatch.setattr(jax_nn, "jax", JaxOnATPU())
    monkeypatch.setattr(
        splash,
        "make_splash_mha",
        functools.partial(splash.make_splash_mha, interpret=True),
    )


def numpy_attention(q, k, v, mask=None, scale=None):
    """`(B, T, H, d)` attention in float64; `mask` is `(B, T, S)`."""
    q, k, v = (
        np.asarray(a, np.float64).transpose(0, 2, 1, 3) for a in (q, k, v)
    )
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = np.einsum("bhtd,bhsd->bhts", q, k) * scale
    if mask is not None:
        logits = np.where(mask[:, None], logits, -np.inf)
    out = np.einsum("bhts,bhsd->bhtd", ref.softmax(logits), v)
    return out.transpose(0, 2, 1, 3)


def numpy_keras_block(block, x, attention_mask=None):
    """`reference.numpy_block` on a Keras block's weights (torch layout)."""
    p = "trunk.blocks.0."
    sd = {}
    for name in ("norm_1", "norm_2"):
        sd[f"{p}{name}.weight"] = to_numpy(getattr(block, name).gamma)
        sd[f"{p}{name}.bias"] = to_numpy(getattr(block, name).beta)
    for name in ("attn_qkv", "attn_proj", "mlp_fc1", "mlp_fc2"):
        torch_name = name.replace("_", ".")
        sd[f"{p}{torch_name}.weight"] = to_numpy(getattr(block, name).kernel).T
    x = np.asarray(x, np.float64)
    return ref.numpy_block(sd, 0, x, block.num_heads, attention_mask)


def random_block(seed, hidden_dim=16, num_heads=2, tokens=8):
    rng = np.random.default_rng(seed)
    block = layers.AIMTransformerBlock(hidden_dim, num_heads)
    x = rng.normal(size=(2, tokens, hidden_dim)).astype("float32")
    block(x)
    for var in block.weights:
        var.assign(rng.normal(scale=0.3, size=var.shape).astype("float32"))
    return block, x


def test_flash_attention_setting_per_platform(monkeypatch):
    setting = transformer_block.flash_attention_setting
    assert setting("tpu") is False
    for platform in ("gpu", "cpu"):
        assert setting(platform) is None
    for detected, expected in (("tpu", False), ("gpu", None), (None, None)):
        monkeypatch.setattr(
            transformer_block, "_accelerator_platform", lambda p=detected: p
        )
        assert setting() is expected, detected


def test_accelerator_platform_is_where_jax_runs():
    platform = transformer_block._accelerator_platform()
    if keras.backend.backend() == "jax":
        assert platform in ("cpu", "gpu", "tpu")
    else:
        assert platform is None


@pytest.mark.parametrize("masked", [False, True], ids=["no_mask", "prefix"])
def test_block_turns_flash_off_on_tpu(on_tpu, attention_calls, masked):
    block, x = random_block(0)
    attention_calls.clear()  # the build call
    prefix = [1, 5]
    mask = layers.prefix_causal_mask(prefix, 8) if masked else None
    got = to_numpy(block(x, attention_mask=mask))
    assert [c["flash_attention"] for c in attention_calls] == [False]
    sent = attention_calls[0]["mask"]
    if masked:
        assert tuple(sent.shape) == (2, 1, 8, 8)
    else:
        assert sent is None
    want_mask = ref.numpy_prefix_causal_mask(prefix, 8) if masked else None
    want = numpy_keras_block(block, x, want_mask)
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_probe_turns_flash_off_on_tpu(on_tpu, attention_calls):
    head = layers.AIMAttentivePooling(hidden_dim=16, num_heads=2, num_classes=3)
    head(np.ones((2, 5, 16), "float32"))
    assert [c["flash_attention"] for c in attention_calls] == [False]
    assert attention_calls[0].get("mask") is None


def test_no_attention_call_in_the_models_keeps_flash_on_tpu(
    on_tpu, attention_calls
):
    # Runs the classifier (trunk and attentive probe, no mask) and a
    # pretraining forward pass (prefix masks): any attention call site that
    # forgets the setting shows up here.
    images = np.zeros((2, 28, 28, 3), "float32")
    backbone = keras_aim.AIMBackbone(**TINY)
    classifier = keras_aim.AIMImageClassifier(
        backbone, num_classes=3, probe_layers=[1, 2]
    )
    classifier(images)
    pretrainer = keras_aim.AIMPretrainer(
        backbone, head_hidden_dim=16, head_num_layers=1
    )
    pretrainer(images, training=True)
    flash = [c["flash_attention"] for c in attention_calls]
    masks = [c.get("mask") is not None for c in attention_calls]
    assert len(flash) >= 2 * TINY["num_layers"] + 1
    assert any(masks) and not all(masks)
    assert set(flash) == {False}


def test_keras_tpu_flash_path_is_causal_and_unscaled(keras_sees_a_tpu):
    # Documents the Keras 3.15 behaviour the setting guards against. If this
    # fails after a Keras upgrade, revisit `flash_attention_setting`.
    rng = np.random.default_rng(1)
    q, k, v = (rng.normal(size=(2, 128, 2, 8)).astype("float32") for _ in "qkv")
    got = to_numpy(keras.ops.dot_product_attention(q, k, v))
    causal = np.broadcast_to(np.tril(np.ones((128, 128), bool)), (2, 128, 128))
    np.testing.assert_allclose(
        got, numpy_attention(q, k, v, causal, scale=1.0), atol=1e-4
    )
    assert np.abs(got - numpy_attention(q, k, v)).max() > 0.1


@pytest.mark.parametrize("masked", [False, True], ids=["no_mask", "prefix"])
def test_block_is_exact_on_an_emulated_tpu(keras_sees_a_tpu, masked):
    block, x = random_block(2, tokens=128)
    prefix = [3, 100]
    mask = layers.prefix_causal_mask(prefix, 128) if masked else None
    got = to_numpy(block(x, attention_mask=mask))
    want_mask = ref.numpy_prefix_causal_mask(prefix, 128) if masked else None
    want = numpy_keras_block(block, x, want_mask)
    np.testing.assert_allclose(got, want, atol=5e-5)
