"""The Keras callbacks a resumable pre-training run is made of.

All of them act at the end of a Keras epoch, which `train` makes one
logging window of `log_every` steps, and none of them reads a step's logs:
Keras converts a step's logs to Python numbers (a host transfer) for any
callback with a batch-end hook. That is why Keras' `CSVLogger` (keyed by
epoch), `TensorBoard` and `TerminateOnNaN` (both per batch) and
`ProgbarLogger` are not used here; these do the same jobs keyed by the
optimizer step, and `WindowCallbackList` keeps Keras from converting
unread logs.
"""

import csv
import math
import os
import signal
import sys
import time

import keras

from keras_aim.training.errors import TrainingDivergedError
from keras_aim.training.run_dir import LOG_FIELDS


class WindowCallbackList(keras.callbacks.CallbackList):
    """A `keras.callbacks.CallbackList` that skips unread batch-end logs.

    Keras hands every step's logs to a worker thread that converts them to
    Python numbers (a device-to-host transfer per step) even when no
    callback has a batch-end hook. This list passes them on only when one
    of its callbacks reads them, so a run of k-step windows transfers data
    once per window.

    Args:
        callbacks: the callbacks.
        model: the model.
        **params: as for `keras.callbacks.CallbackList` (`epochs`,
            `steps`, `verbose`).
    """

    def __init__(self, callbacks, model, **params):
        super().__init__(
            callbacks,
            add_history=True,
            add_progbar=False,
            model=model,
            **params,
        )
        base = keras.callbacks.Callback
        self.reads_batch_logs = any(
            type(c).on_train_batch_end is not base.on_train_batch_end
            or type(c).on_batch_end is not base.on_batch_end
            for c in self.callbacks
        )

    def on_train_batch_end(self, batch, logs=None):
        if self.reads_batch_logs:
            super().on_train_batch_end(batch, logs)


