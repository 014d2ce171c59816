"""Run management for pre-training: checkpoints, step logs, plots.

`train` runs `model.fit` one optimizer step per Keras epoch, so every step's
exact loss reaches the callbacks, and adds what a long pre-training run
needs:

- a per-step log (`log.csv`: step, loss, learning rate) and TensorBoard
  scalars, with a Keras progress bar over the whole run;
- atomic checkpoints every N steps (model variables including random-seed
  state, optimizer variables, the step counter) written to a temporary
  folder and renamed, keeping the last good ones;
- resumption from the latest checkpoint that continues the uninterrupted
  loss curve: the data stream must be deterministic given its seed (as
  `keras_aim.data` pipelines are), and `train` skips the batches the
  checkpointed steps consumed;
- a NaN/inf loss (or weights) stops the run with `TrainingDivergedError`,
  leaving the last good checkpoint in place;
- SIGINT/SIGTERM finish the current step, write a checkpoint and stop, so
  a rerun of the same command resumes.

It also holds the plotting helpers of the pre-training example: the loss
curve and a grid of next-patch reconstructions (`plot_loss_curve`,
`plot_next_patch_grid`), both drawn with Matplotlib's Agg canvas.
"""

import csv
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import time
import zipfile

import keras
import numpy as np

from keras_aim.preprocessing import IMAGENET_MEAN
from keras_aim.preprocessing import IMAGENET_STD

LOG_FILE = "log.csv"
LOG_FIELDS = ("step", "loss", "learning_rate")
TENSORBOARD_DIR = "tensorboard"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PREFIX = "step_"
STATE_FILE = "state.json"
MODEL_VARIABLES_FILE = "model_variables.npz"
OPTIMIZER_VARIABLES_FILE = "optimizer_variables.npz"


class SettingsError(ValueError):
    """Bad run settings: an unwritable output folder, a resume mismatch."""


class TrainingDivergedError(RuntimeError):
    """The loss or the weights became NaN or infinite during training.

    Attributes:
        step: the 1-based step whose loss (or update) was not finite.
        loss: that step's loss.
        checkpoint: the path of the last good checkpoint, or `None`.
    """

    def __init__(self, step, loss, checkpoint, what="loss"):
        self.step = step
        self.loss = loss
        self.checkpoint = checkpoint
        kept = (
            f"The last good checkpoint is kept: {checkpoint}."
            if checkpoint
            else "No checkpoint had been written yet."
        )
        super().__init__(
            f"Training diverged: the {what} is not finite at step {step} "
            f"(loss={loss}). Training was stopped. {kept} Lower the learning "
            "rate (or check the input data) and start over (in the example: "
            "--noresume or a new --output_dir)."
        )


@dataclasses.dataclass
class TrainingResult:
    """What `train` did.

    Attributes:
        start_step: the step the run started from (0, or a checkpoint's).
        step: the last completed step.
        total_steps: the planned number of steps.
        losses: `{step: loss}` of the steps run by this call.
        checkpoint: the latest checkpoint folder, or `None`.
        interrupted: the signal number that stopped the run early, or
            `None`.
        seconds: wall time of the training loop.
    """

    start_step: int
    step: int
    total_steps: int
    losses: dict
    checkpoint: str | None
    interrupted: int | None = None
    seconds: float = 0.0


# Output folder.


