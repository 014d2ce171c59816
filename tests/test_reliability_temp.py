"""Round two, class 4 (the library part): temporary files never outlive or
collide with their run.

The large-feature cache is a unique, already-unlinked file in the folder
the caller gives (or a fresh temporary one): two probes never share one,
and nothing is left on disk after success, failure or a kill. Writes of
`io_utils.atomic_folder` (`save_to_preset`) killed at generated points
leave debris that the next write to the same name removes, while folders
that are not provably ours, or belong to a write still running, stay.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import keras_aim
from keras_aim import data
from keras_aim import probing
from keras_aim.probing import features as features_module
from keras_aim.utils import io_utils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IO_UTILS = os.path.join(ROOT, "keras_aim", "utils", "io_utils.py")
SOME = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


# --- The feature cache --------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    keras.utils.set_random_seed(0)
    backbone = keras_aim.AIMBackbone(
        image_shape=(16, 16, 3),
        patch_size=4,
        hidden_dim=16,
        num_layers=2,
        num_heads=2,
    )
    return backbone, data.labelled_images("digits", "test")


@SOME
@given(shape=st.lists(st.integers(1, 50), min_size=1, max_size=3))
def test_a_temporary_memmap_leaves_nothing_on_disk(tmp_path_factory, shape):
    folder = tmp_path_factory.mktemp("cache")
    array = features_module.temporary_memmap(shape, str(folder))
    assert os.listdir(folder) == []  # unlinked while still mapped
    array[...] = 3.0
    assert array.shape == tuple(shape) and float(array.sum()) == 3 * array.size
    root = tmp_path_factory.mktemp("tmp")
    previous, tempfile.tempdir = tempfile.tempdir, str(root)
    try:
        other = features_module.temporary_memmap(shape)
    finally:
        tempfile.tempdir = previous
    assert os.listdir(root) == []  # its own folder went too
    other[...] = 1.0
    assert float(array.sum()) == 3 * array.size  # never shared


@pytest.mark.large(backend="jax")
def test_two_probes_never_share_or_leave_a_cache(digits, tmp_path, monkeypatch):
    backbone, test = digits
    monkeypatch.setattr(features_module, "IN_MEMORY_LIMIT_BYTES", 0)
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "run"
    cache.mkdir()
    first, _ = probing.block_features(
        backbone, test, [0], cache_dir=str(cache), verbose=0
    )
    kept = np.array(first, copy=True)
    second, _ = probing.block_features(
        backbone, test, [1], cache_dir=str(cache), verbose=0
    )
    assert isinstance(first, np.memmap) and isinstance(second, np.memmap)
    np.testing.assert_array_equal(first, kept)  # not truncated (no SIGBUS)
    assert not np.array_equal(first, second)
    assert os.listdir(cache) == [] and os.listdir(tmp_path) == ["run"]
    with pytest.raises(ValueError, match="cache_dir"):
        probing.block_features(
            backbone, test, [0], cache_dir=str(tmp_path / "missing")
        )


class _Failing:
    """A labelled set whose second batch fails to read."""

    def __init__(self, real):
        self.real = real
        self.num_examples = real.num_examples
        self.source = "failing"

    def batches(self, batch_size):
        for index, batch in enumerate(self.real.batches(batch_size)):
            if index == 1:
                raise OSError("the disk went away")
            yield batch


def test_a_failed_probe_leaves_no_cache(digits, tmp_path, monkeypatch):
    backbone, test = digits
    monkeypatch.setattr(features_module, "IN_MEMORY_LIMIT_BYTES", 0)
    system = tmp_path / "system_tmp"
    system.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system))
    for kwargs in ({"cache_dir": str(tmp_path)}, {}):
        with pytest.raises(OSError, match="went away"):
            probing.block_features(
                backbone,
                _Failing(test),
                [0],
                batch_size=64,
                verbose=0,
                **kwargs,
            )
    path = tmp_path / "features.npy"
    with pytest.raises(OSError, match="went away"):
        probing.block_features(
            backbone, _Failing(test), [0], cache_path=str(path), verbose=0
        )
    assert sorted(os.listdir(tmp_path)) == ["system_tmp"]
    assert os.listdir(system) == []


def test_an_explicit_cache_path_is_replaced_not_truncated(digits, tmp_path):
    backbone, test = digits
    path = str(tmp_path / "features.npy")
    first, _ = probing.block_features(
        backbone, test, [0], cache_path=path, verbose=0
    )
    kept = np.array(first, copy=True)
    second, _ = probing.block_features(
        backbone, test, [1], cache_path=path, verbose=0
    )
    np.testing.assert_array_equal(first, kept)
    np.testing.assert_array_equal(np.load(path), second)
    assert os.listdir(tmp_path) == ["features.npy"]


# --- Killed atomic writes -----------------------------------------------------

CHILD = r"""
import importlib.util, os, signal, sys, time
spec = importlib.util.spec_from_file_location("io_utils", sys.argv[1])
io_utils = importlib.util.module_from_spec(spec)
sys.modules["keras_aim.utils.errors"] = type(sys)("errors")
sys.modules["keras_aim.utils.errors"].MissingFileError = OSError
sys.modules["keras_aim.utils.errors"].UnreadableFileError = OSError
spec.loader.exec_module(io_utils)
final, kill_at, files = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
renames = [0]
rename = os.rename
def counted(a, b):
    rename(a, b)
    renames[0] += 1
    if renames[0] == kill_at - files:
        os.kill(os.getpid(), signal.SIGKILL)
