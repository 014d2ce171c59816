"""Careless and hostile input: each class of failure, many generated cases.

1. Empty input on every Keras entry point of every model is refused and
   the model stays usable. 2. Two runs on one folder: the second is refused,
   a crashed run's lock is recovered. 3. Damaged checkpoints: resume falls
   back to the newest valid one. 5. Preset writes are atomic. 6. Absurd
   sizes are refused before anything is allocated. 7. Misspelt arguments,
   raw-pixel images, leaking prefix lengths and non-float or non-finite
   checkpoint tensors are refused with a message naming them.
"""

import json
import os
import subprocess
import sys
import time

import h5py
import keras
import numpy as np
import pytest
from conftest import TINY
from conftest import to_numpy
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import keras_aim
from keras_aim import training
from keras_aim.training import checkpoints as run_checkpoints
from keras_aim.utils import validation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))
import pretrain  # noqa: E402

FEW = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


# --- 1. Empty input -----------------------------------------------------------


def empty_inputs():
    import tensorflow as tf

    zeros = np.zeros((0, 28, 28, 3), "float32")
    one = np.random.default_rng(0).normal(size=(1, 28, 28, 3))
    one = one.astype("float32")

    class NoBatches(keras.utils.PyDataset):
        def __len__(self):
            return 0

        def __getitem__(self, index):
            raise IndexError(index)

    return {
        "array": zeros,
        "dict": {"images": zeros},
        "empty dataset": tf.data.Dataset.from_tensor_slices(zeros).batch(2),
        "zero batch": tf.data.Dataset.from_tensors(zeros),
        "filtered to nothing": tf.data.Dataset.from_tensor_slices(one)
        .filter(lambda x: tf.reduce_sum(x) > 1e9)
        .batch(1),
        "no batches": NoBatches(),
    }


def models():
    backbone = keras_aim.AIMBackbone(**TINY)
    backbone.compile(optimizer="sgd", loss="mse")
    classifier = keras_aim.AIMImageClassifier(
        keras_aim.AIMBackbone(**TINY), num_classes=3, probe_layers=[1]
    )
    classifier.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    pretrainer = keras_aim.AIMPretrainer(
        keras_aim.AIMBackbone(**TINY), head_hidden_dim=16, head_num_layers=1
    )
    pretrainer.compile(optimizer="adamw")
    return {
        "backbone": backbone,
        "classifier": classifier,
        "pretrainer": pretrainer,
    }


ENTRY_POINTS = (
    "fit",
    "evaluate",
    "predict",
    "train_on_batch",
    "test_on_batch",
    "predict_on_batch",
)


def test_empty_input_is_refused_everywhere_and_the_model_survives(tmp_path):
    images = np.random.default_rng(1).normal(size=(2, 28, 28, 3))
    images = images.astype("float32")
    tried = 0
    for name, model in models().items():
        before = to_numpy(
            model.predict_next_patches(images, [3, 5])
            if name == "pretrainer"
            else model(images)
        )
        for kind, x in empty_inputs().items():
            for entry in ENTRY_POINTS:
                if entry.endswith("_batch") and kind == "no batches":
                    continue
                with pytest.raises(ValueError, match="0 examples|empty|no"):
                    getattr(model, entry)(x)
                tried += 1
        # Still usable: weights readable and saveable, same outputs.
        model.get_weights()
        model.save_weights(str(tmp_path / f"{name}.weights.h5"))
        after = to_numpy(
            model.predict_next_patches(images, [3, 5])
            if name == "pretrainer"
            else model(images)
        )
        np.testing.assert_array_equal(after, before)
    assert tried == 3 * (5 * 6 + 3)


# --- 2. Two runs, one folder --------------------------------------------------