def prepare_output_dir(path):
    """Creates `path` if needed and checks that files can be written there.

    Args:
        path: the output folder.

    Returns:
        The absolute path.

    Raises:
        ValueError: naming the folder and the reason, when it cannot be
            created or written to.

    Example:

    >>> prepare_output_dir("/tmp/example_run")  # doctest: +SKIP
    '/tmp/example_run'
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise SettingsError(
            f"`output_dir` must be a folder path; got output_dir={path!r}."
        )
    path = os.path.abspath(os.fspath(path))
    probe = os.path.join(path, f".write_test_{os.getpid()}")
    try:
        os.makedirs(path, exist_ok=True)
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as error:
        raise SettingsError(
            f"`output_dir`={path!r} is not a writable folder "
            f"({error.strerror or error}). Pass a folder you can write to "
            "with --output_dir."
        ) from error
    return path


# Checkpoints.


def _to_numpy(variable):
    array = np.asarray(keras.ops.convert_to_numpy(variable.value))
    if array.dtype.kind not in "biuf":
        # bfloat16 and other extension dtypes: stored as float32, an exact
        # widening; `assign` casts back.
        array = array.astype("float32")
    return array


def _variable_record(variables):
    return [
        {"path": v.path, "shape": list(v.shape), "dtype": str(v.dtype)}
        for v in variables
    ]


def _signature(record):
    # The leading component (optimizer or seed-generator name) may carry a
    # uniquifying suffix such as "_1" in another process; the rest may not.
    return record["path"].split("/", 1)[-1], record["shape"]


def _write_npz(path, variables, check_finite=None):
    """Streams variables into an `.npz` (keys `v00000`, ...), one at a time.

    `check_finite(variable, array)` may raise before anything else is
    written; only one array is held in host memory at a time.
    """
    with open(path, "wb") as f:
        with zipfile.ZipFile(f, "w", allowZip64=True) as archive:
            for i, variable in enumerate(variables):
                array = _to_numpy(variable)
                if check_finite is not None:
                    check_finite(variable, array)
                with archive.open(
                    f"v{i:05d}.npy", "w", force_zip64=True
                ) as out:
                    np.lib.format.write_array(out, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def _fsync_directory(path):
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:  # Not supported (e.g. Windows): the rename still holds.
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _optimizer(model):
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError("Compile the model with an optimizer first.")
    return optimizer


def build_optimizer(model):
    """Creates the optimizer variables of a compiled, built model."""
    optimizer = _optimizer(model)
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    return optimizer


class CheckpointManager:
    """Atomic, resumable training checkpoints in one folder.

    A checkpoint is a folder `step_{step:08d}` holding `state.json` (step,
    run fingerprint, variable paths and shapes, user metadata) and two
    `.npz` files: every model variable (weights, non-trainable state and
    random-seed state, `model.variables`) and every optimizer variable
    (moments and iteration counter). It is written to a temporary folder,
    synced, then renamed, so a crash mid-save never leaves a partial
    checkpoint under a final name; older checkpoints beyond `max_to_keep`
    are deleted only after the new one is in place.

    Args:
        directory: the checkpoints folder (created on the first save).
        max_to_keep: int, how many recent checkpoints to keep. Defaults
            to 2.

    Example:

    ```python
    manager = CheckpointManager("/tmp/example_run/checkpoints")
    manager.save(100, model, fingerprint={"seed": 0})
    state = manager.restore(model, fingerprint={"seed": 0})
    state["step"]  # 100
    ```
    """

    def __init__(self, directory, max_to_keep=2):
        if not isinstance(max_to_keep, int) or max_to_keep < 1:
            raise ValueError(
                f"`max_to_keep` must be a positive int; got {max_to_keep!r}."
            )
        self.directory = os.path.abspath(os.fspath(directory))
        self.max_to_keep = max_to_keep

    def checkpoints(self):
        """`[(step, path)]` of the complete checkpoints, oldest first."""
        if not os.path.isdir(self.directory):
            return []
        found = []
        for name in os.listdir(self.directory):
            suffix = name[len(CHECKPOINT_PREFIX) :]
            path = os.path.join(self.directory, name)
            if (
                name.startswith(CHECKPOINT_PREFIX)
                and suffix.isdigit()
                and os.path.isfile(os.path.join(path, STATE_FILE))
            ):
                found.append((int(suffix), path))
        return sorted(found)

    def latest(self):
        """The path of the newest complete checkpoint, or `None`."""
        found = self.checkpoints()
        return found[-1][1] if found else None

    def save(self, step, model, fingerprint=None, metadata=None):
        """Writes a checkpoint of `model` (and its optimizer) at `step`.

        Args:
            step: int, the number of completed optimizer steps.
            model: a compiled Keras model.
            fingerprint: JSON-able dict that a resumed run must match.
            metadata: JSON-able dict stored as is.

        Returns:
            The checkpoint folder.

        Raises:
            TrainingDivergedError: a model variable is NaN or infinite;
                nothing is written.
        """
        optimizer = build_optimizer(model)

        def check_finite(variable, array):
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                raise TrainingDivergedError(
                    step,
                    float("nan"),
                    self.latest(),
                    what=f"weight {variable.path!r}",
                )

        os.makedirs(self.directory, exist_ok=True)
        final = os.path.join(self.directory, f"{CHECKPOINT_PREFIX}{step:08d}")
        temporary = os.path.join(
            self.directory, f".tmp_{CHECKPOINT_PREFIX}{step:08d}_{os.getpid()}"
        )
        shutil.rmtree(temporary, ignore_errors=True)
        os.makedirs(temporary)
        try:
            _write_npz(
                os.path.join(temporary, MODEL_VARIABLES_FILE),
                model.variables,
                check_finite,
            )
            _write_npz(
                os.path.join(temporary, OPTIMIZER_VARIABLES_FILE),
                optimizer.variables,
            )
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        state = {
            "step": int(step),
            "fingerprint": fingerprint or {},
            "metadata": metadata or {},
            "keras_backend": keras.backend.backend(),
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "model_variables": _variable_record(model.variables),
            "optimizer_variables": _variable_record(optimizer.variables),
        }
        # Written last: a folder without state.json is never a checkpoint.
        with open(os.path.join(temporary, STATE_FILE), "w") as f:
            json.dump(state, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(final):
            stale = final + f".old_{os.getpid()}"
            os.rename(final, stale)
            os.rename(temporary, final)
            shutil.rmtree(stale, ignore_errors=True)
        else:
            os.rename(temporary, final)
        _fsync_directory(self.directory)
        self._prune()
        return final

    def _prune(self):
        for _, path in self.checkpoints()[: -self.max_to_keep]:
            shutil.rmtree(path, ignore_errors=True)
        for name in os.listdir(self.directory):
            if name.startswith(".tmp_") or ".old_" in name:
                shutil.rmtree(
                    os.path.join(self.directory, name), ignore_errors=True
                )

    def restore(self, model, path=None, fingerprint=None):
        """Loads a checkpoint into `model` and its optimizer.

        Args:
            model: the compiled, built model the checkpoint was saved from
                (same architecture and variable order).
            path: a checkpoint folder; defaults to the latest.
            fingerprint: dict the saved fingerprint must equal; differing
                keys are named in the error.

        Returns:
            The checkpoint's state dict (`step`, `fingerprint`,
            `metadata`, ...).
        """
        path = path or self.latest()
        if path is None:
            raise ValueError(f"No checkpoint in {self.directory!r}.")
        with open(os.path.join(path, STATE_FILE)) as f:
            state = json.load(f)
        if fingerprint is not None:
            check_fingerprint(state.get("fingerprint", {}), fingerprint, path)
        optimizer = build_optimizer(model)
        for variables, name, key in (
            (model.variables, MODEL_VARIABLES_FILE, "model_variables"),
            (
                optimizer.variables,
                OPTIMIZER_VARIABLES_FILE,
                "optimizer_variables",
            ),
        ):
            saved = state[key]
            current = _variable_record(variables)
            if [_signature(s) for s in saved] != [
                _signature(c) for c in current
            ]:
                raise SettingsError(
                    f"Checkpoint {path!r} does not match this model: its "
                    f"{key} ({len(saved)}) differ from the model's "
                    f"({len(current)}) in paths or shapes. Resume with the "
                    "same model settings, or use a new output folder."
                )
            with np.load(os.path.join(path, name)) as arrays:
                for i, variable in enumerate(variables):
                    variable.assign(arrays[f"v{i:05d}"])
        return state


def check_fingerprint(saved, current, path="the checkpoint"):
    """Raises a `ValueError` listing the settings that differ."""
    saved = json.loads(json.dumps(saved))
    current = json.loads(json.dumps(current))
    keys = sorted(set(saved) | set(current))
    differ = [k for k in keys if saved.get(k) != current.get(k)]
    if differ:
        changes = ", ".join(
            f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in differ
        )
        raise SettingsError(
            f"Cannot resume from {path}: it was written with different "
            f"settings ({changes}). Rerun with the original settings, or "
            "start over with --noresume or a new --output_dir."
        )


# Step log.


def read_log(path):
    """Reads `log.csv` into `{"step": int array, "loss": ..., ...}`."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = {}
    for field in LOG_FIELDS:
        dtype = "int64" if field == "step" else "float64"
        columns[field] = np.array([row[field] for row in rows], dtype=dtype)
    return columns


