"""keras_aim.callbacks.StepLogger: one `log.csv` row per Keras epoch, keyed
by the optimizer step, with Keras' own epoch loss and the schedule's rate."""

import csv

import keras
import numpy as np

import keras_aim
from keras_aim.callbacks.step_logger import LOG_FIELDS


class EpochLosses(keras.callbacks.Callback):
    """What Keras itself reports at each epoch end (the reference)."""

    def __init__(self):
        super().__init__()
        self.losses = []

    def on_epoch_end(self, epoch, logs=None):
        self.losses.append(float(logs["loss"]))


def linear_model(learning_rate):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse")
    return model


def rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_rows_hold_the_step_the_epoch_loss_and_the_rate(tmp_path):
    x = np.random.default_rng(0).normal(size=(12, 3)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    model = linear_model(0.05)
    path = str(tmp_path / "log.csv")
    reference = EpochLosses()
    logger = keras_aim.callbacks.StepLogger(path, verbose=0)
    model.fit(
        x, y, batch_size=4, epochs=3, callbacks=[logger, reference], verbose=0
    )
    logger.close()
    table = rows(path)
    assert tuple(table[0]) == LOG_FIELDS
    assert [int(r[0]) for r in table[1:]] == [3, 6, 9]  # 3 batches an epoch
    np.testing.assert_allclose(
        [float(r[1]) for r in table[1:]], reference.losses, rtol=1e-7
    )
    # The rate is a float32 variable: 0.05 as float32, written as a float.
    want = float(np.float32(0.05))
    assert [float(r[2]) for r in table[1:]] == [want] * 3
    # A second fit appends after the header (a resumed run's log).
    logger = keras_aim.callbacks.StepLogger(path, verbose=0)
    model.fit(x, y, batch_size=4, epochs=1, callbacks=[logger], verbose=0)
    logger.close()
    table = rows(path)
    assert table.count(list(LOG_FIELDS)) == 1
    assert [int(r[0]) for r in table[1:]] == [3, 6, 9, 12]


def test_the_rate_comes_from_the_recipe_schedule(tmp_path):
    optimizer = keras_aim.optimizers.pretraining_optimizer(
        total_steps=10, batch_size=8, base_learning_rate=1e-3, base_batch_size=8
    )
    schedule = optimizer.learning_rate_schedule
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss="mse")
    path = str(tmp_path / "log.csv")
    logger = keras_aim.callbacks.StepLogger(path, verbose=0, step_offset=5)
    x = np.ones((8, 3), "float32")
    model.fit(
        x, x[:, :1], batch_size=4, epochs=2, callbacks=[logger], verbose=0
    )
    logger.close()
    table = rows(path)[1:]
    assert [int(r[0]) for r in table] == [7, 9]  # offset 5 + 2, 5 + 4
    for step, _, rate in table:
        # The rate of the window's last step: the schedule at step - 1.
        want = float(keras.ops.convert_to_numpy(schedule(int(step) - 1)))
        assert float(rate) == want


def test_no_file_for_a_worker(tmp_path):
    model = linear_model(0.1)
    logger = keras_aim.callbacks.StepLogger(None, verbose=0)
    x = np.ones((4, 3), "float32")
    model.fit(x, x[:, :1], epochs=2, callbacks=[logger], verbose=0)
    assert sorted(logger.losses) == [1, 2]
    assert list(tmp_path.iterdir()) == []
