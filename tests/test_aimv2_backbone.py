"""AIMv2Backbone and its layers: shapes, NumPy parity of the layers, the
exact parameter count of every preset, the model harness, LoRA, quantize
and the layout map."""

import types

import keras
import numpy as np
import pytest
from harness import run_layer_test
from harness import run_model_test

import keras_aim
from keras_aim.distribution import layout
from keras_aim.layers.learned_position_embedding import bicubic_resize_matrix
from keras_aim.models.aimv2 import aimv2_presets
from keras_aim.models.aimv2.aimv2_presets import PRESETS
from keras_aim.models.aimv2.aimv2_presets import parameter_count
from tests import reference_aimv2 as ref2

TINY = dict(
    image_shape=(28, 28, 3),
    patch_size=4,
    hidden_dim=48,
    num_layers=2,
    num_heads=2,
    intermediate_dim=128,
)


def numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x), np.float64)


@pytest.fixture(scope="module")
def tiny():
    return keras_aim.AIMv2Backbone(**TINY)


def images(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


# --- Layers ------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [(4, 4), (4, 7), (7, 3), (5, 11), (16, 24)])
def test_bicubic_matrix_matches_torch_interpolate(sizes):
    torch = pytest.importorskip("torch")
    in_size, out_size = sizes
    signal = np.random.default_rng(0).normal(size=(1, 1, in_size, 1))
    want = torch.nn.functional.interpolate(
        torch.from_numpy(signal),
        size=(out_size, 1),
        mode="bicubic",
        align_corners=False,
    ).numpy()[0, 0, :, 0]
    got = numpy(bicubic_resize_matrix(in_size, out_size)) @ signal[0, 0, :, 0]
    # float32 weights: about 1e-7 relative each.
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_reference_resize_matches_torch_interpolate():
    torch = pytest.importorskip("torch")
    grid = np.random.default_rng(1).normal(size=(3, 4, 2))
    want = torch.nn.functional.interpolate(
        torch.from_numpy(grid.transpose(2, 0, 1)[None]),
        size=(5, 2),
        mode="bicubic",
        align_corners=False,
    )[0].numpy()
    got = ref2.resize_bicubic(grid, 5, 2).transpose(2, 0, 1)
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_learned_position_embedding_resamples_like_the_reference():
    layer = keras_aim.layers.LearnedPositionEmbedding(grid_size=(3, 3))
    layer.build((None, 3, 3, 8))
    table = np.random.default_rng(2).normal(size=(9, 8)).astype("float32")
    layer.set_weights([table])
    grid = np.zeros((1, 4, 6, 8), "float32")
    got = numpy(layer(grid))[0]
    want = ref2.resize_bicubic(table.reshape(3, 3, 8), 4, 6).reshape(24, 8)
    np.testing.assert_allclose(got, want, atol=1e-5)
    same = numpy(layer(np.zeros((1, 3, 3, 8), "float32")))[0]
    np.testing.assert_array_equal(same, table)


def test_learned_position_embedding_harness(tmp_path):
    run_layer_test(
        keras_aim.layers.LearnedPositionEmbedding,
        {"grid_size": (2, 3)},
        images((2, 2, 3, 8)),
        (2, 6, 8),
        tmp_path=tmp_path,
    )


def test_swiglu_block_harness(tmp_path):
    run_layer_test(
        keras_aim.layers.AIMv2TransformerBlock,
        {"hidden_dim": 16, "num_heads": 2, "intermediate_dim": 40},
        images((2, 5, 16)),
        (2, 5, 16),
        tmp_path=tmp_path,
    )


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="position_embedding"):
        keras_aim.AIMv2Backbone(**TINY, position_embedding="rope")
    with pytest.raises(ValueError, match="position_grid_size"):
        keras_aim.AIMv2Backbone(**{**TINY, "image_shape": (None, None, 3)})
    with pytest.raises(ValueError, match="intermediate_dim"):
        keras_aim.AIMv2Backbone(**{**TINY, "intermediate_dim": 0})
    with pytest.raises(ValueError, match="layer_norm_epsilon"):
        keras_aim.AIMv2Backbone(**TINY, layer_norm_epsilon=0.0)
    with pytest.raises(ValueError, match="norm"):
        keras_aim.layers.AIMPatchEmbedding(8, 2, norm="batch")