os.rename = counted
with io_utils.atomic_folder(final) as folder:
    for i in range(files):
        with open(os.path.join(folder, f"part{i}"), "w") as f:
            f.write("new")
        if kill_at == i:
            os.kill(os.getpid(), signal.SIGKILL)
    if kill_at == -1:
        print("holding", flush=True)
        time.sleep(60)
"""


def run_child(final, kill_at, files, wait=True):
    command = [sys.executable, "-c", CHILD, IO_UTILS, final, str(kill_at)]
    process = subprocess.Popen(
        command + [str(files)], stdout=subprocess.PIPE, text=True
    )
    if wait:
        process.wait(timeout=60)
    return process


def write_old(final):
    with io_utils.atomic_folder(final) as folder:
        with open(os.path.join(folder, "part0"), "w") as f:
            f.write("old")


@SOME
@given(
    files=st.integers(1, 3),
    kill=st.integers(0, 5),
    had_old=st.booleans(),
    decoys=st.lists(
        st.sampled_from(
            [
                ".preset.tmp-0123456789ab",  # a folder with no lock: unprovable
                ".preset.tmp-zz.lock",
                "preset.old-0123456789ab",
                ".other.tmp-0123456789ab.lock",
            ]
        ),
        max_size=3,
        unique=True,
    ),
)
@pytest.mark.large(backend="torch")
def test_killed_writes_are_cleaned_by_the_next_one(
    tmp_path_factory, files, kill, had_old, decoys
):
    parent = tmp_path_factory.mktemp("presets")
    final = str(parent / "preset")
    if had_old:
        write_old(final)
    for name in decoys:
        if name.endswith(".lock"):
            (parent / name).write_text("x")
        else:
            (parent / name).mkdir()
    # Points: while writing file k (k < files), or after rename r: 1 puts
    # the lock in place, 2 sets the old version aside (or puts the new one
    # in place), 3 puts the new one in place after the old one was set aside.
    kill_at = kill if kill < files else files + 1 + (kill - files) % 3
    run_child(final, kill_at, files)
    live = run_child(final, -1, files, wait=False)  # a write in progress
    assert live.stdout.readline().strip() == "holding"
    try:
        with io_utils.atomic_folder(final) as folder:
            with open(os.path.join(folder, "part0"), "w") as f:
                f.write("next")
        left = sorted(os.listdir(parent))
        live_left = [n for n in left if n not in decoys and n != "preset"]
        assert len(live_left) == 2, left  # the live write's folder and lock
        assert all(n.startswith(".preset.tmp-") for n in live_left)
        assert set(decoys) <= set(left)
        with open(os.path.join(final, "part0")) as f:
            assert f.read() == "next"
    finally:
        live.send_signal(signal.SIGKILL)
        live.wait(timeout=60)
    io_utils.clean_stale_writes(final)  # the live one is dead now
    assert sorted(os.listdir(parent)) == sorted(decoys + ["preset"])


def test_a_writer_killed_between_its_renames_gets_the_old_version_back(
    tmp_path,
):
    final = str(tmp_path / "preset")
    write_old(final)
    run_child(final, 1 + 2, 1)  # killed after setting the old one aside
    assert not os.path.exists(final)
    io_utils.clean_stale_writes(final)
    with open(os.path.join(final, "part0")) as f:
        assert f.read() == "old"
    assert os.listdir(tmp_path) == ["preset"]


def test_save_to_preset_cleans_what_a_killed_save_left(tmp_path):
    backbone = keras_aim.AIMBackbone(
        image_shape=(8, 8, 3),
        patch_size=4,
        hidden_dim=16,
        num_layers=1,
        num_heads=2,
    )
    final = str(tmp_path / "backbone")
    run_child(final, 0, 1)  # a save killed while writing
    assert len(os.listdir(tmp_path)) == 2  # its folder and lock
    begin = time.time()
    backbone.save_to_preset(final)
    assert os.listdir(tmp_path) == ["backbone"]
    assert time.time() - begin < 60
    keras_aim.AIMBackbone.from_preset(final)
