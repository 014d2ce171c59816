"""Quantization: every projection, outputs near float, save/load, QLoRA."""

import keras
import numpy as np
import pytest
from conftest import to_numpy

import keras_aim
from keras_aim.layers.dense import AIMDense
from keras_aim.models import quantization

MODES = quantization.MODES
ARCH = dict(
    image_shape=(16, 16, 3),
    patch_size=4,
    hidden_dim=32,
    num_layers=2,
    num_heads=2,
)
# Four projections per block (attn_qkv, attn_proj, mlp_fc1, mlp_fc2); the
# attentive probe adds key, value and classifier.
BACKBONE_PROJECTIONS = 4 * ARCH["num_layers"]
CLASSIFIER_PROJECTIONS = BACKBONE_PROJECTIONS + 3
# Smallest cosine similarity to the float model, (tokens, logits). int8
# quantizes weights per output channel and inputs per token to 255 levels;
# int4 has 16 levels per weight (groups of 128 inputs, weights only);
# float8 (e4m3) keeps 3 mantissa bits of weights and inputs. Measured on
# this model over 4 seeds and the three backends: int8 >= 0.99993, int4 >=
# 0.9941, float8 >= 0.9978.
MIN_COSINE = {"int8": 0.999, "int4": 0.99, "float8": 0.995}


def make_classifier(seed=0):
    keras.utils.set_random_seed(seed)
    backbone = keras_aim.AIMBackbone(**ARCH)
    return keras_aim.AIMImageClassifier(
        backbone, num_classes=10, probe_layers=[0, 1]
    )


def images(batch=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, 16, 16, 3)).astype("float32")


def projections(model):
    layers = model._flatten_layers()
    return [layer for layer in layers if isinstance(layer, AIMDense)]