def _truncate_log(path, last_step):
    """Keeps the header and the rows with `step <= last_step`."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) <= last_step]
    temporary = path + ".tmp"
    with open(temporary, "w", newline="") as f:
        writer = csv.DictWriter(f, LOG_FIELDS)
        writer.writeheader()
        writer.writerows({k: r[k] for k in LOG_FIELDS} for r in rows)
    os.replace(temporary, path)


def _current_learning_rate(optimizer):
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class StepLogger(keras.callbacks.Callback):
    """Writes each step's loss and learning rate to CSV and TensorBoard.

    For use with `fit(..., steps_per_epoch=1)` (as `train` runs it): epoch
    `e` is step `e + 1`, and its logs hold that step's exact loss.

    Args:
        csv_path: the CSV file (appended to; a header is written if new).
        tensorboard_dir: folder for TensorBoard event files, or `None`.
        verbose: int, 1 shows a Keras progress bar over `total_steps`.
        total_steps: int, the run's planned steps (for the progress bar).
    """

    def __init__(
        self, csv_path, tensorboard_dir=None, verbose=1, total_steps=None
    ):
        super().__init__()
        self.csv_path = csv_path
        self.tensorboard_dir = tensorboard_dir
        self.verbose = verbose
        self.total_steps = total_steps
        self.losses = {}
        self._file = None
        self._writer = None
        self._learning_rate = float("nan")
        self._progress = None

    def on_train_begin(self, logs=None):
        new = not os.path.exists(self.csv_path)
        self._file = open(self.csv_path, "a", newline="")
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(LOG_FIELDS)
            self._file.flush()
        if self.tensorboard_dir:
            self._writer = _summary_writer(self.tensorboard_dir)

    def on_epoch_begin(self, epoch, logs=None):
        # Evaluated before the step runs: the rate this step uses.
        self._learning_rate = _current_learning_rate(self.model.optimizer)
        if self.verbose and self._progress is None:
            self._progress = _Progress(self.total_steps, epoch)

    def on_epoch_end(self, epoch, logs=None):
        step = epoch + 1
        loss = float((logs or {}).get("loss", float("nan")))
        self.losses[step] = loss
        self._csv.writerow([step, repr(loss), repr(self._learning_rate)])
        self._file.flush()
        if self._writer is not None:
            self._writer.scalars(
                step, {"loss": loss, "learning_rate": self._learning_rate}
            )
        if self._progress is not None:
            self._progress.update(step, loss, self._learning_rate)

    def flush(self):
        if self._writer is not None:
            self._writer.flush()

    def close(self):
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
        self.step = step
        if self.bar is not None:
            self.bar.update(
                step, values=[("loss", loss), ("learning_rate", learning_rate)]
            )
        elif (
            step % self.every == 0
            or step == self.total_steps
            or step == self.start_step + 1
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


class CheckpointAndGuard(keras.callbacks.Callback):
    """Stops on a non-finite loss and checkpoints every `every` steps.

    After each step (one Keras epoch): a NaN or infinite loss stops
    training and is reported by `diverged`; otherwise a checkpoint is saved
    when the step is a multiple of `every`, the last step, or when a stop
    was requested (`request_stop`, e.g. by a signal handler).

    Args:
        manager: a `CheckpointManager`.
        every: int or `None`, steps between checkpoints.
        total_steps: int, the last step (always checkpointed).
        fingerprint: dict stored with each checkpoint.
        on_checkpoint: optional callable `(step, path)` run after a save.
    """

    def __init__(
        self, manager, every, total_steps, fingerprint=None, on_checkpoint=None
    ):
        super().__init__()
        self.manager = manager
        self.every = every
        self.total_steps = total_steps
        self.fingerprint = fingerprint
        self.on_checkpoint = on_checkpoint
        self.diverged = None
        self.stop_requested = None
        self.last_saved_step = None

    def request_stop(self, reason):
        self.stop_requested = reason

    def on_epoch_end(self, epoch, logs=None):
        step = epoch + 1
        loss = float((logs or {}).get("loss", float("nan")))
        if not math.isfinite(loss):
            self.diverged = TrainingDivergedError(
                step, loss, self.manager.latest()
            )
            self.model.stop_training = True
            return
        due = (self.every and step % self.every == 0) or (
            step >= self.total_steps
        )
        if due or self.stop_requested is not None:
            try:
                path = self.manager.save(step, self.model, self.fingerprint)
            except TrainingDivergedError as error:
                self.diverged = error
                self.model.stop_training = True
                return
            self.last_saved_step = step
            if self.on_checkpoint is not None:
                self.on_checkpoint(step, path)
        if self.stop_requested is not None:
            self.model.stop_training = True


class _StopOnSignal:
    """Turns SIGINT/SIGTERM into a checkpoint-and-stop request.

    A second SIGINT interrupts at once (`KeyboardInterrupt`).
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


