"""Keras preset folders: save_to_preset / from_preset round trips, overrides
and clear errors."""

import json
import os

import keras
import numpy as np
import pytest
from conftest import TINY
from conftest import to_numpy

import keras_aim


@pytest.fixture
def classifier_folder(tmp_path, tiny_backbone):
    classifier = keras_aim.AIMImageClassifier(
        tiny_backbone,
        num_classes=5,
        probe_layers=[1, 2],
        image_converter=keras_aim.AIMImageConverter(
            resize_size=32, crop_size=28
        ),
    )
    folder = str(tmp_path / "classifier")
    classifier.save_to_preset(folder)
    return classifier, folder


def test_backbone_round_trip(tmp_path, tiny_backbone, images):
    folder = str(tmp_path / "backbone")
    tiny_backbone.save_to_preset(folder)
    assert sorted(os.listdir(folder)) == [
        "config.json",
        "metadata.json",
        "model.weights.h5",
    ]
    with open(os.path.join(folder, "config.json")) as f:
        assert json.load(f)["class_name"] == "AIMBackbone"
    with open(os.path.join(folder, "metadata.json")) as f:
        assert json.load(f)["parameter_count"] == tiny_backbone.count_params()
    restored = keras_aim.AIMBackbone.from_preset(folder)
    np.testing.assert_array_equal(
        to_numpy(restored(images)), to_numpy(tiny_backbone(images))
    )


def test_classifier_round_trip(classifier_folder, images):
    classifier, folder = classifier_folder
    restored = keras_aim.AIMImageClassifier.from_preset(folder)
    assert restored.probe_layers == [1, 2]
    assert restored.image_converter.get_config() == (
        classifier.image_converter.get_config()
    )
    np.testing.assert_array_equal(
        to_numpy(restored(images)), to_numpy(classifier(images))
    )


def test_backbone_from_classifier_preset(classifier_folder, images):
    classifier, folder = classifier_folder
    backbone = keras_aim.AIMBackbone.from_preset(folder)
    assert type(backbone) is keras_aim.AIMBackbone
    np.testing.assert_array_equal(
        to_numpy(backbone(images)), to_numpy(classifier.backbone(images))
    )


@pytest.mark.large(backend="torch")
def test_image_shape_and_dtype_overrides(classifier_folder, images):
    classifier, folder = classifier_folder
    dynamic = keras_aim.AIMImageClassifier.from_preset(
        folder, image_shape=(None, None, 3)
    )
    wide = np.random.default_rng(1).normal(size=(2, 20, 36, 3))
    wide = wide.astype("float32")
    assert tuple(dynamic(wide).shape) == (2, 5)
    np.testing.assert_allclose(
        to_numpy(dynamic(images)), to_numpy(classifier(images)), atol=1e-6
    )
    half = keras_aim.AIMBackbone.from_preset(folder, dtype="bfloat16")
    assert all(v.dtype == "bfloat16" for v in half.weights)
    np.testing.assert_allclose(
        to_numpy(half(images)),
        to_numpy(classifier.backbone(images)),
        atol=0.15,
    )


def test_probe_layer_override_must_match_saved_head(classifier_folder):
    _, folder = classifier_folder
    with pytest.raises(
        ValueError, match="trained with probe_layers=\\[1, 2\\]"
    ):
        keras_aim.AIMImageClassifier.from_preset(folder, probe_layers=[2])
    model = keras_aim.AIMImageClassifier.from_preset(
        folder, probe_layers=[2], load_weights=False
    )
    assert model.probe_layers == [2]


def test_backbone_preset_has_no_head(tmp_path, tiny_backbone):
    folder = str(tmp_path / "backbone")
    tiny_backbone.save_to_preset(folder)
    with pytest.raises(ValueError, match="without a classification head"):
        keras_aim.AIMImageClassifier.from_preset(folder)
    with pytest.raises(ValueError, match="probe_layers"):
        keras_aim.AIMBackbone.from_preset(folder, probe_layers="last")


def test_unknown_name_and_bad_folders(tmp_path):
    with pytest.raises(ValueError, match="Unknown preset 'aim_2b'"):
        keras_aim.AIMBackbone.from_preset("aim_2b")
    with pytest.raises(ValueError, match="no config.json"):
        keras_aim.AIMBackbone.from_preset(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        keras_aim.AIMBackbone.from_preset(str(tmp_path))
    (tmp_path / "config.json").write_text('{"something": 1}')
    with pytest.raises(ValueError, match="neither a Keras preset"):
        keras_aim.AIMBackbone.from_preset(str(tmp_path))


def test_missing_or_truncated_weights(tmp_path, tiny_backbone):
    folder = tmp_path / "backbone"
    tiny_backbone.save_to_preset(str(folder))
    weights = folder / "model.weights.h5"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="Could not load weights"):
        keras_aim.AIMBackbone.from_preset(str(folder))
    weights.unlink()
    with pytest.raises(ValueError, match="has no weights"):
        keras_aim.AIMBackbone.from_preset(str(folder))
    assert (
        keras_aim.AIMBackbone.from_preset(
            str(folder), load_weights=False
        ).count_params()
        == tiny_backbone.count_params()
    )


def test_weights_of_another_architecture_are_rejected(tmp_path):
    small = keras_aim.AIMBackbone(**{**TINY, "num_layers": 2})
    folder = str(tmp_path / "small")
    small.save_to_preset(folder)
    config_path = os.path.join(folder, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config["config"]["num_layers"] = 3
    with open(config_path, "w") as f:
        json.dump(config, f)
    with pytest.raises(ValueError, match="Could not load weights"):
        keras_aim.AIMBackbone.from_preset(folder)


def test_plain_name_without_network_explains_local_folder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="from_preset\\('/path/to/folder'\\)"):
        keras_aim.AIMBackbone.from_preset("aim_600m")
    with pytest.raises(ValueError, match="keras_aim.convert"):
        keras_aim.AIMImageClassifier.from_preset(
            "aim_600m", probe_layers="last"
        )


# A 690M-parameter build (14 s): `make test-all`; `make test` checks the
# aim_600m geometry through plan.py's FLOP count, whose parameter formula
# is tied to built models (test_plan_table_and_its_parameter_formula).
@pytest.mark.extra_large
def test_classifier_preset_architecture_offline():
    classifier = keras_aim.AIMImageClassifier.from_preset(
        "aim_600m", load_weights=False, dtype="bfloat16", probe_layers="last"
    )
    assert classifier.probe_layers == list(range(18, 24))
    # Backbone plus head; BatchNorm statistics are not trainable parameters.
    trainable = sum(int(np.prod(v.shape)) for v in classifier.trainable_weights)
    assert trainable == 686_791_680
    assert classifier.image_converter is not None


def test_unwritable_preset_folder(tmp_path, tiny_backbone):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ValueError, match="Cannot create the preset folder"):
        tiny_backbone.save_to_preset(str(target / "sub"))


def test_saved_weights_are_keras_h5(tmp_path, tiny_backbone):
    folder = str(tmp_path / "backbone")
    tiny_backbone.save_to_preset(folder)
    clone = keras_aim.AIMBackbone(**TINY)
    clone.load_weights(os.path.join(folder, "model.weights.h5"))
    for a, b in zip(clone.weights, tiny_backbone.weights):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
        )
