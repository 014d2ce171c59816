"""keras_aim.training: logging windows, run checkpoints, host transfers.

Tiny pretrainers on the built-in digits (width 32, 1 block): windows of
several steps log the same rows however a run is cut and resumed; a
checkpoint is Keras' own weights file, verified by checksum; the old
(index-keyed) format still resumes; with logging every k steps the number
of device-to-host conversions grows with the windows, not the steps.
"""

import json
import os

import keras
import numpy as np
import pytest
from keras.src import backend as keras_backend

import keras_aim
from keras_aim import callbacks as run_callbacks
from keras_aim import training


def tiny_pretrainer(seed=0):
    keras.utils.set_random_seed(seed)
    backbone = keras_aim.AIMBackbone(
        image_shape=(16, 16, 3),
        patch_size=4,
        hidden_dim=32,
        num_layers=1,
        num_heads=2,
    )
    pretrainer = keras_aim.AIMPretrainer(
        backbone, head_hidden_dim=32, head_num_layers=1, seed=seed
    )
    pretrainer.compile(
        optimizer=keras_aim.optimizers.pretraining_optimizer(
            16, 8, base_learning_rate=1e-3, base_batch_size=8
        )
    )
    return pretrainer


def digits(batch_size=8):
    return keras_aim.data.pretraining_dataset("digits", batch_size=batch_size)


def tiny_sequential():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=0)
    return model


def test_window_segments_end_at_multiples():
    assert training.window_segments(0, 8, 3) == [(3, 2), (2, 1)]
    assert training.window_segments(5, 8, 3) == [(1, 1), (2, 1)]
    assert training.window_segments(6, 8, 3) == [(2, 1)]
    assert training.window_segments(0, 10, 1) == [(1, 10)]
    assert training.window_segments(4, 12, 4) == [(4, 2)]
    for start in range(0, 12):
        for every in (1, 2, 5, 12, 20):
            segments = training.window_segments(start, 12, every)
            ends, step = [], start
            for size, count in segments:
                for _ in range(count):
                    step += size
                    ends.append(step)
            assert step == 12
            assert all(e % every == 0 or e == 12 for e in ends)


def test_run_callbacks_never_read_step_logs():
    # Keras converts every step's logs to Python numbers (a host transfer)
    # as soon as one callback implements a batch-end hook.
    base = keras.callbacks.Callback
    for cls in (
        run_callbacks.StepLogger,
        run_callbacks.RunCheckpoint,
        keras_aim.callbacks.ReconstructionGrid,
    ):
        assert cls.on_train_batch_end is base.on_train_batch_end
        assert cls.on_batch_end is base.on_batch_end


def count_conversions(monkeypatch, steps, log_every, tmp_path):
    calls = []
    original = keras_backend.convert_to_numpy

    def counting(x):
        calls.append(1)
        return original(x)

    pretrainer = tiny_pretrainer()
    folder = str(tmp_path / f"run_{steps}_{log_every}")
    monkeypatch.setattr(keras_backend, "convert_to_numpy", counting)
    try:
        training.train(
            pretrainer,
            digits(),
            steps,
            folder,
            log_every=log_every,
            tensorboard=False,
            verbose=0,
        )
    finally:
        monkeypatch.setattr(keras_backend, "convert_to_numpy", original)
    return len(calls)


@pytest.mark.large(backend="torch")
def test_host_transfers_grow_with_windows_not_steps(monkeypatch, tmp_path):
    eight = count_conversions(monkeypatch, 8, 8, tmp_path)
    sixteen = count_conversions(monkeypatch, 16, 8, tmp_path)
    per_window = sixteen - eight
    assert 0 < per_window <= 6  # step counter, learning rate, epoch logs
    every_step = count_conversions(monkeypatch, 16, 1, tmp_path)
    every_step -= count_conversions(monkeypatch, 8, 1, tmp_path)
    assert every_step == 8 * per_window


def test_checkpoint_is_keras_weights_verified_by_checksum(tmp_path):
    model = tiny_sequential()
    manager = training.CheckpointManager(tmp_path)
    path = manager.save(3, model, fingerprint={"a": 1})
    assert sorted(os.listdir(path)) == [training.WEIGHTS_FILE, "state.json"]
    clone = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    clone.load_weights(os.path.join(path, training.WEIGHTS_FILE))
    for a, b in zip(clone.weights, model.weights):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
        )
    weights = os.path.join(path, training.WEIGHTS_FILE)
    with open(weights, "r+b") as f:
        f.seek(os.path.getsize(weights) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(training.SettingsError, match="damaged"):
        manager.restore(model, fingerprint={"a": 1})


def test_legacy_index_keyed_checkpoints_still_resume(tmp_path):
    """keras_aim 0.1 wrote `v00000`-keyed .npz files and no format field."""
    model = tiny_sequential()
    optimizer = model.optimizer
    folder = tmp_path / "step_00000005"
    folder.mkdir()
    for name, variables in (
        ("model_variables.npz", model.variables),
        ("optimizer_variables.npz", optimizer.variables),
    ):
        arrays = {
            f"v{i:05d}": keras.ops.convert_to_numpy(v)
            for i, v in enumerate(variables)
        }
        np.savez(folder / name, **arrays)
    record = {
        key: [
            {"path": v.path, "shape": list(v.shape), "dtype": str(v.dtype)}
            for v in variables
        ]
        for key, variables in (
            ("model_variables", model.variables),
            ("optimizer_variables", optimizer.variables),
        )
    }
    state = {"step": 5, "fingerprint": {"a": 1}, "metadata": {}, **record}
    (folder / "state.json").write_text(json.dumps(state))
    expected = [keras.ops.convert_to_numpy(v) for v in model.variables]
    for variable in model.trainable_variables:
        variable.assign(keras.ops.zeros(variable.shape))
    restored = training.CheckpointManager(tmp_path).restore(
        model, fingerprint={"a": 1}
    )
    assert restored["step"] == 5
    for variable, want in zip(model.variables, expected):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(variable), want
        )


def test_partial_checkpoints_are_ignored_and_pruned(tmp_path):
    model = tiny_sequential()
    manager = training.CheckpointManager(tmp_path, max_to_keep=2)
    os.makedirs(tmp_path / "step_00000009")  # no state.json: incomplete
    os.makedirs(tmp_path / ".tmp_step_00000010_123")
    for step in (1, 2, 3):
        manager.save(step, model, fingerprint={"a": 1})
    assert [s for s, _ in manager.checkpoints()] == [2, 3]
    assert not os.path.exists(tmp_path / ".tmp_step_00000010_123")
    weights = [keras.ops.convert_to_numpy(v) for v in model.weights]
    model.layers[0].kernel.assign(np.zeros((3, 2)))
    state = manager.restore(model, fingerprint={"a": 1})
    assert state["step"] == 3
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.weights[0]), weights[0]
    )
    with pytest.raises(training.SettingsError, match="a: 1 -> 2"):
        manager.restore(model, fingerprint={"a": 2})
