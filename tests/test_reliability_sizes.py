"""Round two, class 2: sizes are read from metadata before they are trusted.

Generated files that declare more than they hold, or more than any model
needs: LoRA `.h5` files with compressed or sparse datasets of huge shapes
(a few KB that would cost gigabytes), wrong shapes, dtypes, counts and
settings; checkpoints whose weights file does the same behind a matching
checksum; `image_converter.json` with huge or non-finite sizes; images
whose headers declare billions of pixels; safetensors headers that lie.
Each is refused from its metadata, fast, under an address-space cap, with
a message naming the file, and nothing is created or read before.
"""

import json
import os
import shutil
import struct
import time
import warnings

import h5py
import keras
import numpy as np
import pytest
from hostile import bmp_header_bytes
from hostile import gif_header_bytes
from hostile import jpeg_header_bytes
from hostile import memory_limit
from hostile import png_bytes
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import keras_aim
from keras_aim import training
from keras_aim.convert import readers
from keras_aim.data import sources
from keras_aim.models import lora
from keras_aim.models.aim import aim_image_converter
from keras_aim.training import checkpoint_checks
from keras_aim.utils.errors import CheckpointDamagedError

SOME = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
HUGE = st.integers(10**9, 10**11)  # elements: 4 to 400 GB of float32