# --- The model ---------------------------------------------------------------


@pytest.mark.large(backend="torch")
def test_shapes_any_size_and_features(tiny):
    x = images((2, 28, 28, 3))
    assert tuple(tiny(x).shape) == (2, 49, 48)
    features = tiny.extract_features(images((1, 20, 36, 3)), layers=[0, -1])
    assert [tuple(f.shape) for f in features] == [(1, 45, 48)] * 2
    encoded = tiny.encode(x)
    np.testing.assert_allclose(numpy(encoded), numpy(tiny(x)), atol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        tiny.extract_features(images((1, 30, 28, 3)), layers=[0])


def test_variable_paths_and_config_round_trip(tiny):
    paths = [v.path for v in tiny.weights]
    assert paths[:4] == [
        "patch_embedding/proj/kernel",
        "patch_embedding/proj/bias",
        "patch_embedding/norm/scale",
        "position_embedding/embeddings",
    ]
    assert "block_1/mlp_fc3/kernel" in paths
    assert paths[-1] == "post_trunk_norm/scale"
    config = tiny.get_config()
    assert config["position_grid_size"] == (7, 7)
    assert config["layer_norm_epsilon"] == 1e-5
    native = keras_aim.AIMv2Backbone(**TINY, position_embedding="sincos")
    assert "position_embedding/embeddings" not in [
        v.path for v in native.weights
    ]


def test_model_harness(tiny, tmp_path):
    x = images((2, 28, 28, 3))
    run_model_test(
        tiny,
        x,
        (2, 49, 48),
        tmp_path,
        mixed_precision_model=keras_aim.AIMv2Backbone(
            **TINY, dtype="mixed_bfloat16"
        ),
        fit_data=(x, np.zeros((2, 49, 48), "float32")),
        compile_kwargs={"optimizer": "sgd", "loss": "mse"},
    )


def test_generic_and_family_from_preset(tiny, tmp_path):
    folder = str(tmp_path / "v2")
    tiny.save_to_preset(folder)
    from keras_aim.models.backbone import Backbone

    assert type(Backbone.from_preset(folder)) is keras_aim.AIMv2Backbone
    with pytest.raises(ValueError, match="AIMv2Backbone.from_preset"):
        keras_aim.AIMBackbone.from_preset(folder)
    wider = keras_aim.AIMv2Backbone.from_preset(
        folder, image_shape=(None, None, 3)
    )
    x = images((1, 28, 28, 3))
    np.testing.assert_allclose(numpy(wider(x)), numpy(tiny(x)), atol=1e-6)


# --- Presets -----------------------------------------------------------------


def test_every_preset_has_its_exact_parameter_count():
    assert len(PRESETS) == 16
    for name, spec in PRESETS.items():
        assert parameter_count(**spec["backbone"]) == spec["parameter_count"]
        assert spec["hub_repo"] == "apple/" + name.replace("_", "-").replace(
            "1b", "1B"
        ).replace("3b", "3B")
        assert len(spec["revision"]) == 40
    counts = {n: s["parameter_count"] for n, s in PRESETS.items()}
    assert counts["aimv2_large_patch14_224"] == 309_197_824
    assert counts["aimv2_large_patch14_448"] == 309_984_256
    assert counts["aimv2_huge_patch14_336"] == 681_343_488
    assert counts["aimv2_1b_patch14_224"] == 1_234_958_336
    assert counts["aimv2_3b_patch14_448"] == 2_723_017_728
    assert counts["aimv2_large_patch14_native"] == 308_935_680
    assert counts["aimv2_large_patch14_224_lit"] == 309_197_824


@pytest.mark.parametrize("kind", ["absolute", "sincos"])
def test_the_count_formula_matches_a_build_and_the_tensor_count(kind):
    config = dict(TINY, position_embedding=kind)
    built = keras_aim.AIMv2Backbone(**config).count_params()
    assert parameter_count(**config) == built
    sd = ref2.random_state_dict_v2(grid=(7, 7) if kind == "absolute" else None)
    assert sum(v.size for v in sd.values()) == built


def test_unknown_names_list_both_families():
    with pytest.raises(ValueError, match="Unknown preset 'aimv2_large_9'"):
        keras_aim.AIMv2Backbone.from_preset("aimv2_large_9")
    with pytest.raises(ValueError, match="aimv2_large_patch14_224"):
        keras_aim.AIMBackbone.from_preset("aim_2b")
    assert aimv2_presets.check_preset_name("aimv2_3b_patch14_336")


# Two 300M-parameter builds (a minute on 2 cores): `make test-all` only;
# `make test` checks the same counts through the formula, which
# test_the_count_formula_matches_a_build_and_the_tensor_count ties to a
# real build.
@pytest.mark.extra_large
def test_the_large_presets_build_with_their_exact_counts():
    for name in ("aimv2_large_patch14_224", "aimv2_large_patch14_native"):
        backbone = keras_aim.AIMv2Backbone.from_preset(name, load_weights=False)
        assert backbone.count_params() == PRESETS[name]["parameter_count"]


# --- LoRA, quantize, layout --------------------------------------------------


def test_lora_covers_the_swiglu_projections(tmp_path):
    backbone = keras_aim.AIMv2Backbone(**TINY)
    variables = backbone.enable_lora(rank=2)
    # 2 blocks x 5 projections x (A, B).
    assert len(variables) == 20
    assert {v.path.split("/")[1] for v in variables} >= {"mlp_fc3"}
    path = str(tmp_path / "lora.weights.h5")
    backbone.save_lora_weights(path)
    twin = keras_aim.AIMv2Backbone(**TINY)
    twin.load_lora_weights(path)
    assert twin.lora_config == backbone.lora_config


@pytest.mark.large(backend="torch")
def test_quantize_int8_keeps_outputs_close(tiny):
    backbone = keras_aim.AIMv2Backbone(**TINY)
    backbone.set_weights(tiny.get_weights())
    x = images((1, 28, 28, 3))
    before = numpy(backbone(x))
    backbone.quantize("int8")
    assert backbone.get_layer("block_0").mlp_fc3.quantization_mode == "int8"
    assert np.abs(numpy(backbone(x)) - before).max() < 0.1


def test_every_variable_has_one_layout_rule():
    # A 3B-shaped mesh check on a tiny model: 2 x 2 divides every width.
    mesh = types.SimpleNamespace(shape=(2, 2), axis_names=("batch", "model"))
    backbone = keras_aim.AIMv2Backbone(**TINY)
    backbone.enable_lora(2)
    found = layout.check_layout(backbone, mesh)
    assert "block_0/mlp_fc3/kernel" in found["sharded"]
    assert "block_1/mlp_fc2/kernel" in found["sharded"]
    assert "position_embedding/embeddings" in found["replicated"]
    assert "block_0/norm_1/scale" in found["replicated"]
    # The 3B's widths on a 2 x 4 (batch x model) mesh.
    big = PRESETS["aimv2_3b_patch14_224"]["backbone"]
    layout.check_dimensions(
        types.SimpleNamespace(shape=(2, 4), axis_names=("batch", "model")),
        big["hidden_dim"],
        big["num_heads"],
        mlp_ratio=big["intermediate_dim"] / big["hidden_dim"],
    )
    rules = layout._rules("model", "batch")
    fc3 = [r for r in rules if r[0].endswith("mlp_fc3/kernel")]
    assert fc3 == [(fc3[0][0], ("batch", "model"), "sharded")]