def _skip(dataset, steps):
    if steps == 0:
        return dataset
    if hasattr(dataset, "skip"):  # tf.data
        return dataset.skip(steps)
    raise ValueError(
        "Resuming needs a dataset that can skip consumed batches "
        f"(a tf.data.Dataset); got {type(dataset).__name__}."
    )


def clear_run(output_dir):
    """Deletes the log, TensorBoard and checkpoint folders of a run."""
    shutil.rmtree(os.path.join(output_dir, CHECKPOINT_DIR), ignore_errors=True)
    shutil.rmtree(os.path.join(output_dir, TENSORBOARD_DIR), ignore_errors=True)
    log = os.path.join(output_dir, LOG_FILE)
    if os.path.exists(log):
        os.remove(log)


def train(
    model,
    dataset,
    total_steps,
    output_dir,
    checkpoint_every=None,
    resume=True,
    fingerprint=None,
    max_to_keep=2,
    callbacks=(),
    tensorboard=True,
    verbose=1,
):
    """Trains a compiled model for `total_steps` steps, resumably.

    Args:
        model: a compiled, built `keras.Model` (e.g. `AIMPretrainer`) whose
            `fit(x)` trains on batches of `dataset`.
        dataset: an endless `tf.data.Dataset` of input batches, the same
            sequence for the same seed (`keras_aim.data` pipelines are);
            on resume, the batches of the completed steps are skipped.
        total_steps: int, the number of optimizer steps of the whole run.
        output_dir: folder for `log.csv`, `tensorboard/` and
            `checkpoints/` (created; must be writable).
        checkpoint_every: int or `None`, steps between checkpoints. The
            last step and stops on SIGINT/SIGTERM are always saved.
        resume: bool. `True` continues from the latest checkpoint in
            `output_dir` (if any); `False` deletes the previous log and
            checkpoints and starts over.
        fingerprint: JSON-able dict of the settings a resumed run must
            share with the checkpoint (model, data, optimizer, steps).
        max_to_keep: int, checkpoints to keep. Defaults to 2.
        callbacks: extra Keras callbacks (run after logging and
            checkpointing at each step).
        tensorboard: bool, write TensorBoard scalars. Defaults to `True`.
        verbose: int, 1 shows a progress bar. Defaults to 1.

    Returns:
        A `TrainingResult`.

    Raises:
        TrainingDivergedError: the loss or the weights became NaN or
            infinite; the last good checkpoint is kept.
        ValueError: `output_dir` is not writable, or the checkpoint was
            written with other settings.

    Example:

    ```python
    result = train(pretrainer, dataset, total_steps=400,
                   output_dir="runs/pretrain", checkpoint_every=100)
    ```
    """
    if not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(
            f"`total_steps` must be a positive int; got {total_steps!r}."
        )
    if checkpoint_every is not None and (
        not isinstance(checkpoint_every, int) or checkpoint_every < 1
    ):
        raise ValueError(
            "`checkpoint_every` must be a positive int or None; got "
            f"{checkpoint_every!r}."
        )
    output_dir = prepare_output_dir(output_dir)
    manager = CheckpointManager(
        os.path.join(output_dir, CHECKPOINT_DIR), max_to_keep
    )
    latest = manager.latest() if resume else None
    if latest is None:
        # Starting over: what a previous run left (a log, TensorBoard
        # events, checkpoints for --noresume) would be mixed into this one.
        if verbose and os.path.exists(os.path.join(output_dir, LOG_FILE)):
            print(f"Starting over in {output_dir}: removing the previous run.")
        clear_run(output_dir)
    log_path = os.path.join(output_dir, LOG_FILE)
    start_step = 0
    build_optimizer(model)
    if latest is not None:
        state = manager.restore(model, latest, fingerprint=fingerprint)
        start_step = state["step"]
        if verbose:
            print(f"Resuming from {latest} (step {start_step}).")
    _truncate_log(log_path, start_step)
    if start_step >= total_steps:
        return TrainingResult(start_step, start_step, total_steps, {}, latest)
    logger = StepLogger(
        log_path,
        os.path.join(output_dir, TENSORBOARD_DIR) if tensorboard else None,
        verbose=verbose,
        total_steps=total_steps,
    )
    guard = CheckpointAndGuard(
        manager,
        checkpoint_every,
        total_steps,
        fingerprint,
        on_checkpoint=lambda step, path: logger.flush(),
    )
    begin = time.time()
    try:
        with _StopOnSignal(guard) as stopper:
            model.fit(
                _skip(dataset, start_step),
                epochs=total_steps,
                initial_epoch=start_step,
                steps_per_epoch=1,
                callbacks=[logger, guard, *callbacks],
                shuffle=False,
                verbose=0,
            )
    finally:
        logger.close()
    seconds = time.time() - begin
    if guard.diverged is not None:
        raise guard.diverged
    step = max(logger.losses, default=start_step)
    return TrainingResult(
        start_step=start_step,
        step=step,
        total_steps=total_steps,
        losses=logger.losses,
        checkpoint=manager.latest(),
        interrupted=stopper.signal if step < total_steps else None,
        seconds=seconds,
    )


