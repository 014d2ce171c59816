"""Loading and converting released-layout checkpoints.

Small random checkpoints are written in both released layouts by the NumPy
reference (`tests/reference.py`), loaded with keras_aim and compared with
the reference's float64 forward pass.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_aim import convert
from keras_aim import convert as conversion
from keras_aim.convert.loaders import ReleasedCheckpointLoader
from keras_aim.models.aim.aim_backbone import AIMBackbone
from keras_aim.models.aim.aim_image_classifier import AIMImageClassifier
from tests import reference as ref

pytest.importorskip("safetensors")
torch = pytest.importorskip("torch")

TOL = 2e-5
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Hub layout: width 48, 3 blocks, 4 heads, patch 4, 28x28 images.
HUB = dict(embed_dim=48, num_blocks=3, num_heads=4, patch_size=4)
HUB_PROBE = [1, 2]
# .pth layout: width 48, 2 blocks, 2 heads, patch 4, 16x16 images.
PTH = dict(embed_dim=48, num_blocks=2, num_heads=2, patch_size=4)


def load_pth(backbone_path, head_path=None, num_heads=None, **kwargs):
    """A classifier (with a head file) or a backbone from a .pth pair."""
    loader = ReleasedCheckpointLoader.from_pth(
        backbone_path, head_path, num_heads=num_heads
    )
    if head_path is None:
        return loader.load_backbone(AIMBackbone, **kwargs)
    return loader.load_task(AIMImageClassifier, **kwargs)


def to_numpy(x):
    return keras.ops.convert_to_numpy(x).astype(np.float64)


def max_err(a, b):
    return float(np.abs(to_numpy(a) - np.asarray(b)).max())


def images(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    sd = ref.random_state_dict(**HUB, num_classes=5, seed=1)
    config = ref.hub_config(
        sd, HUB["num_heads"], img_size=28, probe_layers=HUB_PROBE
    )
    folder = str(tmp_path_factory.mktemp("hub") / "aim-tiny")
    ref.write_hub_folder(folder, sd, config)
    return folder, sd


@pytest.fixture(scope="module")
def pth(tmp_path_factory):
    sd = ref.random_state_dict(**PTH, num_classes=3, seed=2)
    root = tmp_path_factory.mktemp("pth")
    backbone = str(root / "aim_tiny_backbone.pth")
    head = str(root / "aim_tiny_head_last_layers.pth")
    ref.write_pth_pair(backbone, head, sd)
    return backbone, head, sd


@pytest.fixture(scope="module")
def hub_model(hub):
    folder, _ = hub
    return AIMImageClassifier.from_preset(folder)


@pytest.fixture(scope="module")
def pth_model(pth):
    backbone_path, head_path, _ = pth
    return load_pth(
        backbone_path,
        head_path,
        num_heads=PTH["num_heads"],
        image_shape=(None, None, 3),
    )


# ---------------------------------------------------------------------------
# Numerical agreement with the NumPy reference.
# ---------------------------------------------------------------------------


def test_hub_classifier_matches_reference(hub, hub_model):
    _, sd = hub
    model = hub_model
    assert isinstance(model, AIMImageClassifier)
    assert model.probe_layers == HUB_PROBE
    assert model.backbone.num_heads == HUB["num_heads"]
    assert model.backbone.image_shape == (28, 28, 3)
    x = images((2, 28, 28, 3))
    want = ref.numpy_forward(sd, x, HUB["num_heads"], probe_layers=HUB_PROBE)
    errors = {
        "logits": max_err(model(x), want["logits"]),
        "tokens": max_err(model.backbone(x), want["tokens"]),
    }
    feats = model.backbone.extract_features(x, layers=[0, 2])
    errors["block_0"] = max_err(feats[0], want["blocks"][0])
    errors["block_2"] = max_err(feats[1], want["blocks"][2])
    assert max(errors.values()) <= TOL, errors
    # The check can fail: tanh-GELU moves the outputs far past TOL.
    tanh = ref.numpy_forward(
        sd, x, HUB["num_heads"], probe_layers=HUB_PROBE, gelu_fn=ref.gelu_tanh
    )
    assert np.abs(tanh["tokens"] - want["tokens"]).max() > 10 * TOL
    assert max_err(model.backbone(x), tanh["tokens"]) > 10 * TOL


def test_pth_pair_any_size_non_square(pth, pth_model):
    _, _, sd = pth
    model = pth_model
    # "last_layers" in the head file name: the last (up to) six blocks.
    assert model.probe_layers == [0, 1]
    x = images((3, 12, 20, 3), seed=1)  # non-square, not the default 16
    want = ref.numpy_forward(sd, x, PTH["num_heads"], probe_layers=[0, 1])
    errors = {
        "logits": max_err(model(x), want["logits"]),
        "tokens": max_err(model.backbone(x), want["tokens"]),
        "block_1": max_err(
            model.backbone.extract_features(x, [1])[0], want["blocks"][1]
        ),
    }
    assert max(errors.values()) <= TOL, errors


def test_pth_backbone_only(pth):
    backbone_path, _, sd = pth
    backbone = load_pth(
        backbone_path, num_heads=PTH["num_heads"], image_shape=(None, None, 3)
    )
    assert isinstance(backbone, AIMBackbone)
    x = images((3, 12, 20, 3), seed=2)
    want = ref.numpy_forward(sd, x, PTH["num_heads"])
    assert max_err(backbone(x), want["tokens"]) <= TOL


def test_hub_folder_through_from_preset(hub, hub_model):
    folder, _ = hub
    x = images((2, 28, 28, 3), seed=4)
    classifier = AIMImageClassifier.from_preset(folder)
    np.testing.assert_allclose(
        to_numpy(classifier(x)), to_numpy(hub_model(x)), atol=1e-6
    )
    backbone = AIMBackbone.from_preset(folder)
    assert type(backbone) is AIMBackbone
    bare = AIMImageClassifier.from_preset(folder, load_weights=False)
    assert bare.probe_layers == HUB_PROBE
    assert bare.count_params() == hub_model.count_params()
    np.testing.assert_allclose(
        to_numpy(backbone(x)), to_numpy(hub_model.backbone(x)), atol=1e-6
    )


# ---------------------------------------------------------------------------
# bfloat16.
# ---------------------------------------------------------------------------


def test_bfloat16_load_casts_each_tensor(hub):
    import ml_dtypes

    folder, sd = hub
    model = AIMImageClassifier.from_preset(folder, dtype="bfloat16")
    assert {v.dtype for v in model.weights} == {"bfloat16"}
    for layer, key, transpose in (
        ("block_1", "trunk.blocks.1.attn.qkv.weight", True),
        ("post_trunk_norm", "trunk.post_trunk_norm.weight", False),
    ):
        owner = model.backbone.get_layer(layer)
        variable = owner.weights[0] if not transpose else owner.attn_qkv.kernel
        expected = sd[key].T if transpose else sd[key]
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(variable).astype(np.float32),
            expected.astype(ml_dtypes.bfloat16).astype(np.float32),
        )


def test_bfloat16_stored_checkpoints(hub, tmp_path):
    import ml_dtypes
    from safetensors.torch import save_file

    _, sd = hub
    backbone_sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    rounded = {
        k: v.astype(ml_dtypes.bfloat16).astype(np.float32)
        for k, v in backbone_sd.items()
    }
    tensors = {
        k: torch.from_numpy(v).bfloat16() for k, v in backbone_sd.items()
    }
    save_file(tensors, str(tmp_path / "bf16.safetensors"))
    torch.save(tensors, str(tmp_path / "bf16.pth"))
    key = "trunk.blocks.0.mlp.fc1.weight"
    for name in ("bf16.safetensors", "bf16.pth"):
        with conversion.open_state_dict(str(tmp_path / name)) as reader:
            assert reader.get(key).dtype == np.float32
            np.testing.assert_array_equal(reader.get(key), rounded[key])
            kept = reader.get(key, dtype="bfloat16")
            assert kept.dtype == ml_dtypes.bfloat16
            np.testing.assert_array_equal(kept.astype(np.float32), rounded[key])
    model = load_pth(
        str(tmp_path / "bf16.pth"),
        num_heads=HUB["num_heads"],
        image_shape=(28, 28, 3),
    )
    x = images((2, 28, 28, 3))
    want = ref.numpy_forward(rounded, x, HUB["num_heads"])
    assert max_err(model(x), want["tokens"]) <= TOL


# ---------------------------------------------------------------------------
# Readers and shape inference.
# ---------------------------------------------------------------------------


def test_infer_config_and_reader(hub):
    folder, sd = hub
    with conversion.open_state_dict(
        os.path.join(folder, "model.safetensors")
    ) as reader:
        assert set(reader.keys()) == set(sd)
        assert reader.shape("head.cls_token") == (1, 1, 48)
        np.testing.assert_array_equal(
            reader.get("head.k.weight"), sd["head.k.weight"]
        )
        config = conversion.infer_config(reader)
    assert config == {
        "patch_size": 4,
        "hidden_dim": 48,
        "num_layers": 3,
        "num_channels": 3,
        "mlp_ratio": 4.0,
        "num_classes": 5,
    }
    shapes = {k: v.shape for k, v in sd.items() if "blocks.1." not in k}
    with pytest.raises(ValueError, match=r"blocks \[1\] are missing"):
        conversion.infer_config(shapes)
    with pytest.raises(ValueError, match="not an AIM checkpoint"):
        conversion.infer_config({"foo.weight": (3, 3)})


# ---------------------------------------------------------------------------
# Bad inputs.
# ---------------------------------------------------------------------------


def test_missing_extra_and_misshaped_tensors(pth):
    _, _, sd = pth
    model = AIMImageClassifier(
        AIMBackbone(
            image_shape=(16, 16, 3),
            patch_size=4,
            hidden_dim=48,
            num_layers=2,
            num_heads=2,
        ),
        num_classes=3,
        probe_layers=[0, 1],
    )
    bad = dict(sd)
    del bad["trunk.blocks.1.mlp.fc2.weight"]
    bad["trunk.blocks.0.attn.extra.weight"] = np.zeros((4, 4), np.float32)
    bad["head.k.weight"] = np.zeros((48, 40), np.float32)
    with pytest.raises(ValueError) as info:
        conversion.load_released_weights(model, bad)
    message = str(info.value)
    assert "missing keys (1): ['trunk.blocks.1.mlp.fc2.weight']" in message
    assert "unexpected keys (1)" in message
    assert "trunk.blocks.0.attn.extra.weight" in message
    assert "head.k.weight: expected (48, 48), got (48, 40)" in message
    # A backbone cannot silently drop a head.
    with pytest.raises(ValueError, match="load into an AIMImageClassifier"):
        conversion.load_released_weights(model.backbone, sd)
    # A classifier cannot be left with a random head.
    no_head = {k: v for k, v in sd.items() if not k.startswith("head.")}
    with pytest.raises(ValueError, match="missing keys .6."):
        conversion.load_released_weights(model, no_head)


def test_truncated_files(hub, pth, tmp_path):
    folder, _ = hub
    with open(os.path.join(folder, "model.safetensors"), "rb") as f:
        data = f.read()
    for name, cut in (("header", 20), ("data", len(data) - 100)):
        path = str(tmp_path / f"cut_{name}.safetensors")
        with open(path, "wb") as f:
            f.write(data[:cut])
        with pytest.raises(ValueError, match=f"cut_{name}.safetensors"):
            conversion.open_state_dict(path)
    backbone_path, _, _ = pth
    with open(backbone_path, "rb") as f:
        data = f.read()
    path = str(tmp_path / "cut.pth")
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.pth"):
        conversion.open_state_dict(path)
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        conversion.open_state_dict(str(tmp_path / "nothing.pth"))
    with pytest.raises(ValueError, match="Unknown checkpoint file type"):
        conversion.open_state_dict(os.path.join(folder, "config.json"))


def test_bad_heads_and_inconsistent_config(hub, tmp_path):
    folder, sd = hub
    with pytest.raises(ValueError, match="num_heads`=5 must be a positive"):
        AIMImageClassifier.from_preset(folder, num_heads=5)
    config = ref.hub_config(sd, 4, img_size=28)
    config["embed_dim"] = 32
    ref.write_hub_folder(str(tmp_path / "bad"), sd, config)
    with pytest.raises(ValueError, match="embed_dim=32 but the tensors"):
        AIMImageClassifier.from_preset(str(tmp_path / "bad"))
    with pytest.raises(ValueError, match="no config.json"):
        AIMImageClassifier.from_preset(str(tmp_path))


def test_cli_bad_input_in_process(hub, pth, tmp_path, capsys):
    folder, _ = hub
    backbone_path, head_path, _ = pth
    out = str(tmp_path / "out")
    cases = [
        ([backbone_path, "--preset", "aim_9b"], "Unknown preset 'aim_9b'"),
        ([backbone_path, "--num-heads", "5"], "num_heads`=5"),
        ([backbone_path], "pass --preset"),
        ([backbone_path, "--preset", "aim_600m"], "has patch_size=14 but"),
        ([str(tmp_path / "missing.pth"), "--num-heads", "2"], "missing.pth"),
        ([folder, "--head", head_path], "--head goes with a backbone"),
        ([folder, "--dtype", "int8"], "--dtype must be one of"),
        ([folder, "--probe-layers", "a,b"], "--probe-layers must be"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as info:
            convert.main(argv + ["--output", out])
        assert info.value.code == 2
        assert message in capsys.readouterr().err
    assert not os.path.exists(out) or not os.listdir(out)


def test_cli_bfloat16_conversion(hub, tmp_path, capsys):
    folder, _ = hub
    out = str(tmp_path / "bf16")
    assert convert.main([folder, "--output", out, "--dtype", "bfloat16"]) == 0
    assert "AIMImageClassifier" in capsys.readouterr().out
    model = AIMImageClassifier.from_preset(out)
    assert {v.dtype for v in model.weights} == {"bfloat16"}
    # A non-empty output folder is refused without --overwrite.
    with pytest.raises(SystemExit):
        convert.main([folder, "--output", out])
    assert "not empty" in capsys.readouterr().err


# `make test-all`: the same `convert.main` as the in-process test above,
# through `python -m keras_aim.convert` in a fresh interpreter.
@pytest.mark.extra_large
def test_cli_end_to_end(pth, pth_model, tmp_path):
    backbone_path, head_path, sd = pth
    out = str(tmp_path / "preset")
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    command = [sys.executable, "-m", "keras_aim.convert", backbone_path]
    result = subprocess.run(
        command
        + ["--head", head_path, "--num-heads", "2", "--image-size", "any"]
        + ["--output", out],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "probe_layers=[0, 1]" in result.stdout
    model = AIMImageClassifier.from_preset(out)
    assert model.backbone.image_shape == (None, None, 3)
    x = images((3, 12, 20, 3), seed=6)
    np.testing.assert_array_equal(to_numpy(model(x)), to_numpy(pth_model(x)))
    want = ref.numpy_forward(sd, x, 2, probe_layers=[0, 1])
    assert max_err(model(x), want["logits"]) <= TOL
    bad = subprocess.run(
        command + ["--num-heads", "5", "--output", str(tmp_path / "bad")],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert "must be a positive integer dividing" in bad.stderr
