"""Round two, class 1: user files that are not regular files, or never end.

A FIFO, a symlink to `/dev/zero`, a directory, a 10 GB sparse file, a
broken or looping symlink or a socket is put, under generated names, in
place of every kind of user file keras_aim reads: images in a folder,
preset and hub `config.json`, `image_converter.json`, LoRA `.h5`,
`state.json` and weights of checkpoints, released `.safetensors` and
`.pth`. Every reader must refuse it (image folders: skip it with a
warning) with a message naming the file, within seconds, under an
address-space cap: `io_utils.check_regular_file` and friends, used by all
of them.
"""

import os
import warnings

import keras
import numpy as np
import pytest
from hostile import HOSTILE_KINDS
from hostile import make_hostile
from hostile import memory_limit
from hostile import png_bytes
from hostile import run_bounded
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import keras_aim
from keras_aim import data
from keras_aim import training
from keras_aim.convert import loaders
from keras_aim.convert import readers
from keras_aim.convert import released_aim
from keras_aim.data import sources
from keras_aim.models.aim import aim_image_converter
from keras_aim.training import run_dir
from keras_aim.utils import io_utils
from keras_aim.utils.errors import CheckpointDamagedError
from keras_aim.utils.errors import UnreadableFileError

SOME = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
names = st.text("abcxyz019_-", min_size=1, max_size=8)
extensions = st.sampled_from([".png", ".PNG", ".jpg", ".jpeg", ".bmp"])


def bounded(function, folder):
    with memory_limit():
        return run_bounded(function, timeout=60, folder=folder)


# --- The helper itself --------------------------------------------------------


@SOME
@given(kind=st.sampled_from(HOSTILE_KINDS), name=names)
def test_the_helpers_refuse_every_kind_fast(tmp_path_factory, kind, name):
    folder = tmp_path_factory.mktemp("helper")
    path = make_hostile(folder / f"{name}.json", kind)
    for read in (
        lambda: io_utils.check_regular_file(path, 1024, what="Thing"),
        lambda: io_utils.read_bounded(path, 1024, what="Thing"),
        lambda: io_utils.read_json(path, what="Thing"),
    ):
        _, error = bounded(read, folder)
        assert isinstance(error, UnreadableFileError), (kind, error)
        assert path in str(error) and error.path == path
    if kind == "broken_link":
        assert isinstance(error, FileNotFoundError)


@SOME
@given(size=st.integers(0, 5000), limit=st.integers(0, 5000))
def test_bounded_reads_stop_at_their_limit(tmp_path_factory, size, limit):
    path = tmp_path_factory.mktemp("sizes") / "x.json"
    path.write_bytes(b"7" * size)
    if size <= limit:
        assert io_utils.read_bounded(path, limit) == b"7" * size
        assert io_utils.check_regular_file(path, limit) == size
    else:
        with pytest.raises(UnreadableFileError, match="allowed"):
            io_utils.read_bounded(path, limit)


# --- Image folders ------------------------------------------------------------


def image_folder(folder, hostile):
    """Two classes with one good PNG each, plus the hostile entries."""
    good = []
    for label in ("a", "b"):
        os.makedirs(folder / label)
        path = folder / label / "good.png"
        path.write_bytes(png_bytes(8, 8))
        good.append(str(path))
    bad = []
    for index, (kind, label, name, extension) in enumerate(hostile):
        path = folder / label / f"{name}{index}{extension}"
        bad.append(make_hostile(path, kind))
    return sorted(good), bad


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    hostile=st.lists(
        st.tuples(
            st.sampled_from(HOSTILE_KINDS),
            st.sampled_from("ab"),
            names,
            extensions,
        ),
        min_size=1,
        max_size=4,
    )
)
def test_image_folders_skip_what_is_not_an_image_file(
    tmp_path_factory, hostile
):
    folder = tmp_path_factory.mktemp("images")
    good, bad = image_folder(folder, hostile)
    converter = keras_aim.AIMImageConverter(resize_size=8, crop_size=8)

    def read_everything():
        listed = sources.list_image_files(str(folder))
        files = sources.folder_files(str(folder))
        split, _, _ = sources.read_class_folder(str(folder), "train", 0.5, 0)
        labelled = data.labelled_images(
            str(folder), "all", image_converter=converter
        )
        images, labels = labelled.to_arrays()
        stream = data.evaluation_dataset(
            str(folder), labels="inferred", image_converter=converter
        )
        count = sum(len(y) for _, y in stream)
        return listed, files, split, labelled, images, labels, count

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result, error = bounded(read_everything, folder)
    assert error is None, error
    listed, files, split, labelled, images, labels, count = result
    assert listed == good and files == good
    assert set(split) <= set(good)
    assert labelled.files == good and labelled.class_names == ["a", "b"]
    assert images.shape == (2, 8, 8, 3) and list(labels) == [0, 1]
    assert count == 2
    messages = " ".join(str(w.message) for w in caught)
    for path in bad:
        if not os.path.isdir(path):  # a directory is walked, not listed
            assert path in messages


