"""AIMv2 trunks in the tasks: the attentive-probe classifier, pre-training
with AIM's objective (prefix-causal mask, pixel head), presets, and the
example scripts on an AIMv2 preset folder."""

import types

import keras
import numpy as np
import pytest
from conftest import load_example

import keras_aim
from tests import reference as ref
from tests import reference_aimv2 as ref2

TINY = dict(
    image_shape=(16, 16, 3),
    patch_size=4,
    hidden_dim=32,
    num_layers=2,
    num_heads=2,
    intermediate_dim=88,
)


def numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x), np.float64)


def images(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_classifier_on_an_aimv2_trunk(tmp_path):
    backbone = keras_aim.AIMv2Backbone(**TINY)
    classifier = keras_aim.AIMImageClassifier(backbone, num_classes=5)
    # AIMv2 publishes no "best" blocks: the last ones are probed.
    assert classifier.probe_layers == [0, 1]
    x = images((2, 16, 16, 3))
    logits = classifier(x)
    assert tuple(logits.shape) == (2, 5)
    folder = str(tmp_path / "classifier")
    classifier.save_to_preset(folder)
    loaded = keras_aim.AIMImageClassifier.from_preset(folder)
    assert type(loaded.backbone) is keras_aim.AIMv2Backbone
    np.testing.assert_allclose(numpy(loaded(x)), numpy(logits), atol=1e-6)
    # The trunk of a classifier preset, by the generic loader.
    from keras_aim.models.backbone import Backbone

    assert type(Backbone.from_preset(folder)) is keras_aim.AIMv2Backbone


def test_an_aimv2_trunk_of_an_aim_size_gets_no_aim_best_blocks():
    from keras_aim.models.aim.aim_image_classifier import resolve_probe_layers

    # AIMv2-Huge has AIM-600M's width, depth and heads (built only by shape).
    huge = types.SimpleNamespace(
        patch_size=14, hidden_dim=1536, num_layers=24, num_heads=12
    )
    with pytest.raises(ValueError, match="best"):
        resolve_probe_layers("best", huge)
    assert resolve_probe_layers("last", huge) == list(range(18, 24))


def test_a_builtin_name_has_no_released_classification_head():
    with pytest.raises(ValueError, match="without a classification head"):
        keras_aim.AIMImageClassifier.from_preset("aimv2_large_patch14_224")


@pytest.mark.large(backend="torch")
def test_pretrainer_fit_step_on_an_aimv2_trunk():
    keras.utils.set_random_seed(0)
    backbone = keras_aim.AIMv2Backbone(**TINY)
    pretrainer = keras_aim.AIMPretrainer(
        backbone, head_hidden_dim=32, head_num_layers=1
    )
    pretrainer.compile(optimizer=keras.optimizers.AdamW(1e-3))
    x = images((4, 16, 16, 3))
    before = [numpy(w) for w in backbone.trainable_weights]
    history = pretrainer.fit(x, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [numpy(w) for w in backbone.trainable_weights]
    assert all(not np.array_equal(a, b) for a, b in zip(before, after))


def test_prefix_causal_trunk_matches_the_reference():
    """The pre-training path: an AIMv2 trunk under a prefix-causal mask
    equals the NumPy trunk with the same mask, block by block."""
    sd = ref2.random_state_dict_v2(
        hidden_dim=32, intermediate_dim=88, grid=(4, 4), seed=7
    )
    folder_sd = sd
    backbone = keras_aim.AIMv2Backbone(**TINY)
    from keras_aim.convert.released_aimv2 import load_aimv2_weights

    load_aimv2_weights(backbone, folder_sd, "release", "")
    x = images((2, 16, 16, 3))
    prefix = np.array([3, 9])
    mask = ref.numpy_prefix_causal_mask(prefix, 16)
    (got,) = backbone.extract_features(x, [1], attention_mask=mask)
    want = _masked_reference(sd, x, mask)
    assert np.abs(numpy(got) - want).max() <= 2e-5
    (free,) = backbone.extract_features(x, [1])
    assert np.abs(numpy(free) - want).max() > 1e-3


def _masked_reference(sd, x, mask):
    """`numpy_forward_v2`'s blocks with an attention mask."""
    original = ref2._attention
    try:
        ref2._attention = lambda q, k, v: original(q, k, v, mask)
        _, (block,) = ref2.numpy_forward_v2(sd, x, 2, layers=[1])
    finally:
        ref2._attention = original
    return block


@pytest.fixture(scope="module")
def v2_preset(tmp_path_factory):
    keras.utils.set_random_seed(0)
    folder = str(tmp_path_factory.mktemp("v2") / "backbone")
    keras_aim.AIMv2Backbone(**TINY).save_to_preset(folder)
    return folder


@pytest.mark.extra_large
def test_the_examples_take_an_aimv2_preset_folder(v2_preset, tmp_path):
    probe, finetune, extract, evaluate, export = (
        load_example(n)
        for n in ("probe", "finetune", "extract_features", "evaluate", "export")
    )
    metrics = probe.run(
        v2_preset,
        "digits",
        epochs=1,
        batch_size=256,
        output_dir=str(tmp_path / "probe"),
        verbose=0,
    )
    assert metrics["probe_layers"] == [0, 1]
    classifier = str(tmp_path / "probe" / "classifier")
    result = evaluate.run(
        classifier, "digits", output_dir=str(tmp_path / "eval"), verbose=0
    )
    assert result["top1"] == pytest.approx(metrics["top1"])
    tuned = finetune.run(
        v2_preset,
        "digits",
        lora_rank=2,
        epochs=1,
        batch_size=256,
        output_dir=str(tmp_path / "lora"),
        verbose=0,
    )
    # LoRA on 5 kernels (mlp_fc3 too) in 2 blocks, plus the probe head.
    lora = 2 * 2 * (4 * 32 + 2 * 32 + 3 * (32 + 88))
    assert 0 < tuned["trainable_parameters"] - lora < 5000
    shapes, _ = extract.run(
        v2_preset,
        "digits",
        layers=["1", "final"],
        pool="mean",
        output_dir=str(tmp_path / "features"),
        verbose=0,
    )
    assert shapes["block_1"] == (539, 32)
    format = {"tensorflow": "onnx", "jax": "saved_model", "torch": "torch"}
    manifest, parity = export.run(
        classifier,
        format=format[keras.backend.backend()],
        quantize="int8",
        output_dir=str(tmp_path / "export"),
    )
    assert parity["passed"]
    assert manifest["input_signature"][0]["shape"] == [None, 16, 16, 3]


@pytest.mark.large(backend="torch")
def test_the_recipe_does_not_decay_rmsnorm_scales_or_the_table():
    from keras_aim.optimizers.pretraining import PretrainingAdamW

    backbone = keras_aim.AIMv2Backbone(**TINY)
    variables = backbone.trainable_variables
    before = [numpy(v) for v in variables]
    optimizer = PretrainingAdamW(learning_rate=1e-3, weight_decay=0.05)
    zeros = [keras.ops.zeros(v.shape) for v in variables]
    optimizer.apply_gradients(zip(zeros, variables))
    decayed = {
        v.path
        for v, old in zip(variables, before)
        if not np.array_equal(numpy(v), old)
    }
    kernels = {v.path for v in variables if v.name == "kernel"}
    assert decayed == kernels
    assert "position_embedding/embeddings" not in decayed
    assert "block_0/norm_1/scale" not in decayed