# Plots.


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def plot_loss_curve(log_path, png_path, title="AIM pre-training"):
    """Draws the loss (log scale) and learning rate of `log.csv` to a PNG.

    Args:
        log_path: a `log.csv` written by `train`.
        png_path: the PNG to write.
        title: the figure title.

    Returns:
        `png_path`.
    """
    log = read_log(log_path)
    figure = _figure(7, 4)
    axis = figure.add_subplot(1, 1, 1)
    finite = np.isfinite(log["loss"]) & (log["loss"] > 0)
    axis.plot(log["step"][finite], log["loss"][finite], lw=1, color="C0")
    axis.set_yscale("log")
    axis.set_xlabel("step")
    axis.set_ylabel("next-patch loss", color="C0")
    axis.grid(True, which="both", alpha=0.3)
    rate = axis.twinx()
    rate.plot(log["step"], log["learning_rate"], lw=1, color="C1")
    rate.set_ylabel("learning rate", color="C1")
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(png_path)
    return png_path


def denormalize(images, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Undoes the ImageNet normalisation; returns values clipped to [0, 1]."""
    images = np.asarray(images, "float64") * np.asarray(std) + np.asarray(mean)
    return np.clip(images, 0.0, 1.0)


def plot_next_patch_grid(
    images,
    reconstructions,
    png_path,
    pairs_per_row=4,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    title=None,
):
    """Draws `original | next-patch prediction` pairs to a PNG grid.

    Args:
        images: `(B, H, W, C)` normalised images.
        reconstructions: `(B, H, W, C)` images rebuilt from the next-patch
            predictions in the same normalisation, e.g. from
            `AIMPretrainer.reconstruct` (each predicted patch de-normalised
            with its target patch's mean and std).
        png_path: the PNG to write.
        pairs_per_row: int, image pairs per grid row. Defaults to 4.
        mean: the normalisation mean to undo. Defaults to ImageNet's.
        std: the normalisation std to undo. Defaults to ImageNet's.
        title: optional figure title.

    Returns:
        `png_path`.
    """
    originals = denormalize(images, mean, std)
    reconstructions = denormalize(reconstructions, mean, std)
    count = len(originals)
    rows = math.ceil(count / pairs_per_row)
    cols = 2 * min(pairs_per_row, count)
    figure = _figure(1.3 * cols, 1.45 * rows + (0.4 if title else 0.0))
    for k in range(count):
        row, pair = divmod(k, pairs_per_row)
        for j, (image, label) in enumerate(
            ((originals[k], "original"), (reconstructions[k], "prediction"))
        ):
            axis = figure.add_subplot(rows, cols, row * cols + 2 * pair + j + 1)
            axis.imshow(image, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_title(label, fontsize=7)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(png_path)
    return png_path


# Run settings and the end-of-run report of the pre-training example.


def default_image_size(source):
    """The training image size `keras_aim.data` uses for `source`."""
    return {"digits": 16, "photos": 32}.get(source, 224)


def training_set_size(source):
    """Number of training images of a finite source (digits, a folder)."""
    from keras_aim import data

    if source == "digits":
        return len(data.probe_dataset("digits", "train")[1])
    if os.path.isdir(source):
        return len(data.list_image_files(source))
    raise SettingsError(
        f"--epochs needs a dataset of known size ('digits' or an image "
        f"folder); {source!r} is an endless crop stream or a tfds dataset. "
        "Pass --steps instead."
    )


def resolve_steps(source, batch_size, steps, epochs, steps_given=False):
    """Total optimizer steps from `steps`, or from `epochs` over `source`.

    With `epochs`, the steps are `ceil(epochs * num_images / batch_size)`.
    Passing both (`steps_given=True`) is an error.
    """
    if epochs is None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise SettingsError(
                f"--steps must be a positive integer; got {steps!r}."
            )
        return steps
    if steps_given:
        raise SettingsError(
            f"Pass either --steps or --epochs, not both (got steps={steps}, "
            f"epochs={epochs})."
        )
    if not epochs > 0:
        raise SettingsError(f"--epochs must be positive; got {epochs!r}.")
    return max(1, math.ceil(epochs * training_set_size(source) / batch_size))


def _tfds_held_out(source, image_size, count):
    from keras_aim import data

    name = source[len("tfds:") :].split(":")[0]
    for split in ("test", "validation"):
        try:
            dataset = data.evaluation_dataset(
                f"tfds:{name}:{split}",
                resize_size=image_size,
                crop_size=image_size,
                batch_size=count,
            )
            return np.asarray(next(iter(dataset))), f"{name} {split} images"
        except Exception:  # Split missing or not prepared: try the next.
            continue
    return None, None


def held_out_images(source, image_size, count=8, seed=0):
    """Images the model did not train on, for the reconstruction preview.

    `"digits"` and `"photos"`: the probe test split (digits never used for
    pre-training; photo crops from each photo's test region). tfds: the
    first images of the `test` or `validation` split. Folders (no
    held-out split) and fallbacks: un-augmented-order training images.

    Returns:
        `(images, description)`: float32 `(count, S, S, 3)` normalised.
    """
    from keras_aim import data

    if source in ("digits", "photos"):
        images, _ = data.probe_dataset(source, "test", image_size=image_size)
        index = np.linspace(0, len(images) - 1, count).round().astype(int)
        return images[index], f"held-out {source} (probe test split)"
    if source.startswith("tfds:"):
        images, what = _tfds_held_out(source, image_size, count)
        if images is not None:
            return images, what
    dataset = data.pretraining_dataset(
        source, image_size=image_size, batch_size=count, seed=seed + 1
    )
    return np.asarray(
        next(iter(dataset))
    ), "training images (no held-out split)"


def write_report(
    pretrainer, source, image_size, output_dir, num_preview=8, seed=0
):
    """Writes the loss curve, the reconstruction grid and the backbone.

    Args:
        pretrainer: a trained `keras_aim.models.pretrainer.AIMPretrainer`.
        source: the dataset name (see `held_out_images`).
        image_size: int, the training image size.
        output_dir: the run folder holding `log.csv`.
        num_preview: int, images in the grid; 0 skips it.
        seed: int, the run seed.

    Returns:
        `{"loss_plot": path, "reconstructions": path, "backbone": path}`.
    """
    files = {
        "loss_plot": plot_loss_curve(
            os.path.join(output_dir, LOG_FILE),
            os.path.join(output_dir, "loss.png"),
        )
    }
    if num_preview:
        images, what = held_out_images(source, image_size, num_preview, seed)
        reconstructions = keras.ops.convert_to_numpy(
            pretrainer.reconstruct(images, prefix_lengths=1)
        )
        files["reconstructions"] = plot_next_patch_grid(
            images,
            reconstructions,
            os.path.join(output_dir, "reconstructions.png"),
            title=f"{what}: original | next-patch prediction (causal; "
            "each patch de-normalised with its target's mean and std)",
        )
    backbone_dir = os.path.join(output_dir, "backbone")
    pretrainer.backbone.save_to_preset(backbone_dir)
    files["backbone"] = backbone_dir
    return files
