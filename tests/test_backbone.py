"""AIMBackbone: shapes, any input size, feature extraction, bad inputs,
serialisation and mixed precision."""

import keras
import numpy as np
import pytest
from conftest import TINY
from conftest import to_numpy
from harness import run_model_test

import keras_aim


def test_tokens_and_features_shapes(tiny_backbone, images):
    tokens = tiny_backbone(images)
    assert tuple(tokens.shape) == (2, 49, 48)
    features = tiny_backbone.extract_features(images, layers=[0, 2])
    assert [tuple(f.shape) for f in features] == [(2, 49, 48)] * 2
    assert tiny_backbone.input.name == "images"


def test_encode_without_mask_equals_call(tiny_backbone, images):
    np.testing.assert_allclose(
        to_numpy(tiny_backbone.encode(images)),
        to_numpy(tiny_backbone(images)),
        atol=1e-6,
    )


def test_last_block_feature_plus_final_norm_is_output(tiny_backbone, images):
    (last,) = tiny_backbone.extract_features(images, layers=[-1])
    normed = tiny_backbone.post_trunk_norm(last)
    np.testing.assert_allclose(
        to_numpy(normed), to_numpy(tiny_backbone(images)), atol=1e-6
    )


def test_features_are_block_outputs_in_order(tiny_backbone, images):
    features = tiny_backbone.extract_features(images, layers=[2, 0, 1])
    x = tiny_backbone.position_embedding(tiny_backbone.patch_embedding(images))
    outputs = []
    for block in tiny_backbone.transformer_blocks:
        x = block(x)
        outputs.append(to_numpy(x))
    for got, index in zip(features, [2, 0, 1]):
        np.testing.assert_allclose(to_numpy(got), outputs[index], atol=1e-6)


def test_any_size_with_dynamic_shape(images):
    backbone = keras_aim.AIMBackbone(**{**TINY, "image_shape": (None, None, 3)})
    for height, width in ((28, 20), (16, 36), (28, 28)):
        x = np.random.default_rng(height).normal(size=(1, height, width, 3))
        tokens = backbone(x.astype("float32"))
        assert tuple(tokens.shape) == (1, (height // 4) * (width // 4), 48)


def test_fixed_shape_model_accepts_other_sizes_through_encode(tiny_backbone):
    x = np.zeros((1, 20, 32, 3), "float32")
    assert tuple(tiny_backbone.encode(x).shape) == (1, 40, 48)
    with pytest.raises(ValueError, match="image_shape=\\(None, None, 3\\)"):
        tiny_backbone(x)


@pytest.mark.parametrize(
    "shape,match",
    [
        ((1, 28, 28, 4), "3 channels"),
        ((1, 30, 28, 3), "height 30 is not divisible"),
        ((1, 28, 26, 3), "width 26 is not divisible"),
        ((28, 28, 3), "4-D batch"),
    ],
)
def test_bad_images(tiny_backbone, shape, match):
    with pytest.raises(ValueError, match=match):
        tiny_backbone(np.zeros(shape, "float32"))
    with pytest.raises(ValueError, match=match):
        tiny_backbone.extract_features(np.zeros(shape, "float32"), [0])


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(num_heads=5), "num_heads"),
        (dict(hidden_dim=42, num_heads=3), "divisible by 4"),
        (dict(patch_size=0), "patch_size"),
        (dict(image_shape=(30, 28, 3)), "not divisible"),
        (dict(image_shape=(28, 28)), "image_shape"),
        (dict(num_layers=1.5), "num_layers"),
    ],
)
def test_bad_config(overrides, match):
    with pytest.raises(ValueError, match=match):
        keras_aim.AIMBackbone(**{**TINY, **overrides})


@pytest.mark.parametrize("layers", [[3], [-4], [], ["a"]])
def test_bad_feature_layers(tiny_backbone, images, layers):
    with pytest.raises(ValueError):
        tiny_backbone.extract_features(images, layers=layers)


def test_model_harness(tiny_backbone, images, tmp_path):
    config = tiny_backbone.get_config()
    assert keras_aim.AIMBackbone.from_config(config).get_config() == config
    run_model_test(
        tiny_backbone,
        images,
        (2, 49, 48),
        tmp_path,
        mixed_precision_model=keras_aim.AIMBackbone(
            **TINY, dtype="mixed_bfloat16"
        ),
        fit_data=(images, np.zeros((2, 49, 48), "float32")),
        compile_kwargs=dict(optimizer="sgd", loss="mse"),
    )


def test_stable_variable_paths(tiny_backbone):
    paths = {v.path for v in tiny_backbone.weights}
    for expected in (
        "patch_embedding/proj/kernel",
        "patch_embedding/proj/bias",
        "patch_embedding/norm/gamma",
        "block_0/attn_qkv/kernel",
        "block_2/mlp_fc2/kernel",
        "block_1/norm_2/beta",
        "post_trunk_norm/gamma",
    ):
        assert expected in paths


def test_parameter_count_formula_on_tiny(tiny_backbone):
    assert tiny_backbone.count_params() == expected_params(48, 3, 4)


def expected_params(width, depth, patch, channels=3):
    embed = patch * patch * channels * width + width + 2 * width
    block = 4 * width + 3 * width * width + width * width + 8 * width * width
    return embed + depth * block + 2 * width


@pytest.mark.parametrize(
    "name,count",
    [
        ("aim_600m", 680_535_552),
        ("aim_1b", 1_209_370_624),
        ("aim_3b", 2_720_025_600),
        ("aim_7b", 6_445_404_160),
    ],
)
def test_released_sizes_formula(name, count):
    arch = keras_aim.PRESETS[name]["backbone"]
    assert expected_params(arch["hidden_dim"], arch["num_layers"], 14) == count


@pytest.mark.extra_large  # test_presets builds the same trunk in its classifier
def test_aim_600m_architecture_offline():
    backbone = keras_aim.AIMBackbone.from_preset(
        "aim_600m", load_weights=False, dtype="bfloat16"
    )
    assert backbone.count_params() == 680_535_552
    assert backbone.num_heads == 12 and backbone.patch_size == 14
    assert backbone.image_shape == (224, 224, 3)
    assert all(v.dtype == "bfloat16" for v in backbone.weights)


def test_mixed_precision_forward_and_fit(images):
    backbone = keras_aim.AIMBackbone(**TINY, dtype="mixed_bfloat16")
    tokens = backbone(images)
    assert keras.backend.standardize_dtype(tokens.dtype) == "bfloat16"
    assert all(v.dtype == "float32" for v in backbone.trainable_weights)
    head = keras.layers.GlobalAveragePooling1D()(backbone.output)
    model = keras.Model(backbone.input, keras.layers.Dense(1)(head))
    model.compile(optimizer="adam", loss="mse")
    history = model.fit(images, np.zeros((2, 1)), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
