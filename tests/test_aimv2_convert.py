"""AIMv2 checkpoints: both key layouts (and the LiT image tower) converted
on the fly and by `python -m keras_aim.convert`, compared with the
independent float64 NumPy reference; hostile checkpoints refused.

The checkpoints are tiny random ones that the tests write
(`tests/reference_aimv2.py`); no weights can be downloaded here.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import keras_aim
from keras_aim.convert import cli
from keras_aim.convert import released_aimv2
from tests import reference as ref
from tests import reference_aimv2 as ref2

pytest.importorskip("safetensors")

TOL = 2e-5
HEADS = 2
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x), np.float64)


def images(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def write(folder, sd, layout="release", lit=False, native=False):
    """A hub folder for the release-layout tensors `sd` in `layout`."""
    tensors = sd if layout == "release" else ref2.to_transformers_layout(sd)
    if lit:
        tensors = ref2.as_lit(tensors, layout)
    config = ref2.hub_config_v2(sd, HEADS, 28, layout, native)
    if lit:
        config = {"model_type": "aimv2", "vision_config": config}
    return ref.write_hub_folder(str(folder), tensors, config)


@pytest.fixture(scope="module")
def absolute_sd():
    return ref2.random_state_dict_v2(seed=3)


@pytest.fixture(scope="module")
def native_sd():
    return ref2.random_state_dict_v2(grid=None, seed=4)


CASES = [
    ("release", False, False),
    ("transformers", False, False),
    ("release", True, False),
    ("transformers", True, False),
    ("release", False, True),
    ("transformers", False, True),
]


@pytest.mark.parametrize("layout, lit, native", CASES)
def test_converted_trunk_matches_the_reference(
    layout, lit, native, absolute_sd, native_sd, tmp_path
):
    sd = native_sd if native else absolute_sd
    folder = write(tmp_path / "hub", sd, layout, lit, native)
    backbone = keras_aim.AIMv2Backbone.from_preset(folder)
    assert backbone.position_embedding_type == (
        "sincos" if native else "absolute"
    )
    x = images((2, 28, 28, 3))
    want, blocks = ref2.numpy_forward_v2(sd, x, HEADS, layers=[0, 1])
    assert np.abs(numpy(backbone(x)) - want).max() <= TOL
    got = backbone.extract_features(x, layers=[0, 1])
    for a, b in zip(got, blocks):
        assert np.abs(numpy(a) - b).max() <= TOL
    # Another resolution and aspect ratio: the learned table is resampled,
    # the native model computes its sin-cos table for the new grid.
    y = images((1, 20, 36, 3), seed=1)
    want, (block,) = ref2.numpy_forward_v2(sd, y, HEADS, layers=[1])
    (got,) = backbone.extract_features(y, layers=[1])
    assert np.abs(numpy(got) - block).max() <= TOL
    wide = keras_aim.AIMv2Backbone.from_preset(
        folder, image_shape=(None, None, 3)
    )
    assert np.abs(numpy(wide(y)) - want).max() <= TOL


def test_the_tolerance_sees_a_missing_scale_or_a_wrong_epsilon(absolute_sd):
    """The parity tolerance can see the mistakes a port would make."""
    x = images((1, 28, 28, 3))
    want = ref2.numpy_forward_v2(absolute_sd, x, HEADS)
    sd = dict(absolute_sd)
    sd["preprocessor.patchifier.norm.weight"] = np.ones(48, "float32")
    assert np.abs(ref2.numpy_forward_v2(sd, x, HEADS) - want).max() > 1e-3
    small = 0.05 * x[..., :3]  # RMS near epsilon, as in a small-norm token
    wrong = ref2.rms_norm(small, np.ones(3), 1e-6)
    assert np.abs(wrong - ref2.rms_norm(small, np.ones(3))).max() > TOL


def test_bfloat16_loads_without_a_float32_copy(absolute_sd, tmp_path):
    folder = write(tmp_path / "hub", absolute_sd)
    backbone = keras_aim.AIMv2Backbone.from_preset(folder, dtype="bfloat16")
    assert {v.dtype for v in backbone.weights} == {"bfloat16"}
    x = images((1, 28, 28, 3))
    want = ref2.numpy_forward_v2(absolute_sd, x, HEADS)
    assert np.abs(numpy(backbone(x)) - want).max() < 0.5


def test_convert_cli_writes_a_preset(absolute_sd, tmp_path):
    folder = write(tmp_path / "hub", absolute_sd, "transformers")
    output = str(tmp_path / "keras")
    model = cli.convert(cli._parser().parse_args([folder, "--output", output]))
    assert type(model) is keras_aim.AIMv2Backbone
    loaded = keras_aim.AIMv2Backbone.from_preset(output)
    x = images((1, 28, 28, 3))
    want = ref2.numpy_forward_v2(absolute_sd, x, HEADS)
    assert np.abs(numpy(loaded(x)) - want).max() <= TOL
    with pytest.raises(ValueError, match="--head"):
        cli.convert(
            cli._parser().parse_args(
                [folder, "--output", str(tmp_path / "o2"), "--head", folder]
            )
        )
    with pytest.raises(ValueError, match="has patch_size=14"):
        cli.convert(
            cli._parser().parse_args(
                [
                    folder,
                    "--output",
                    str(tmp_path / "o3"),
                    "--preset",
                    "aimv2_large_patch14_224",
                ]
            )
        )


@pytest.mark.extra_large
def test_convert_cli_process_exit_status(absolute_sd, tmp_path):
    folder = write(tmp_path / "hub", absolute_sd)
    command = [sys.executable, "-m", "keras_aim.convert", folder]
    done = subprocess.run(
        command + ["--output", str(tmp_path / "out"), "--dtype", "bfloat16"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "AIMv2Backbone" in done.stdout
    os.remove(os.path.join(folder, "model.safetensors"))
    ref.write_hub_folder(folder, {"x": np.zeros(2, "float32")}, {})
    bad = subprocess.run(
        command + ["--output", str(tmp_path / "bad")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "error" in bad.stderr


# --- Hostile checkpoints -----------------------------------------------------


def load(folder):
    return keras_aim.AIMv2Backbone.from_preset(str(folder))


def test_keys_fitting_neither_layout(absolute_sd, tmp_path):
    renamed = {"model." + k: v for k, v in absolute_sd.items()}
    config = ref2.hub_config_v2(absolute_sd, HEADS, 28)
    folder = ref.write_hub_folder(str(tmp_path / "hub"), renamed, config)
    with pytest.raises(ValueError, match="neither AIMv2 layout"):
        load(folder)


def test_an_aim_v1_checkpoint_is_named(tmp_path):
    sd = ref.random_state_dict(
        embed_dim=48, num_blocks=2, num_heads=2, patch_size=4
    )
    config = {"model_type": "aimv2", "hidden_size": 48}
    ref.write_hub_folder(str(tmp_path / "hub"), sd, config)
    with pytest.raises(ValueError, match="AIM \\(v1\\) checkpoint"):
        load(tmp_path / "hub")


@pytest.mark.parametrize("layout", ["release", "transformers"])
def test_missing_extra_and_misshapen_tensors(absolute_sd, layout, tmp_path):
    base = (
        absolute_sd
        if layout == "release"
        else (ref2.to_transformers_layout(absolute_sd))
    )
    key = sorted(
        k for k in base if k.endswith(("fc2.weight", "down_proj.weight"))
    )[0]
    cases = {
        "missing": ({k: v for k, v in base.items() if k != key}, key),
        "extra": (
            {**base, "trunk.extra.weight": np.ones(3, "float32")},
            "trunk.extra.weight",
        ),
        "shape": ({**base, key: base[key][:, :-1]}, f"{key}: expected"),
    }
    for name, (tensors, needle) in cases.items():
        folder = str(tmp_path / name)
        config = ref2.hub_config_v2(absolute_sd, HEADS, 28, layout)
        ref.write_hub_folder(folder, tensors, config)
        with pytest.raises(ValueError) as error:
            load(folder)
        assert needle in str(error.value), (name, str(error.value))


def test_config_contradicting_tensors(absolute_sd, tmp_path):
    folder = write(tmp_path / "hub", absolute_sd)
    config = ref2.hub_config_v2(absolute_sd, HEADS, 28)
    config["intermediate_size"] = 64
    ref.write_hub_folder(folder, absolute_sd, config)
    with pytest.raises(ValueError, match="intermediate_size=64"):
        load(folder)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    index=st.integers(0, 10_000),
    value=st.sampled_from([np.nan, np.inf, -np.inf]),
    layout=st.sampled_from(["release", "transformers"]),
)
def test_non_finite_values_are_refused(index, value, layout, tmp_path_factory):
    sd = ref2.random_state_dict_v2(num_layers=1, seed=5)
    tensors = sd if layout == "release" else ref2.to_transformers_layout(sd)
    key = sorted(tensors)[index % len(tensors)]
    tensors = dict(tensors)
    flat = tensors[key].copy().reshape(-1)
    flat[index % flat.size] = value
    tensors[key] = flat.reshape(tensors[key].shape)
    folder = str(tmp_path_factory.mktemp("nan") / "hub")
    ref.write_hub_folder(folder, tensors, ref2.hub_config_v2(sd, 2, 28, layout))
    with pytest.raises(ValueError, match=f"{key!r}.*NaN or infinite"):
        load(folder)


def test_detect_layout_names_both_layouts(absolute_sd):
    assert released_aimv2.detect_layout(absolute_sd) == ("release", "")
    hf = ref2.to_transformers_layout(absolute_sd)
    assert released_aimv2.detect_layout(hf) == ("transformers", "")
    lit = ref2.as_lit(hf, "transformers")
    assert released_aimv2.detect_layout(lit) == (
        "transformers",
        "vision_model.",
    )
    with pytest.raises(ValueError, match="embeddings.patch_embed.weight"):
        released_aimv2.detect_layout({"a": 1})
    assert released_aimv2.is_aimv2_config({"architectures": ["AIMv2Model"]})
    assert released_aimv2.is_aimv2_config({"model_type": "aimv2_vision_model"})
    assert not released_aimv2.is_aimv2_config({"embed_dim": 48})
