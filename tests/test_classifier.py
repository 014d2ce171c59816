"""AIMImageClassifier: probe layers, head behaviour, serialisation."""

import keras
import numpy as np
import pytest
from conftest import to_numpy
from harness import run_model_test

import keras_aim


@pytest.fixture
def classifier(tiny_backbone):
    return keras_aim.AIMImageClassifier(
        tiny_backbone, num_classes=5, probe_layers=[1, 2]
    )


def test_logits_shape_and_layers(classifier, images):
    assert tuple(classifier(images).shape) == (2, 5)
    assert classifier.probe_layers == [1, 2]
    assert classifier.backbone.num_layers == 3


def test_logits_match_manual_probe(classifier, images):
    rng = np.random.default_rng(7)
    head = classifier.probe_head
    for var in head.weights:
        value = rng.normal(scale=0.2, size=var.shape)
        if "moving_variance" in var.path:
            value = np.abs(value) + 0.5
        var.assign(value.astype("float32"))
    feats = [
        to_numpy(f)
        for f in classifier.backbone.extract_features(images, layers=[1, 2])
    ]
    x = (feats[0] + feats[1]) / 2
    mean = to_numpy(head.batch_norm.moving_mean)
    var = to_numpy(head.batch_norm.moving_variance)
    x = (x - mean) / np.sqrt(var + 1e-6)
    q = to_numpy(head.query).reshape(2, 24)  # heads, head_dim
    k = (x @ to_numpy(head.key.kernel)).reshape(2, 49, 2, 24)
    v = (x @ to_numpy(head.value.kernel)).reshape(2, 49, 2, 24)
    scores = np.einsum("hd,bnhd->bhn", q, k) / np.sqrt(24)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    pooled = np.einsum("bhn,bnhd->bhd", weights, v).reshape(2, 48)
    expected = pooled @ to_numpy(head.classifier.kernel)
    np.testing.assert_allclose(
        to_numpy(classifier(images)), expected, atol=2e-5
    )


def test_probe_layer_choices(tiny_backbone):
    last = keras_aim.AIMImageClassifier(tiny_backbone, probe_layers="last")
    assert last.probe_layers == [0, 1, 2]
    single = keras_aim.AIMImageClassifier(tiny_backbone, probe_layers=1)
    assert single.probe_layers == [1]
    default = keras_aim.AIMImageClassifier(tiny_backbone)
    assert default.probe_layers == [0, 1, 2]


@pytest.mark.parametrize(
    "probe_layers,match",
    [
        ("best", "released AIM sizes"),
        ("middle", '"best", "last"'),
        ([3], "out of range"),
        ([-1], "out of range"),
        ([1, 1], "distinct"),
        ([], "distinct"),
    ],
)
def test_bad_probe_layers(tiny_backbone, probe_layers, match):
    with pytest.raises(ValueError, match=match):
        keras_aim.AIMImageClassifier(tiny_backbone, probe_layers=probe_layers)


def test_bad_backbone_and_classes(tiny_backbone):
    with pytest.raises(ValueError, match="AIMBackbone"):
        keras_aim.AIMImageClassifier("aim_600m")
    with pytest.raises(ValueError, match="num_classes"):
        keras_aim.AIMImageClassifier(tiny_backbone, num_classes=0)


def test_bad_images(classifier):
    with pytest.raises(ValueError, match="3 channels"):
        classifier(np.zeros((1, 28, 28, 1), "float32"))


def test_batch_norm_uses_running_statistics_at_inference(classifier, images):
    first = to_numpy(classifier(images, training=False))
    second = to_numpy(classifier(images[:1], training=False))
    np.testing.assert_allclose(second[0], first[0], atol=1e-5)


def test_fit_updates_head_and_running_statistics(classifier, images):
    before = to_numpy(classifier.probe_head.batch_norm.moving_mean)
    classifier.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = classifier.fit(images, np.array([0, 3]), epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    after = to_numpy(classifier.probe_head.batch_norm.moving_mean)
    assert not np.allclose(before, after)


def test_model_harness(classifier, tiny_backbone, images, tmp_path):
    half = keras_aim.AIMBackbone.from_config(
        {**tiny_backbone.get_config(), "dtype": "mixed_bfloat16"}
    )
    run_model_test(
        classifier,
        images,
        (2, 5),
        tmp_path,
        mixed_precision_model=keras_aim.AIMImageClassifier(
            half, num_classes=5, probe_layers=[1, 2]
        ),
        fit_data=(images, np.array([0, 3])),
        compile_kwargs=dict(
            optimizer="adam",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        ),
    )
    restored = keras_aim.AIMImageClassifier.from_config(classifier.get_config())
    assert restored.probe_layers == [1, 2]


def test_predict_converts_raw_images(tiny_backbone):
    converter = keras_aim.AIMImageConverter(resize_size=32, crop_size=28)
    classifier = keras_aim.AIMImageClassifier(
        tiny_backbone, num_classes=4, image_converter=converter
    )
    raw = np.random.default_rng(0).integers(0, 255, (2, 40, 50, 3), "uint8")
    normalised = to_numpy(converter(raw)).astype("float32")
    np.testing.assert_allclose(
        classifier.predict(raw, verbose=0),
        classifier.predict(normalised, verbose=0),
        atol=1e-5,
    )
    bare = keras_aim.AIMImageClassifier(tiny_backbone, num_classes=4)
    with pytest.raises(ValueError, match="image_converter"):
        bare.predict(raw, verbose=0)