# --- Every other user file ----------------------------------------------------


@pytest.fixture(scope="module")
def lora_backbone():
    keras.utils.set_random_seed(0)
    return keras_aim.AIMBackbone(
        image_shape=(8, 8, 3),
        patch_size=4,
        hidden_dim=16,
        num_layers=1,
        num_heads=2,
    )


def checkpoint(folder):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    manager = training.CheckpointManager(folder / "checkpoints")
    return manager, model, manager.save(1, model)


def target_file(target, folder, kind, lora_backbone):
    """`(path, reader)`: the file of `target` made hostile, and its reader."""
    if target == "preset_config":
        path = folder / "config.json"
        return path, lambda: keras_aim.AIMBackbone.from_preset(str(folder))
    if target == "hub_config":
        path = folder / "config.json"
        return path, lambda: released_aim.read_hub_config(str(folder))
    if target == "image_converter":
        path = folder / aim_image_converter.IMAGE_CONVERTER_FILE
        return path, lambda: aim_image_converter.load_image_converter(
            str(folder)
        )
    if target == "lora":
        path = folder / "lora.weights.h5"
        return path, lambda: lora_backbone.load_lora_weights(str(path))
    if target in ("state_json", "checkpoint_weights"):
        manager, _, step = checkpoint(folder)
        name = "state.json" if target == "state_json" else "model.weights.h5"
        path = os.path.join(step, name)
        if target == "state_json" and kind == "directory":
            # A folder whose state.json is a directory is no checkpoint.
            os.remove(path)
            make_hostile(path, kind)
            assert manager.checkpoints() == []
            return None, None
        os.remove(path)
        return path, lambda: manager.verify(step)
    if target == "preset_weights":
        folder = folder / "preset"
        lora_backbone.save_to_preset(str(folder))
        path = folder / "model.weights.h5"
        os.remove(path)
        return path, lambda: keras_aim.AIMBackbone.from_preset(str(folder))
    if target == "training_log":
        path = folder / "log.csv"
        return path, lambda: run_dir.truncate_log(str(path), 0)
    if target == "safetensors":
        path = folder / "model.safetensors"
        return path, lambda: readers.open_state_dict(str(path))
    if target == "pth":
        path = folder / "backbone.pth"
        return path, lambda: readers.open_state_dict(str(path))
    path = folder / "aim_600m_2bimgs_attnprobe_backbone.pth"
    return path, lambda: loaders.ReleasedCheckpointLoader.from_pth(str(path))


TARGETS = (
    "preset_config",
    "hub_config",
    "image_converter",
    "lora",
    "state_json",
    "checkpoint_weights",
    "preset_weights",
    "training_log",
    "safetensors",
    "pth",
    "released_pth",
)


@pytest.mark.parametrize("target", TARGETS)
@SOME
@given(kind=st.sampled_from(HOSTILE_KINDS))  # all 7: hypothesis exhausts them
def test_every_reader_refuses_files_that_are_not_regular(
    tmp_path_factory, lora_backbone, kind, target
):
    folder = tmp_path_factory.mktemp(target)
    path, read = target_file(target, folder, kind, lora_backbone)
    if path is None:
        return
    make_hostile(path, kind)
    _, error = bounded(read, folder)
    assert isinstance(error, ValueError), (kind, target, repr(error))
    assert os.path.basename(str(path)) in str(error), str(error)
    if target in ("state_json", "checkpoint_weights"):
        assert isinstance(error, CheckpointDamagedError)


@settings(max_examples=8, deadline=None)
@given(kind=st.sampled_from(HOSTILE_KINDS))
def test_a_hostile_newest_checkpoint_falls_back_to_the_older_one(
    tmp_path_factory, kind
):
    folder = tmp_path_factory.mktemp("fallback")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    manager = training.CheckpointManager(folder, max_to_keep=3)
    manager.save(1, model)
    model.layers[0].kernel.assign(np.ones((3, 2)))
    newest = manager.save(2, model)
    weights = os.path.join(newest, "model.weights.h5")
    os.remove(weights)
    make_hostile(weights, kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state, error = bounded(
            lambda: manager.restore_latest_valid(model), folder
        )
    assert error is None, error
    assert state["step"] == 1
    kernel = keras.ops.convert_to_numpy(model.layers[0].kernel)
    assert not np.all(kernel == 1.0)
