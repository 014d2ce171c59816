"""Stops `fit` at the first step whose loss is NaN or infinite."""

import math

import keras
import numpy as np


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first batch whose running loss is not finite.

    Like Keras' `TerminateOnNaN`, but it records where and what it saw, so
    that the caller can raise (`keras_aim.probing.fit_or_diverge` raises
    `TrainingDivergedError` and saves nothing). It reads each step's loss:
    a host transfer per step, which the probes and fine-tuning (short
    steps, or a progress bar that reads it anyway) can afford; the
    pre-training loop checks once per logging window instead
    (`RunCheckpoint`).

    Attributes:
        step: the batches seen so far (the step that diverged, once it
            stopped).
        loss: the non-finite loss, or `None` while training is sound.

    Example:

    ```python
    guard = StopOnNonFiniteLoss()
    model.fit(x, y, callbacks=[guard])
    if guard.loss is not None:
        print(f"diverged at step {guard.step}")
    ```
    """

    def __init__(self):
        super().__init__()
        self.step = 0
        self.loss = None

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        loss = float(np.asarray(loss))
        if not math.isfinite(loss):
            self.loss = loss
            self.model.stop_training = True