HOLD = """
import sys, time
from keras_aim.training.run_dir import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


@pytest.mark.large
def test_a_second_writer_is_refused_and_a_dead_one_recovered(tmp_path):
    folder = str(tmp_path / "run")
    os.makedirs(folder)
    env = dict(os.environ, PYTHONPATH=ROOT)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, folder],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(training.SettingsError) as info:
            with training.RunLock(folder):
                pass
        message = str(info.value)
        assert f"process {holder.pid}" in message and "in use" in message
        # The example refuses too, before it writes anything.
        with pytest.raises(training.SettingsError, match="in use"):
            pretrain.run(output_dir=folder, steps=2, verbose=0)
        assert sorted(os.listdir(folder)) == [".lock"]
    finally:
        holder.kill()  # SIGKILL: no clean-up runs in the holder.
        holder.wait()
    with training.RunLock(folder):  # the kernel dropped the dead lock
        with training.RunLock(folder):  # re-entrant within a process
            pass
    assert os.listdir(folder) == [".lock"]


# --- 3. Damaged checkpoints ---------------------------------------------------


def small_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=0)
    return model


def damage(path, kind, where):
    weights = os.path.join(path, run_checkpoints.WEIGHTS_FILE)
    state = os.path.join(path, run_checkpoints.STATE_FILE)
    if kind == "truncate":
        size = os.path.getsize(weights)
        with open(weights, "r+b") as f:
            f.truncate(int(where * (size - 1)))
        return weights
    if kind == "flip":
        size = os.path.getsize(weights)
        with open(weights, "r+b") as f:
            f.seek(int(where * (size - 1)))
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0x5A]))
        return weights
    if kind == "delete":
        os.remove(weights)
        return weights
    if kind == "state":
        with open(state, "r+b") as f:
            f.truncate(int(where * 40))
        return state
    # Non-finite weights with a matching checksum (written that way).
    with h5py.File(weights, "r+") as f:
        names = []
        f.visititems(
            lambda n, i: (
                names.append(n) if isinstance(i, h5py.Dataset) else None
            )
        )
        data = [n for n in names if f[n].dtype.kind == "f" and f[n].size]
        target = f[data[int(where * (len(data) - 1))]]
        values = np.array(target[()], copy=True)
        values.flat[0] = np.nan
        target[...] = values
    with open(state) as f:
        record = json.load(f)
    record["sha256"][run_checkpoints.WEIGHTS_FILE] = run_checkpoints._sha256(
        weights
    )
    with open(state, "w") as f:
        json.dump(record, f)
    return weights


@FEW
@given(
    kind=st.sampled_from(["truncate", "flip", "delete", "state", "nan"]),
    where=st.floats(0.0, 1.0),
    damaged=st.integers(1, 2),
)
@pytest.mark.large(backend="torch")
def test_resume_falls_back_to_the_newest_valid_checkpoint(
    tmp_path_factory, kind, where, damaged
):
    folder = tmp_path_factory.mktemp("ckpt")
    model = small_model()
    manager = training.CheckpointManager(folder, max_to_keep=3)
    saved = {}
    for step in (1, 2, 3):
        model.layers[0].kernel.assign(np.full((3, 2), float(step)))
        manager.save(step, model, fingerprint={"a": 1})
        saved[step] = to_numpy(model.layers[0].kernel)
    paths = dict(manager.checkpoints())
    names = [damage(paths[s], kind, where) for s in (3, 2)[:damaged]]
    model.layers[0].kernel.assign(np.zeros((3, 2)))
    with pytest.warns(UserWarning) as record:
        state = manager.restore_latest_valid(model, fingerprint={"a": 1})
    messages = " ".join(str(w.message) for w in record)
    for name in names:
        assert os.path.basename(name) in messages
    good = 3 - damaged
    assert state["step"] == good
    np.testing.assert_array_equal(to_numpy(model.layers[0].kernel), saved[good])
    assert [s for s, _ in manager.checkpoints()] == list(range(1, good + 1))
    assert sum(n.startswith("damaged_") for n in os.listdir(folder)) == damaged


def test_no_valid_checkpoint_means_a_fresh_start_keeping_the_damaged(tmp_path):
    model = small_model()
    manager = training.CheckpointManager(tmp_path / "checkpoints")
    path = manager.save(1, model)
    damage(path, "nan", 0.0)
    with pytest.warns(UserWarning, match="non-finite"):
        assert manager.restore_latest_valid(model) is None
    training.run_dir.clear_run(str(tmp_path))
    assert os.listdir(tmp_path / "damaged_checkpoints") == [
        "damaged_step_00000001"
    ]


def test_settings_changes_are_errors_not_damage(tmp_path):
    model = small_model()
    manager = training.CheckpointManager(tmp_path)
    manager.save(1, model, fingerprint={"lr": 1})
    with pytest.raises(training.SettingsError, match="lr: 1 -> 2"):
        manager.restore_latest_valid(model, fingerprint={"lr": 2})
    assert [s for s, _ in manager.checkpoints()] == [1]


# --- 5. Atomic preset writes --------------------------------------------------


def test_a_failed_preset_write_keeps_the_old_preset(tmp_path, monkeypatch):
    backbone = keras_aim.AIMBackbone(**TINY)
    folder = str(tmp_path / "preset")
    backbone.save_to_preset(folder)
    before = sorted(os.listdir(folder))
    images = np.random.default_rng(2).normal(size=(1, 28, 28, 3))
    images = images.astype("float32")
    expected = to_numpy(backbone(images))
    other = keras_aim.AIMBackbone(**TINY)

    def disk_full(self, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keras_aim.AIMBackbone, "save_weights", disk_full)
    with pytest.raises(OSError, match="No space"):
        other.save_to_preset(folder)
    monkeypatch.undo()
    assert sorted(os.listdir(folder)) == before
    assert os.listdir(tmp_path) == ["preset"]  # no temporary left behind
    restored = keras_aim.AIMBackbone.from_preset(folder)
    np.testing.assert_array_equal(to_numpy(restored(images)), expected)
    (tmp_path / "preset" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not part of a preset"):
        other.save_to_preset(folder)


# --- 6. Untrusted sizes -------------------------------------------------------


@FEW
@given(
    key=st.sampled_from(["hidden_dim", "num_layers", "patch_size"]),
    value=st.integers(10**5, 10**12),
)
def test_absurd_sizes_in_a_config_are_refused_fast(
    tmp_path_factory, key, value
):
    folder = tmp_path_factory.mktemp("huge")
    backbone = keras_aim.AIMBackbone(**TINY)
    backbone.save_to_preset(str(folder))
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config["config"][key] = value
    if key == "hidden_dim":
        config["config"]["num_heads"] = 1
        value -= value % 4
        config["config"][key] = value
    path.write_text(json.dumps(config))
    begin = time.time()
    with pytest.raises(ValueError, match=key + "|memory|divisible"):
        keras_aim.AIMBackbone.from_preset(str(folder), load_weights=False)
    assert time.time() - begin < 5


def test_memory_check_and_its_override(monkeypatch):
    with pytest.raises(ValueError, match="more than this machine"):
        validation.check_parameter_memory(10**13, 4, "a model")
    monkeypatch.setenv(validation.ALLOW_LARGE_ENV, "1")
    validation.check_parameter_memory(10**13, 4, "a model")
    validation.check_size_limit(10**6, "hidden_dim")
    with pytest.raises(ValueError, match="more than this machine"):
        monkeypatch.delenv(validation.ALLOW_LARGE_ENV)
        keras_aim.AIMBackbone(
            image_shape=(28, 28, 3),
            patch_size=4,
            hidden_dim=60000,
            num_layers=4000,
            num_heads=1,
        )


# --- 7. Silent acceptance -----------------------------------------------------


def misspell(name, how):
    if how == 0:
        return name[:-1]
    if how == 1:
        return name + name[-1]
    i = len(name) // 2
    return name[:i] + name[i + 1] + name[i] + name[i + 2 :]


BACKBONE_ARGS = ["image_shape", "patch_size", "hidden_dim", "num_layers"]


@FEW
@given(name=st.sampled_from(BACKBONE_ARGS), how=st.integers(0, 2))
def test_misspelt_arguments_are_refused(name, how):
    wrong = misspell(name, how)
    if wrong == name:
        return
    values = {**TINY}
    value = values.pop(name)
    for build in (
        lambda: keras_aim.AIMBackbone(**values, **{wrong: value}),
        lambda: keras_aim.AIMBackbone.from_preset(
            "aim_600m", load_weights=False, **{wrong: value}
        ),
    ):
        with pytest.raises((TypeError, ValueError), match=wrong):
            build()
    backbone = keras_aim.AIMBackbone(**TINY)
    with pytest.raises((TypeError, ValueError), match="num_clases"):
        keras_aim.AIMImageClassifier(backbone, num_clases=3)
    with pytest.raises((TypeError, ValueError), match="head_num_layer"):
        keras_aim.AIMPretrainer(backbone, head_num_layer=2)


@pytest.mark.parametrize(
    "images,match",
    [
        (np.zeros((1, 28, 28, 3), "uint8"), "dtype uint8"),
        (np.full((1, 28, 28, 3), 255.0, "float32"), "raw pixels"),
        (np.full((1, 28, 28, 3), np.nan, "float32"), "NaN"),
    ],
)
def test_raw_or_broken_images_are_refused(images, match):
    backbone = keras_aim.AIMBackbone(**TINY)
    pretrainer = keras_aim.AIMPretrainer(
        backbone, head_hidden_dim=16, head_num_layers=1
    )
    for call in (
        lambda: backbone(images),
        lambda: backbone.predict(images, verbose=0),
        lambda: backbone.extract_features(images, [0]),
        lambda: pretrainer.predict_next_patches(images, 2),
    ):
        with pytest.raises(ValueError, match=match):
            call()


@FEW
@given(prefix=st.one_of(st.integers(-100, -1), st.integers(49, 10**6)))
def test_prefix_lengths_that_leak_the_target_are_refused(prefix):
    images = np.random.default_rng(3).normal(size=(2, 28, 28, 3))
    images = images.astype("float32")
    pretrainer = keras_aim.AIMPretrainer(
        keras_aim.AIMBackbone(**TINY), head_hidden_dim=16, head_num_layers=1
    )
    with pytest.raises(ValueError, match=r"\[0, 48\]"):
        pretrainer.predict_next_patches(images, [prefix, 3])
    with pytest.raises(ValueError, match=r"\[0, 48\]"):
        keras_aim.losses.next_patch_pixel_loss(
            images, np.zeros((2, 49, 48), "float32"), [3, prefix], 4
        )


def test_non_float_and_non_finite_checkpoint_tensors_are_refused():
    from tests import reference as ref

    sd = ref.random_state_dict(
        embed_dim=48, num_blocks=3, num_heads=2, patch_size=4, num_classes=3
    )
    model = keras_aim.AIMBackbone(**TINY)
    backbone_sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    key = "trunk.blocks.1.mlp.fc1.weight"
    for bad, match in (
        (backbone_sd[key].astype("int64"), "dtype int64"),
        (np.where(backbone_sd[key] > 0, np.inf, 0.0), "NaN or infinite"),
    ):
        with pytest.raises(ValueError, match=match) as info:
            keras_aim.convert.load_released_weights(
                model, {**backbone_sd, key: bad.astype(bad.dtype)}
            )
        assert key in str(info.value)


# --- Released files and conversion --------------------------------------------


def test_released_files_are_checked_against_the_published_sha256(
    tmp_path, monkeypatch
):
    from keras_aim.convert import loaders as loader

    fake = tmp_path / "aim_600m_2bimgs_attnprobe_backbone.pth"
    fake.write_bytes(os.urandom(1000))
    with pytest.raises(ValueError, match="publishes 0d6f6b8f") as info:
        loader.ReleasedCheckpointLoader.from_pth(str(fake))
    assert str(fake) in str(info.value)
    digest = __import__("hashlib").sha256(fake.read_bytes()).hexdigest()
    monkeypatch.setattr(loader, "released_sha256_prefix", lambda n: digest[:8])
    loader.check_released_sha256(str(fake))  # matches: accepted
    other = tmp_path / "my_backbone.pth"
    other.write_bytes(b"x")
    monkeypatch.undo()
    loader.check_released_sha256(str(other))  # unknown name: not checked


def test_convert_refuses_to_write_onto_its_source(tmp_path, capsys):
    from keras_aim import convert
    from tests import reference as ref

    folder = str(tmp_path / "hub")
    sd = ref.random_state_dict(
        embed_dim=16, num_blocks=1, num_heads=2, patch_size=4, num_classes=3
    )
    ref.write_hub_folder(folder, sd, ref.hub_config(sd, 2, img_size=16))
    before = sorted(os.listdir(folder))
    with pytest.raises(SystemExit) as info:
        convert.main([folder, "--output", folder, "--overwrite"])
    assert info.value.code == 2
    assert "source's own folder" in capsys.readouterr().err
    assert sorted(os.listdir(folder)) == before


@FEW
@given(
    kinds=st.lists(
        st.sampled_from(["empty", "text", "truncated", "corrupt"]),
        min_size=1,
        max_size=4,
    )
)
def test_pretraining_streams_survive_damaged_images(tmp_path_factory, kinds):
    import warnings

    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(4):
        pixels = rng.integers(0, 256, (24, 24, 3), dtype="uint8")
        Image.fromarray(pixels).save(folder / f"good_{i}.png")
    good = (folder / "good_0.png").read_bytes()
    for i, kind in enumerate(kinds):
        data = {
            "empty": b"",
            "text": b"no image here",
            "truncated": good[: len(good) // 2],
            "corrupt": good[:60] + b"\x00" * 60 + good[120:],
        }[kind]
        (folder / f"bad_{i}.png").write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = keras_aim.data.pretraining_dataset(
            str(folder), image_size=16, batch_size=2
        )
        batches = [np.asarray(b) for b in dataset.take(6)]
    assert all(b.shape == (2, 16, 16, 3) for b in batches)
    assert all(np.isfinite(b).all() for b in batches)