def huge_shape(draw_elements, columns):
    return (max(1, draw_elements // columns), columns)


def add_lazy_dataset(group, name, shape, how, dtype="float32"):
    """A dataset declaring `shape` that stores (almost) nothing."""
    if how == "compressed":
        group.create_dataset(
            name,
            shape=shape,
            dtype=dtype,
            chunks=(1, shape[1]),
            compression="gzip",
        )
    else:  # chunked and never written: sparse
        group.create_dataset(name, shape=shape, dtype=dtype, chunks=True)


# --- LoRA files ---------------------------------------------------------------

WIDTH, RANK = 16, 2


@pytest.fixture(scope="module")
def lora_files(tmp_path_factory):
    keras.utils.set_random_seed(0)
    arch = dict(image_shape=(8, 8, 3), patch_size=4, hidden_dim=WIDTH)
    source = keras_aim.AIMBackbone(**arch, num_layers=2, num_heads=2)
    source.enable_lora(RANK, blocks=[1])
    path = str(tmp_path_factory.mktemp("lora") / "good.weights.h5")
    source.save_lora_weights(path)
    fresh = keras_aim.AIMBackbone(**arch, num_layers=2, num_heads=2)
    return path, fresh


def _valid_alpha(value):
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and np.isfinite(value)
        and value > 0
    )


def bad_settings():
    """A LoRA setting replaced by a value `enable_lora` refuses."""
    junk = st.one_of(
        st.booleans(),
        st.text(max_size=4),
        st.floats(),
        st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    )
    bad = {
        "rank": st.one_of(
            st.none(),
            junk,
            st.lists(st.integers(), max_size=2),
            st.integers(WIDTH + 1, 10**9),
            st.integers(-5, 0),
        ),
        "alpha": st.one_of(
            junk,
            st.lists(st.floats(), max_size=2),
            st.sampled_from([float("nan"), float("inf"), -1.0, 0.0]),
        ).filter(lambda v: not _valid_alpha(v)),
        "blocks": st.one_of(
            junk,
            st.sampled_from([[1.5], [True], "1", [1, 1], [], 1]),
            st.lists(st.integers(2, 99), min_size=1, max_size=2),
        ),
        "target_layers": st.one_of(
            junk,
            st.sampled_from(
                ["attn_qkv", ["qkv"], [1], ["attn_qkv", "attn_qkv"], []]
            ),
        ),
    }
    return st.one_of(
        *(st.tuples(st.just(key), value) for key, value in bad.items()),
        st.tuples(st.just("drop"), st.sampled_from(sorted(bad))),
    )


def lora_attacks():
    return st.one_of(
        st.tuples(
            st.just("lazy"),
            st.sampled_from(["compressed", "sparse"]),
            HUGE,
            st.integers(0, 7),
        ),
        st.tuples(
            st.just("lazy_fit"),
            st.sampled_from(["compressed", "sparse"]),
            st.integers(0, 7),
        ),
        st.tuples(st.just("shape"), st.integers(0, 7), st.integers(1, 64)),
        st.tuples(
            st.just("dtype"),
            st.integers(0, 7),
            st.sampled_from(["int32", "int8", "bool", "complex64"]),
        ),
        st.tuples(st.just("extra"), HUGE),
        st.tuples(st.just("missing"), st.integers(0, 7)),
        st.tuples(st.just("settings"), bad_settings()),
    )


def attack_lora(path, attack):
    with h5py.File(path, "r+") as f:
        names = []
        f.visititems(
            lambda n, i: (
                names.append(n) if isinstance(i, h5py.Dataset) else None
            )
        )
        names.sort()
        kind = attack[0]
        if kind in ("lazy", "lazy_fit", "shape", "dtype", "missing"):
            at = attack[1] if kind in ("shape", "dtype") else attack[-1]
            name = names[at]
            shape = f[name].shape
            del f[name]
        if kind == "lazy":
            add_lazy_dataset(
                f, name, huge_shape(attack[2], shape[1]), attack[1]
            )
        elif kind == "lazy_fit":  # the right shape, stored compressed
            add_lazy_dataset(f, name, shape, attack[1])
        elif kind == "shape":
            f.create_dataset(name, data=np.zeros(shape + (attack[2],)))
        elif kind == "dtype":
            f.create_dataset(name, data=np.zeros(shape, attack[2]))
        elif kind == "extra":
            add_lazy_dataset(
                f,
                "block_0/attn_qkv/lora_kernel_a",
                huge_shape(attack[1], RANK),
                "compressed",
            )
        elif kind == "settings":
            info = json.loads(f.attrs[lora.LORA_ATTRIBUTE])
            key, value = attack[1]
            if key == "drop":
                del info["lora"][value]
            else:
                info["lora"][key] = value
            f.attrs[lora.LORA_ATTRIBUTE] = json.dumps(info)


@SOME
@given(attack=lora_attacks())
def test_lora_files_are_checked_from_metadata(
    tmp_path_factory, lora_files, attack
):
    good, backbone = lora_files
    path = str(tmp_path_factory.mktemp("attack") / "lora.weights.h5")
    shutil.copy(good, path)
    attack_lora(path, attack)
    assert os.path.getsize(path) < 10**6  # a small file ...
    begin = time.time()
    with memory_limit(2 * 1024**3), pytest.raises(ValueError) as error:
        backbone.load_lora_weights(path)  # ... that must cost nothing
    assert time.time() - begin < 20
    assert path in str(error.value)
    assert not lora.lora_layers(backbone)  # refused before enabling LoRA


def test_the_untouched_lora_file_still_loads(lora_files):
    good, _ = lora_files
    keras.utils.set_random_seed(0)
    fresh = keras_aim.AIMBackbone(
        image_shape=(8, 8, 3),
        patch_size=4,
        hidden_dim=WIDTH,
        num_layers=2,
        num_heads=2,
    )
    fresh.load_lora_weights(good)
    assert fresh.lora_config["rank"] == RANK
    with pytest.raises(ValueError, match="full rank"):
        keras_aim.AIMBackbone(
            image_shape=(8, 8, 3),
            patch_size=4,
            hidden_dim=WIDTH,
            num_layers=2,
            num_heads=2,
        ).enable_lora(WIDTH + 1)


# --- Checkpoint weights -------------------------------------------------------


@SOME
@given(
    how=st.sampled_from(["compressed", "sparse"]),
    elements=HUGE,
    replace=st.booleans(),
    consistent=st.booleans(),
)
def test_checkpoint_verification_checks_sizes_before_reading(
    tmp_path_factory, how, elements, replace, consistent
):
    folder = tmp_path_factory.mktemp("ckpt")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    manager = training.CheckpointManager(folder, max_to_keep=3)
    manager.save(1, model)
    newest = manager.save(2, model)
    weights = os.path.join(newest, "model.weights.h5")
    with h5py.File(weights, "r+") as f:
        kernels = []
        f.visititems(
            lambda n, i: (
                kernels.append(n)
                if isinstance(i, h5py.Dataset) and n.startswith("layers/")
                else None
            )
        )
        name = sorted(kernels)[0] if replace else "extra/huge"
        if replace:
            del f[name]
        add_lazy_dataset(f, name, huge_shape(elements, 2), how)
    state_path = os.path.join(newest, "state.json")
    with open(state_path) as f:
        state = json.load(f)
    state["sha256"]["model.weights.h5"] = checkpoint_checks.sha256_file(weights)
    if consistent:  # the file's size too: only its metadata gives it away
        state["sizes"]["model.weights.h5"] = os.path.getsize(weights)
    with open(state_path, "w") as f:
        json.dump(state, f)
    begin = time.time()
    with memory_limit(2 * 1024**3):
        expected = "declares" if consistent else "declares|were written"
        with pytest.raises(CheckpointDamagedError, match=expected):
            manager.verify(newest)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            restored = manager.restore_latest_valid(model)
    assert time.time() - begin < 30
    assert restored["step"] == 1
    assert any("model.weights.h5" in str(w.message) for w in caught)


# --- image_converter.json -----------------------------------------------------


def side():
    return st.integers(8193, 10**9)


@SOME
@given(
    change=st.one_of(
        st.tuples(
            st.just("resize_size"),
            st.one_of(
                side(),
                st.tuples(side(), st.integers(1, 64)),
                st.tuples(st.integers(1, 64), side()),
            ),
        ),
        st.tuples(
            st.just("crop_size"),
            st.one_of(side(), st.tuples(st.integers(1, 64), side())),
        ),
        st.tuples(
            st.sampled_from(["mean", "std"]),
            st.one_of(
                st.sampled_from([float("nan"), float("inf"), -float("inf")]),
                st.lists(
                    st.sampled_from([float("nan"), 0.5, float("inf")]),
                    min_size=3,
                    max_size=3,
                ).filter(lambda v: not all(np.isfinite(v))),
            ),
        ),
        st.tuples(
            st.just("scale"),
            st.sampled_from([float("nan"), float("inf"), "1", None]),
        ),
    )
)
def test_converter_configs_with_huge_or_broken_sizes_are_refused(
    tmp_path_factory, change
):
    folder = tmp_path_factory.mktemp("converter")
    aim_image_converter.AIMImageConverter().save_to_preset(str(folder))
    path = os.path.join(folder, aim_image_converter.IMAGE_CONVERTER_FILE)
    with open(path) as f:
        config = json.load(f)
    key, value = change
    config["config"][key] = list(value) if isinstance(value, tuple) else value
    with open(path, "w") as f:
        json.dump(config, f)
    begin = time.time()
    with pytest.raises(ValueError) as error:
        aim_image_converter.load_image_converter(str(folder))
    assert time.time() - begin < 5
    assert path in str(error.value) and key in str(error.value)


# --- Image headers ------------------------------------------------------------

MAKERS = {
    "png": lambda w, h, _: png_bytes(4, 4, declared=(w, h)),
    "jpeg": jpeg_header_bytes,
    "gif": lambda w, h, _: gif_header_bytes(w, h),
    "bmp": lambda w, h, _: bmp_header_bytes(w, h),
}
LIMITS = {"png": 2**31 - 1, "jpeg": 65535, "gif": 65535, "bmp": 2**31 - 1}


@SOME
@given(
    kind=st.sampled_from(sorted(MAKERS)),
    data=st.data(),
    padding=st.integers(0, 3000),
)
def test_image_headers_declaring_too_many_pixels_are_skipped(
    tmp_path_factory, kind, data, padding
):
    top = LIMITS[kind]
    width = data.draw(st.integers(1, top))
    least = sources.MAX_IMAGE_PIXELS // width + 1
    height = (
        data.draw(st.integers(1, top))
        if least > top
        else data.draw(st.integers(least, top))
    )
    folder = tmp_path_factory.mktemp("bomb")
    path = folder / f"x.{kind}"
    path.write_bytes(MAKERS[kind](width, height, padding))
    with open(path, "rb") as f:
        head = f.read(8)
        got = sources.image_dimensions(f, head, os.path.getsize(path))
    assert got == (width, height)
    reason = sources.check_image_file(str(path))
    if width * height > sources.MAX_IMAGE_PIXELS:
        assert reason is not None and "declares" in reason
        with pytest.warns(UserWarning, match="declares"):
            kept, _ = sources.readable_files([str(path)])
        assert kept == []
    else:
        assert reason is None or "declares" not in reason


# --- safetensors headers ------------------------------------------------------


@SOME
@given(
    header_size=st.one_of(st.integers(10**8 + 1, 2**63), st.just(None)),
    shape=st.lists(st.integers(10**4, 10**6), min_size=2, max_size=3),
)
def test_safetensors_headers_that_lie_are_refused(
    tmp_path_factory, header_size, shape
):
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": shape, "data_offsets": [0, 16]}}
    ).encode()
    size = len(header) if header_size is None else header_size
    path = tmp_path_factory.mktemp("st") / "model.safetensors"
    path.write_bytes(struct.pack("<Q", size) + header + b"\0" * 16)
    begin = time.time()
    with memory_limit(2 * 1024**3), pytest.raises(ValueError) as error:
        with readers.open_state_dict(str(path)) as reader:
            reader.get("w")
    assert time.time() - begin < 5
    assert str(path) in str(error.value)
