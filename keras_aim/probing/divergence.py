"""The NaN guard of every probe and fine-tuning run, as pre-training has.

A NaN or infinite loss (a too-high learning rate, bad data) stops
training at that batch and raises `TrainingDivergedError`; so do weights
that came out of `fit` non-finite. The caller writes nothing that looks
like a result (no metrics, no classifier).
"""

import keras
import numpy as np

from keras_aim.callbacks.stop_on_non_finite_loss import StopOnNonFiniteLoss
from keras_aim.probing.features import IndexedBatches
from keras_aim.utils.errors import TrainingDivergedError

ADVICE = (
    "Nothing was saved. Lower the learning rate (or check the input data) "
    "and run again."
)


def fit_or_diverge(model, batches, epochs, verbose=0):
    """`model.fit(batches, epochs=epochs)`, stopped and refused if it
    diverges.

    Raises:
        TrainingDivergedError: the loss became NaN or infinite (training
            stops at that step), or a weight is not finite afterwards.
    """
    guard = StopOnNonFiniteLoss()
    data, steps = batches, None
    if (
        keras.backend.backend() == "tensorflow"
        and isinstance(batches, IndexedBatches)
        and batches.in_memory
    ):
        # No Python inside TensorFlow's input threads (see `as_tf_dataset`).
        data, steps = batches.as_tf_dataset(epochs), len(batches)
    history = model.fit(
        data,
        epochs=epochs,
        steps_per_epoch=steps,
        verbose=verbose,
        shuffle=False,
        callbacks=[guard],
    )
    if data is not batches:  # where Keras's `on_epoch_end` calls leave it
        batches.on_epoch_end(1 + len(history.epoch))
    if guard.loss is not None:
        raise TrainingDivergedError(guard.step, guard.loss, None, advice=ADVICE)
    for variable in model.weights:
        array = np.asarray(keras.ops.convert_to_numpy(variable.value))
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise TrainingDivergedError(
                guard.step,
                float("nan"),
                None,
                what=f"weight {variable.path!r}",
                advice=ADVICE,
            )
    return model