def optimizer_step(model):
    """The number of optimizer steps (training batches) taken so far."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


def learning_rate_at(optimizer, step):
    """The learning rate the optimizer used for its (1-based) `step`.

    Reads the schedule of a `PretrainingAdamW` (its
    `learning_rate_schedule`); for other optimizers, the current rate.
    """
    schedule = getattr(optimizer, "learning_rate_schedule", None)
    if schedule is not None:
        return float(keras.ops.convert_to_numpy(schedule(max(step - 1, 0))))
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class StepLogger(keras.callbacks.Callback):
    """Writes the loss and learning rate of each logging window to CSV.

    At the end of each Keras epoch it appends `step, loss, learning_rate`
    to `csv_path` (the step counted by the optimizer, the loss averaged by
    Keras over the epoch's steps, the rate of its last step), optionally as
    TensorBoard scalars, and updates a progress bar on a terminal (a line
    every ~5% otherwise).

    Args:
        csv_path: the CSV file (appended to; a header is written if new),
            or `None` to write nothing (a data-parallel worker).
        tensorboard_dir: folder for TensorBoard event files, or `None`.
        verbose: int, 1 shows progress over `total_steps`.
        total_steps: int, the run's planned steps (for the progress bar).
        step_offset: int, the step the optimizer counter's zero stands for
            (for models whose counter did not start at 0).

    Example:

    ```python
    model.fit(dataset, epochs=40, steps_per_epoch=10,
              callbacks=[keras_aim.callbacks.StepLogger("log.csv")])
    ```
    """

    def __init__(
        self,
        csv_path,
        tensorboard_dir=None,
        verbose=1,
        total_steps=None,
        step_offset=0,
    ):
        super().__init__()
        self.csv_path = csv_path
        self.tensorboard_dir = tensorboard_dir
        self.verbose = verbose
        self.total_steps = total_steps
        self.step_offset = step_offset
        self.losses = {}
        self._file = None
        self._writer = None
        self._progress = None
        self._start_step = None

    def on_train_begin(self, logs=None):
        if self._start_step is None:
            self._start_step = optimizer_step(self.model) + self.step_offset
        if self._file is None and self.csv_path is not None:
            new = not os.path.exists(self.csv_path)
            self._file = open(self.csv_path, "a", newline="")
            self._csv = csv.writer(self._file)
            if new:
                self._csv.writerow(LOG_FIELDS)
                self._file.flush()
        if self.tensorboard_dir and self._writer is None:
            self._writer = _summary_writer(self.tensorboard_dir)
        if self.verbose and self._progress is None:
            total = self.total_steps or self._start_step + 1
            self._progress = _Progress(total, self._start_step)

    def on_epoch_end(self, epoch, logs=None):
        step = optimizer_step(self.model) + self.step_offset
        loss = float((logs or {}).get("loss", float("nan")))
        rate = learning_rate_at(self.model.optimizer, step)
        self.losses[step] = loss
        if self._file is not None:
            self._csv.writerow([step, repr(loss), repr(rate)])
            self._file.flush()
        if self._writer is not None:
            self._writer.scalars(step, {"loss": loss, "learning_rate": rate})
        if self._progress is not None:
            self._progress.update(step, loss, rate)

    def flush(self):
        if self._writer is not None:
            self._writer.flush()

    def close(self):
        """Closes the files (a later `fit` reopens them)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._progress is not None:
            self._progress.close()
            self._progress = None


class _Progress:
    """A Keras progress bar on a terminal; a line every ~5% otherwise."""

    def __init__(self, total_steps, start_step):
        self.total_steps = total_steps
        self.start_step = self.step = start_step
        self.every = max(1, total_steps // 20)
        self.begin = time.time()
        self.bar = None
        if sys.stdout.isatty():
            self.bar = keras.utils.Progbar(
                total_steps, stateful_metrics=["loss", "learning_rate"]
            )
            if start_step:
                self.bar.update(start_step)

    def update(self, step, loss, learning_rate):
        previous, self.step = self.step, step
        if self.bar is not None:
            self.bar.update(
                step, values=[("loss", loss), ("learning_rate", learning_rate)]
            )
        elif (
            step // self.every > previous // self.every
            or step == self.total_steps
            or previous == self.start_step
        ):
            seconds = (time.time() - self.begin) / (step - self.start_step)
            print(
                f"step {step}/{self.total_steps} - loss: {loss:.4f} - "
                f"learning_rate: {learning_rate:.4g} - {seconds:.2f} s/step",
                flush=True,
            )

    def close(self):
        if self.bar is not None and self.step < self.total_steps:
            print()  # Stopped early: end the progress bar's line.


class _SummaryWriter:
    def __init__(self, tf, logdir):
        self._tf = tf
        self._writer = tf.summary.create_file_writer(logdir)

    def scalars(self, step, values):
        with self._writer.as_default(step=step):
            for name, value in values.items():
                self._tf.summary.scalar(name, value)

    def flush(self):
        self._writer.flush()

    def close(self):
        self._writer.close()


def _summary_writer(logdir):
    """A TensorBoard writer via `tf.summary` (works with every backend)."""
    try:
        import tensorflow as tf
    except ImportError:
        print(
            "TensorFlow is not installed: no TensorBoard logs "
            "(`pip install tensorflow-cpu`).",
            file=sys.stderr,
        )
        return None
    return _SummaryWriter(tf, logdir)


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


class StopOnSignal:
    """Turns SIGINT/SIGTERM into a checkpoint-and-stop request.

    A context manager around `fit`: the first signal asks `guard` (a
    `RunCheckpoint`) to stop after the current step; a second SIGINT
    interrupts at once (`KeyboardInterrupt`).
    """

    def __init__(self, guard):
        self.guard = guard
        self.signal = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.signal == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum
        self.guard.request_stop(signum)
        print(
            f"\nReceived {signal.Signals(signum).name}: finishing this step, "
            "writing a checkpoint and stopping.",
            file=sys.stderr,
        )

    def __enter__(self):
        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # Not the main thread: leave signals alone.
            self._previous = {}
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
