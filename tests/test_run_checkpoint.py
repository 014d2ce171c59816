"""keras_aim.callbacks.RunCheckpoint: when it checkpoints, and the NaN stop
(a fake manager records the saves; the real one is in test_training)."""

import math

import keras
import numpy as np
import pytest

import keras_aim
from keras_aim.utils.errors import TrainingDivergedError


class FakeManager:
    def __init__(self, read_only=False):
        self.read_only = read_only
        self.saved = []

    def save(self, step, model, fingerprint, extra=None):
        self.saved.append((step, fingerprint, dict(extra or {})))
        return f"step_{step}"

    def latest(self):
        return self.saved[-1][0] if self.saved else None


def model_and_data(loss_value=None):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    if loss_value is None:
        model.compile(optimizer="sgd", loss="mse")
    else:

        def constant_loss(y_true, y_pred):
            return keras.ops.mean(y_pred) * 0.0 + loss_value

        model.compile(optimizer="sgd", loss=constant_loss)
    x = np.ones((2, 2), "float32")
    return model, x, x[:, :1]


@pytest.mark.parametrize(
    "every,total,epochs,want",
    [(2, 5, 5, [2, 4, 5]), (None, 3, 3, [3]), (1, 3, 3, [1, 2, 3])],
)
def test_saves_every_few_steps_and_at_the_end(every, total, epochs, want):
    model, x, y = model_and_data()
    manager = FakeManager()
    callback = keras_aim.callbacks.RunCheckpoint(
        manager, every, total_steps=total, fingerprint={"a": 1}
    )
    saves = []
    callback.on_checkpoint = lambda step, path: saves.append((step, path))
    model.fit(
        x, y, batch_size=2, epochs=epochs, callbacks=[callback], verbose=0
    )
    assert [s for s, _, _ in manager.saved] == want
    assert saves == [(s, f"step_{s}") for s in want]
    assert all(f == {"a": 1} for _, f, _ in manager.saved)
    assert callback.diverged is None


def test_a_worker_never_writes():
    model, x, y = model_and_data()
    manager = FakeManager(read_only=True)
    callback = keras_aim.callbacks.RunCheckpoint(manager, 1, total_steps=3)
    model.fit(x, y, batch_size=2, epochs=3, callbacks=[callback], verbose=0)
    assert manager.saved == []


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_loss_stops_without_a_checkpoint(bad):
    model, x, y = model_and_data(loss_value=bad)
    manager = FakeManager()
    callback = keras_aim.callbacks.RunCheckpoint(manager, 1, total_steps=5)
    history = model.fit(
        x, y, batch_size=2, epochs=5, callbacks=[callback], verbose=0
    )
    assert len(history.history["loss"]) == 1  # stopped after the first
    assert manager.saved == []
    assert isinstance(callback.diverged, TrainingDivergedError)


def test_a_stop_request_saves_now_and_stops():
    model, x, y = model_and_data()
    manager = FakeManager()
    callback = keras_aim.callbacks.RunCheckpoint(manager, 10, total_steps=10)
    callback.request_stop("SIGTERM")
    history = model.fit(
        x, y, batch_size=2, epochs=10, callbacks=[callback], verbose=0
    )
    assert len(history.history["loss"]) == 1
    assert [s for s, _, _ in manager.saved] == [1]
