"""keras_aim.callbacks.ReconstructionGrid in a plain `fit`."""

import os

import numpy as np
import pytest
from test_training import digits
from test_training import tiny_pretrainer
from test_training import tiny_sequential

import keras_aim


@pytest.mark.large(backend="torch")
def test_reconstruction_grid_in_a_plain_fit(tmp_path):
    pretrainer = tiny_pretrainer()
    images, _ = keras_aim.data.probe_dataset("digits", "test")
    grid = keras_aim.callbacks.ReconstructionGrid(
        images[:4], str(tmp_path / "grid_{epoch}_{step}.png"), every=2
    )
    pretrainer.fit(
        digits(), epochs=4, steps_per_epoch=2, callbacks=[grid], verbose=0
    )
    names = sorted(os.listdir(tmp_path))
    assert names == ["grid_2_4.png", "grid_4_8.png"]
    for name in names:
        with open(tmp_path / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="AIMPretrainer"):
        grid.set_model(tiny_sequential())
    with pytest.raises(ValueError, match="float batch"):
        keras_aim.callbacks.ReconstructionGrid(
            np.zeros((2, 16, 16, 3), "uint8"), "x.png"
        )