def cosine(a, b):
    a, b = to_numpy(a).ravel(), to_numpy(b).ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def variable_specs(model):
    return sorted(
        (v.path, keras.backend.standardize_dtype(v.dtype), tuple(v.shape))
        for v in model.weights
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.large(backend="torch")
def test_every_projection_is_quantized_and_stays_close_to_float(mode):
    classifier = make_classifier()
    layers = projections(classifier)
    assert len(layers) == CLASSIFIER_PROJECTIONS
    x = images(4)
    tokens, logits = classifier.backbone(x), classifier(x)
    classifier.quantize(mode)
    assert quantization.quantized_layers(classifier) == {
        layer.path: mode for layer in layers
    }
    assert len(quantization.quantized_layers(classifier.backbone)) == (
        BACKBONE_PROJECTIONS
    )
    kernel = classifier.backbone.transformer_blocks[0].attn_qkv._kernel
    want = "float32" if mode == "float8" else "int8"
    assert keras.backend.standardize_dtype(kernel.dtype) == want
    conv = classifier.backbone.patch_embedding.proj.kernel
    assert keras.backend.standardize_dtype(conv.dtype) == "float32"
    assert cosine(classifier.backbone(x), tokens) > MIN_COSINE[mode]
    assert cosine(classifier(x), logits) > MIN_COSINE[mode]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.large(backend="torch")
def test_every_projection_of_the_backbone_is_quantized(mode):
    backbone = make_classifier().backbone
    backbone.quantize(mode)
    found = quantization.quantized_layers(backbone)
    assert len(found) == BACKBONE_PROJECTIONS == len(projections(backbone))
    assert set(found.values()) == {mode}


@pytest.mark.parametrize("mode", MODES)
def test_aim_dense_quantizes_as_keras_dense(mode):
    """AIMDense routes to Keras' own quantized kernels, bit for bit."""
    x = images().reshape(3, 16, 48)[:, :, :40]
    ours = AIMDense(24, use_bias=True)
    keras_dense = keras.layers.Dense(24, use_bias=True)
    ours.build(x.shape)
    keras_dense.build(x.shape)
    rng = np.random.default_rng(1)
    for a, b in zip(ours.weights, keras_dense.weights):
        value = rng.normal(size=a.shape).astype("float32")
        a.assign(value)
        b.assign(value)
    ours.quantize(mode)
    keras_dense.quantize(mode)
    assert ours.quantization_mode == mode
    np.testing.assert_array_equal(to_numpy(ours(x)), to_numpy(keras_dense(x)))


def test_int8_projection_matches_numpy():
    """Per-channel int8 weights, per-token int8 inputs, int32 products."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 5, 16)).astype("float32")
    w = rng.normal(size=(16, 8)).astype("float32")
    layer = AIMDense(8, use_bias=False)
    layer.build(x.shape)
    layer.kernel.assign(w)
    layer.quantize("int8")
    eps = np.float32(keras.backend.epsilon())
    w_scale = np.float32(127) / (np.abs(w).max(axis=0, keepdims=True) + eps)
    w_q = np.clip(np.round(w * w_scale), -127, 127)
    x_scale = np.float32(127) / (np.abs(x).max(axis=-1, keepdims=True) + eps)
    x_q = np.clip(np.round(x * x_scale), -127, 127)
    want = (x_q @ w_q) / (w_scale * x_scale)
    np.testing.assert_allclose(to_numpy(layer(x)), want, rtol=1e-5, atol=1e-6)


def _int8_in_make_test(modes):
    """`make test` runs the int8 cell on torch; the other modes (the same
    code path, another kernel layout) run in `make test-all`."""
    return [
        pytest.param(
            mode,
            marks=pytest.mark.large(backend="torch")
            if mode == "int8"
            else pytest.mark.extra_large,
        )
        for mode in modes
    ]


@pytest.mark.parametrize("mode", _int8_in_make_test(MODES))
def test_keras_file_and_preset_round_trips(mode, tmp_path):
    classifier = make_classifier()
    classifier.quantize(mode)
    x = images()
    want = to_numpy(classifier(x))
    path = str(tmp_path / "classifier.keras")
    classifier.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, keras_aim.AIMImageClassifier)
    assert variable_specs(restored) == variable_specs(classifier)
    np.testing.assert_array_equal(to_numpy(restored(x)), want)

    classifier.save_to_preset(str(tmp_path / "preset"))
    restored = keras_aim.AIMImageClassifier.from_preset(
        str(tmp_path / "preset")
    )
    assert variable_specs(restored) == variable_specs(classifier)
    np.testing.assert_array_equal(to_numpy(restored(x)), want)
    backbone = keras_aim.AIMBackbone.from_preset(str(tmp_path / "preset"))
    assert variable_specs(backbone) == variable_specs(classifier.backbone)
    np.testing.assert_array_equal(
        to_numpy(backbone(x)), to_numpy(classifier.backbone(x))
    )


@pytest.mark.large(backend="torch")
def test_backbone_preset_round_trip_and_a_new_head(tmp_path):
    backbone = make_classifier().backbone
    backbone.quantize("int8")
    x = images()
    backbone.save_to_preset(str(tmp_path / "backbone"))
    restored = keras_aim.AIMBackbone.from_preset(str(tmp_path / "backbone"))
    np.testing.assert_array_equal(to_numpy(restored(x)), to_numpy(backbone(x)))
    head = keras_aim.AIMImageClassifier(restored, num_classes=3)
    found = quantization.quantized_layers(head)
    assert len(found) == BACKBONE_PROJECTIONS  # a new head starts float
    assert not any(path.startswith("probe_head") for path in found)


@pytest.mark.large(backend="torch")
def test_preset_dtype_override_keeps_the_quantized_layers(tmp_path):
    classifier = make_classifier()
    classifier.quantize("int8")
    classifier.save_to_preset(str(tmp_path / "preset"))
    restored = keras_aim.AIMImageClassifier.from_preset(
        str(tmp_path / "preset"), dtype="bfloat16"
    )
    assert quantization.quantized_layers(restored) == (
        quantization.quantized_layers(classifier)
    )
    qkv = restored.backbone.transformer_blocks[0].attn_qkv
    assert qkv.compute_dtype == "bfloat16"
    norm = restored.backbone.post_trunk_norm
    assert keras.backend.standardize_dtype(norm.gamma.dtype) == "bfloat16"
    x = images()
    got = to_numpy(restored(x))
    assert cosine(got, classifier(x)) > 0.99
    with pytest.raises(ValueError, match="float `dtype`"):
        keras_aim.AIMImageClassifier.from_preset(
            str(tmp_path / "preset"), dtype="int8_from_float32"
        )


def test_a_bad_mode_is_refused():
    classifier = make_classifier()
    for mode in ["int3", "gptq", None, 8, "INT8"]:
        with pytest.raises(ValueError, match="`mode` must be one of"):
            classifier.quantize(mode)
    assert not quantization.quantized_layers(classifier)


@pytest.mark.large(backend="torch")
def test_quantizing_twice_is_refused():
    backbone = make_classifier().backbone
    backbone.quantize("int8")
    with pytest.raises(ValueError, match="already quantized"):
        backbone.quantize("int4")


@pytest.mark.large(backend="torch")
def test_filters_select_projections():
    backbone = make_classifier().backbone
    backbone.quantize("int8", filters="mlp_")
    found = quantization.quantized_layers(backbone)
    assert sorted(found) == [
        f"block_{i}/mlp_fc{j}" for i in range(2) for j in (1, 2)
    ]
    with pytest.raises(ValueError, match="selects no projection"):
        make_classifier().quantize("int8", filters="nothing")


@pytest.mark.parametrize("mode", _int8_in_make_test(["int8", "int4"]))
def test_qlora_trains_only_the_adapters_and_round_trips(mode, tmp_path):
    backbone = make_classifier().backbone
    backbone.quantize(mode)
    variables = backbone.enable_lora(2)
    assert {id(v) for v in backbone.trainable_weights} == {
        id(v) for v in variables
    }
    qkv = backbone.transformer_blocks[0].attn_qkv
    kernel = to_numpy(qkv._kernel)
    x = images()
    before = to_numpy(backbone(x))
    backbone.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    backbone.fit(x, np.ones((3, 16, 32), "float32"), epochs=1, verbose=0)
    np.testing.assert_array_equal(to_numpy(qkv._kernel), kernel)
    assert np.abs(to_numpy(qkv.lora_kernel_b)).max() > 0
    rng = np.random.default_rng(3)
    for variable in variables:
        variable.assign(rng.normal(scale=0.05, size=variable.shape))
    after = to_numpy(backbone(x))
    assert np.abs(after - before).max() > 1e-3
    backbone.save_lora_weights(str(tmp_path / "lora.weights.h5"))
    fresh = make_classifier().backbone
    fresh.quantize(mode)
    fresh.load_lora_weights(str(tmp_path / "lora.weights.h5"))
    np.testing.assert_array_equal(to_numpy(fresh(x)), after)


@pytest.mark.large(backend="torch")
def test_lora_on_float8_and_merging_quantized_kernels_are_refused():
    backbone = make_classifier().backbone
    backbone.quantize("float8")
    with pytest.raises(ValueError, match="float8"):
        backbone.enable_lora(2)
    backbone = make_classifier().backbone
    backbone.quantize("int8")
    backbone.enable_lora(2)
    with pytest.raises(ValueError, match="re-quantiz"):
        backbone.merge_lora_weights()
    with pytest.raises(ValueError, match="LoRA is enabled"):
        make_lora_then_quantize()


def make_lora_then_quantize():
    backbone = make_classifier().backbone
    backbone.enable_lora(2)
    backbone.quantize("int8")
