"""LoRA on the AIM trunk: parameter counts, frozen kernels, save/load/merge."""

import keras
import numpy as np
import pytest
from conftest import to_numpy

import keras_aim
from keras_aim.models import lora

ARCH = dict(image_shape=(16, 16, 3), patch_size=4, hidden_dim=32, num_layers=2)


def make_backbone(num_heads=2, **overrides):
    keras.utils.set_random_seed(0)
    return keras_aim.AIMBackbone(**{**ARCH, **overrides}, num_heads=num_heads)


def images(batch=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, 16, 16, 3)).astype("float32")


def randomise(variables, seed=1):
    rng = np.random.default_rng(seed)
    for variable in variables:
        variable.assign(rng.normal(scale=0.05, size=variable.shape))


def kernel_sizes(width, ratio=4):
    mlp = int(ratio * width)
    return {
        "attn_qkv": width + 3 * width,
        "attn_proj": 2 * width,
        "mlp_fc1": width + mlp,
        "mlp_fc2": mlp + width,
    }


@pytest.mark.parametrize(
    "rank,targets,blocks",
    [
        (4, None, None),
        (2, ["attn_qkv"], None),
        (3, ["attn_proj", "mlp_fc2"], [1]),
    ],
)
def test_trainable_parameters_match_the_formula(rank, targets, blocks):
    backbone = make_backbone()
    backbone.enable_lora(rank, target_layers=targets, blocks=blocks)
    chosen = targets or list(lora.LORA_TARGETS)
    count = len(blocks or [0, 1])
    sizes = kernel_sizes(32)
    expected = rank * sum(sizes[t] for t in chosen) * count
    trainable = sum(int(np.prod(w.shape)) for w in backbone.trainable_weights)
    assert trainable == expected
    assert expected == lora.lora_parameter_count(32, 4.0, rank, chosen, count)
    assert all("lora_kernel" in w.path for w in backbone.trainable_weights)


@pytest.mark.large(backend="torch")
def test_frozen_kernels_do_not_change_and_lora_does():
    backbone = make_backbone()
    backbone.enable_lora(2)
    classifier = keras_aim.AIMImageClassifier(
        backbone, num_classes=3, probe_layers=[0, 1]
    )
    frozen = {w.path: to_numpy(w) for w in backbone.non_trainable_weights}
    lora_before = {w.path: to_numpy(w) for w in backbone.trainable_weights}
    classifier.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    classifier.fit(images(8), np.arange(8) % 3, epochs=3, verbose=0)
    for w in backbone.non_trainable_weights:
        np.testing.assert_array_equal(to_numpy(w), frozen[w.path])
    changed = [
        not np.array_equal(to_numpy(w), lora_before[w.path])
        for w in backbone.trainable_weights
    ]
    assert all(changed)


def test_save_load_and_merge_reproduce_the_outputs(tmp_path):
    x = images()
    backbone = make_backbone()
    base = [to_numpy(w) for w in backbone.weights]
    backbone.enable_lora(3, alpha=6)
    randomise(lora.lora_variables(backbone))
    tuned = to_numpy(backbone(x))
    assert np.abs(tuned - to_numpy(make_backbone()(x))).max() > 1e-3
    path = str(tmp_path / "lora.weights.h5")
    backbone.save_lora_weights(path)

    fresh = make_backbone()
    for w, value in zip(fresh.weights, base):
        w.assign(value)
    fresh.load_lora_weights(path)
    assert fresh.lora_config == backbone.lora_config
    np.testing.assert_allclose(to_numpy(fresh(x)), tuned, atol=1e-5)

    backbone.merge_lora_weights()
    np.testing.assert_allclose(to_numpy(backbone(x)), tuned, atol=1e-5)
    # Merged kernels are what a preset holds; it loads without LoRA.
    folder = str(tmp_path / "merged")
    fresh.save_to_preset(folder)
    plain = keras_aim.AIMBackbone.from_preset(folder)
    assert not lora.lora_layers(plain)
    np.testing.assert_allclose(to_numpy(plain(x)), tuned, atol=1e-5)


def test_a_lora_file_for_another_architecture_is_refused(tmp_path):
    small = make_backbone()
    small.enable_lora(2)
    path = str(tmp_path / "small.h5")
    small.save_lora_weights(path)
    for other in (
        make_backbone(hidden_dim=48),
        make_backbone(num_heads=4),
        make_backbone(num_layers=3),
    ):
        with pytest.raises(ValueError, match="another architecture"):
            other.load_lora_weights(path)
    ranked = make_backbone()
    ranked.enable_lora(4)
    with pytest.raises(ValueError, match="holds LoRA"):
        ranked.load_lora_weights(path)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="not a keras_aim LoRA"):
        make_backbone().load_lora_weights(str(tmp_path / "junk.h5"))
    with pytest.raises(FileNotFoundError):
        make_backbone().load_lora_weights(str(tmp_path / "missing.h5"))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(rank=0), "rank"),
        (dict(rank=2, target_layers=["qkv"]), "target_layers"),
        (dict(rank=2, blocks=[2]), "blocks"),
        (dict(rank=2, alpha=-1), "alpha"),
    ],
)
def test_bad_lora_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_backbone().enable_lora(**kwargs)


def test_enable_twice_and_save_without_lora_are_refused(tmp_path):
    backbone = make_backbone()
    with pytest.raises(ValueError, match="not enabled"):
        backbone.save_lora_weights(str(tmp_path / "x.h5"))
    backbone.enable_lora(2)
    with pytest.raises(ValueError, match="already enabled"):
        backbone.enable_lora(2)
