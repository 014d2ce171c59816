"""Checkpoints every few steps and stops on a non-finite loss."""

import math

import keras

from keras_aim.callbacks.step_logger import optimizer_step
from keras_aim.utils.errors import TrainingDivergedError


class RunCheckpoint(keras.callbacks.Callback):
    """Stops on a non-finite loss and checkpoints every `every` steps.

    At the end of each logging window: a NaN or infinite loss stops
    training and is reported by `diverged` (no checkpoint is written, so
    the last good one stays the newest); otherwise a checkpoint is saved
    when `every` steps have passed, at the last step, or when a stop was
    requested (`request_stop`, e.g. by a signal). A window cut short by a
    stop saves the loss tracker's state with the checkpoint, so that a
    resumed run logs the same window mean as an uninterrupted one.

    Args:
        manager: a `keras_aim.training.CheckpointManager`.
        every: int or `None`, steps between checkpoints.
        total_steps: int, the last step (always checkpointed).
        fingerprint: dict stored with each checkpoint.
        log_every: int, the logging window (to know a cut-short one).
        step_offset: int, as in `StepLogger`.
        start_step: int, the step training starts from (a resumed run's
            checkpoint step).
        on_checkpoint: optional callable `(step, path)` run after a save.
    """

    def __init__(
        self,
        manager,
        every,
        total_steps,
        fingerprint=None,
        log_every=1,
        step_offset=0,
        start_step=0,
        on_checkpoint=None,
    ):
        super().__init__()
        self.manager = manager
        self.every = every
        self.total_steps = total_steps
        self.fingerprint = fingerprint
        self.log_every = log_every
        self.step_offset = step_offset
        self.on_checkpoint = on_checkpoint
        self.diverged = None
        self.stop_requested = None
        self.last_saved_step = start_step
        self.restore_window = None

    def request_stop(self, reason):
        self.stop_requested = reason

    def on_train_batch_begin(self, batch, logs=None):
        # Receives no logs (no host transfer): the step still runs, then
        # Keras ends the epoch and `on_epoch_end` checkpoints it.
        if self.stop_requested is not None:
            self.model.stop_training = True

    def on_epoch_begin(self, epoch, logs=None):
        if self.restore_window is not None:
            # Keras reset the loss tracker at the start of this epoch; put
            # back the sums of the window's steps run before the stop.
            for variable, value in zip(
                self.model.metrics_variables, self.restore_window
            ):
                variable.assign(value)
            self.restore_window = None

    def on_epoch_end(self, epoch, logs=None):
        step = optimizer_step(self.model) + self.step_offset
        loss = float((logs or {}).get("loss", float("nan")))
        if not math.isfinite(loss):
            self.diverged = TrainingDivergedError(
                step, loss, self.manager.latest()
            )
            self.model.stop_training = True
            return
        previous = self.last_saved_step
        due = (self.every and step // self.every > previous // self.every) or (
            step >= self.total_steps
        )
        if self.manager.read_only:
            due = False  # a worker: the chief process writes checkpoints
        if (
            due
            or self.stop_requested is not None
            and not self.manager.read_only
        ):
            extra = {"log_every": self.log_every}
            if step % self.log_every and step < self.total_steps:
                extra["window_state"] = [
                    keras.ops.convert_to_numpy(v).tolist()
                    for v in self.model.metrics_variables
                ]
            try:
                path = self.manager.save(
                    step, self.model, self.fingerprint, extra=extra
                )
            except TrainingDivergedError as error:
                self.diverged = error
                self.model.stop_training = True
                return
            self.last_saved_step = step
            if self.on_checkpoint is not None:
                self.on_checkpoint(step, path)
        if self.stop_requested is not None:
            self.model.stop_training = True
