"""`StopOnNonFiniteLoss`: stops `fit` at the first non-finite loss, and
`probing.fit_or_diverge` turns that into `TrainingDivergedError`."""

import keras
import numpy as np
import pytest

from keras_aim import probing
from keras_aim.callbacks import StopOnNonFiniteLoss
from keras_aim.utils.errors import TrainingDivergedError


def batches(bad_row):
    x = np.ones((40, 3), "float32")
    if bad_row is not None:
        x[bad_row] = np.nan
    return probing.IndexedBatches(x, np.zeros((40, 2)), 4, shuffle=False)


def model():
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    net.compile(optimizer="sgd", loss="mse")
    return net


@pytest.mark.parametrize("bad_row,step", [(9, 3), (0, 1), (None, None)])
def test_stops_at_the_first_non_finite_batch(bad_row, step):
    net = model()
    guard = StopOnNonFiniteLoss()
    net.fit(
        batches(bad_row), epochs=3, verbose=0, shuffle=False, callbacks=[guard]
    )
    if step is None:  # a sound run: all 3 epochs of 10 steps
        assert guard.loss is None and guard.step == 30
        assert int(net.optimizer.iterations.numpy()) == 30
        return
    assert np.isnan(guard.loss) and guard.step == step
    assert int(net.optimizer.iterations.numpy()) == step  # stopped there


def test_fit_or_diverge_raises_and_names_the_step():
    net = model()
    with pytest.raises(TrainingDivergedError, match="step 3") as info:
        probing.divergence.fit_or_diverge(net, batches(9), epochs=5)
    assert info.value.checkpoint is None
    assert "Nothing was saved" in str(info.value)
    sound = probing.divergence.fit_or_diverge(model(), batches(None), 1)
    assert all(np.isfinite(w.numpy()).all() for w in sound.weights)
