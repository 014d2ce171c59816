"""Keras callbacks for AIM training loops, one per file.

They act at the end of a Keras epoch, which `keras_aim.training.train`
makes one logging window of `log_every` steps, and none reads a step's
logs: Keras converts a step's logs to Python numbers (a host transfer) for
any callback with a batch-end hook. That is why Keras' `CSVLogger` (keyed
by epoch), `TensorBoard` and `TerminateOnNaN` (both per batch) and
`ProgbarLogger` are not used by the training loop; these do the same jobs
keyed by the optimizer step.

- `StepLogger` (`step_logger.py`): `log.csv`, TensorBoard, progress.
- `RunCheckpoint` (`run_checkpoint.py`): checkpoints, the NaN stop.
- `ReconstructionGrid` (`reconstruction_grid.py`): next-patch figures.
- `StopOnNonFiniteLoss` (`stop_on_non_finite_loss.py`): the NaN guard of
  probes and fine-tuning, which do read each step's loss.
- `KNNMonitor` (`knn_monitor.py`): k-NN top-1 of held-out data, in
  `knn.csv`.
"""

from keras_aim.callbacks.knn_monitor import KNNMonitor
from keras_aim.callbacks.reconstruction_grid import ReconstructionGrid
from keras_aim.callbacks.run_checkpoint import RunCheckpoint
from keras_aim.callbacks.step_logger import StepLogger
from keras_aim.callbacks.stop_on_non_finite_loss import StopOnNonFiniteLoss

__all__ = [
    "KNNMonitor",
    "ReconstructionGrid",
    "RunCheckpoint",
    "StepLogger",
    "StopOnNonFiniteLoss",
]
