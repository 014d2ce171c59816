"""Resumable pre-training runs: the loop, run checkpoints and callbacks.

- `loop`: `train`, `fit` in logging windows of `log_every` steps.
- `checkpoints`: `CheckpointManager`, atomic checkpoints in Keras' weights
  format with a settings fingerprint and checksums.
- `signals`: `StopOnSignal`, SIGINT/SIGTERM to a checkpoint-and-stop.
- `windows`: `WindowCallbackList`. The callbacks are in `keras_aim.callbacks`.
- `run_dir`: the output folder (its lock, what may sit where a run writes)
  and its `log.csv`.
"""

from keras_aim.training.checkpoints import CHECKPOINT_PREFIX
from keras_aim.training.checkpoints import STATE_FILE
from keras_aim.training.checkpoints import WEIGHTS_FILE
from keras_aim.training.checkpoints import CheckpointManager
from keras_aim.training.checkpoints import check_fingerprint
from keras_aim.training.loop import TrainingResult
from keras_aim.training.loop import train
from keras_aim.training.loop import window_segments
from keras_aim.training.run_dir import CHECKPOINT_DIR
from keras_aim.training.run_dir import LOG_FIELDS
from keras_aim.training.run_dir import LOG_FILE
from keras_aim.training.run_dir import TENSORBOARD_DIR
from keras_aim.training.run_dir import RunLock
from keras_aim.training.run_dir import check_outputs
from keras_aim.training.run_dir import prepare_output_dir
from keras_aim.training.run_dir import read_log
from keras_aim.utils.errors import SettingsError
from keras_aim.utils.errors import TrainingDivergedError

__all__ = [
    "CHECKPOINT_DIR",
    "CHECKPOINT_PREFIX",
    "LOG_FIELDS",
    "LOG_FILE",
    "STATE_FILE",
    "TENSORBOARD_DIR",
    "WEIGHTS_FILE",
    "CheckpointManager",
    "RunLock",
    "SettingsError",
    "TrainingDivergedError",
    "TrainingResult",
    "check_fingerprint",
    "check_outputs",
    "prepare_output_dir",
    "read_log",
    "train",
    "window_segments",
]
