"""`StepLogger`: the loss and learning rate of each logging window, in
`log.csv`, TensorBoard and the progress bar."""

import csv
import os
import sys
import time

import keras

# The columns of `log.csv`.
LOG_FIELDS = ("step", "loss", "learning_rate")


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
