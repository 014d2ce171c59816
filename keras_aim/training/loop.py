"""`train`: a resumable pre-training run made of `fit` and callbacks.

One Keras epoch is one logging window of `log_every` steps, so between
windows the steps run back to back with no host transfer; the callbacks
(`keras_aim.callbacks`) log, checkpoint and run_checkpoint at window ends.
"""

import contextlib
import dataclasses
import os
import time

from keras_aim.callbacks.run_checkpoint import RunCheckpoint
from keras_aim.callbacks.step_logger import StepLogger
from keras_aim.callbacks.step_logger import optimizer_step
from keras_aim.training.checkpoints import CheckpointManager
from keras_aim.training.checkpoints import build_optimizer
from keras_aim.training.run_dir import CHECKPOINT_DIR
from keras_aim.training.run_dir import LOG_FILE
from keras_aim.training.run_dir import RUN_OUTPUTS
from keras_aim.training.run_dir import TENSORBOARD_DIR
from keras_aim.training.run_dir import RunLock
from keras_aim.training.run_dir import check_outputs
from keras_aim.training.run_dir import clear_run
from keras_aim.training.run_dir import prepare_output_dir
from keras_aim.training.run_dir import truncate_log
from keras_aim.training.signals import StopOnSignal
from keras_aim.training.windows import WindowCallbackList
from keras_aim.utils.validation import positive_int


@dataclasses.dataclass
class TrainingResult:
    """What `train` did.

    Attributes:
        start_step: the step the run started from (0, or a checkpoint's).
        step: the last completed step.
        total_steps: the planned number of steps.
        losses: `{step: loss}` of the windows logged by this call.
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


def window_segments(start_step, total_steps, log_every):
    """Splits steps `start_step+1..total_steps` into `fit` calls.

    Windows end at multiples of `log_every` (and at `total_steps`), as in an
    uninterrupted run, so a run resumed from any step logs the same rows.

    Returns:
        A list of `(steps_per_epoch, epochs)`.

    Example:

    >>> window_segments(7, 40, 10)
    [(3, 1), (10, 3)]
    """
    segments = []
    step = start_step
    head = min(-step % log_every, total_steps - step)
    if head:
        segments.append((head, 1))
        step += head
    full = (total_steps - step) // log_every
    if full:
        segments.append((log_every, full))
        step += full * log_every
    if total_steps > step:
        segments.append((total_steps - step, 1))
    return segments


def _starting_at(dataset, steps):
    """The data from batch `steps` on: a factory is asked for it (O(1)),
    a `tf.data.Dataset` skips the consumed batches (re-reading them)."""
    if callable(dataset) and not hasattr(dataset, "skip"):
        return dataset(steps)
    if steps == 0:
        return dataset
    if hasattr(dataset, "skip"):  # tf.data
        return dataset.skip(steps)
    raise ValueError(
        "Resuming needs a dataset that can skip consumed batches "
        f"(a tf.data.Dataset) or a factory `start_batch -> dataset`; got "
        f"{type(dataset).__name__}."
    )


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
    log_every=1,
    chief=True,
    checkpoint_manager=CheckpointManager,
):
    """Trains a compiled model for `total_steps` steps, resumably.

    Args:
        model: a compiled, built `keras.Model` (e.g. `AIMPretrainer`) whose
            `fit(x)` trains on batches of `dataset`.
        dataset: an endless `tf.data.Dataset` of input batches, the same
            sequence for the same seed (`keras_aim.data` pipelines are), or
            a factory `start_batch -> dataset` (e.g. `functools.partial(
            pretraining_dataset, ...)` with `start_batch`), which makes a
            resume O(1); a dataset skips the completed steps' batches.
        total_steps: int, the number of optimizer steps of the whole run.
        output_dir: folder for `log.csv`, `tensorboard/` and
            `checkpoints/` (created; must be writable). A lock on it
            (`RunLock`) refuses a second run writing there.
        checkpoint_every: int or `None`, steps between checkpoints (saved
            at the first window end at or after each multiple). The last
            step and stops on SIGINT/SIGTERM are always saved.
        resume: bool. `True` continues from the latest checkpoint in
            `output_dir` (if any); `False` deletes the previous log and
            checkpoints and starts over.
        fingerprint: JSON-able dict of the settings a resumed run must
            share with the checkpoint (model, data, optimizer, steps).
        max_to_keep: int, checkpoints to keep. Defaults to 2.
        callbacks: extra Keras callbacks (their epoch hooks run after
            logging and checkpointing, once per window).
        tensorboard: bool, write TensorBoard scalars. Defaults to `True`.
        verbose: int, 1 shows progress. Defaults to 1.
        log_every: int, steps per logging window (one Keras epoch): one
            `log.csv` row with the window's mean loss. Defaults to 1.
        chief: bool. `False` for the other processes of a data-parallel
            run: they resume from the chief's checkpoints but write nothing
            (no lock, log or checkpoint). Defaults to `True`.
        checkpoint_manager: the checkpoint manager class:
            `CheckpointManager` (Keras weights files), or
            `keras_aim.distribution.orbax_state.ShardedCheckpointManager`
            for runs sharded over devices on JAX.

    Returns:
        A `TrainingResult`.

    Raises:
        TrainingDivergedError: the loss or the weights became NaN or
            infinite; the last good checkpoint is kept.
        SettingsError: `output_dir` is not writable, or the checkpoint was
            written with other settings.

    Example:

    ```python
    result = train(pretrainer, dataset, total_steps=400, log_every=10,
                   output_dir="runs/pretrain", checkpoint_every=100)
    ```
    """
    total_steps = positive_int(total_steps, "total_steps")
    log_every = positive_int(log_every, "log_every")
    if checkpoint_every is not None:
        checkpoint_every = positive_int(checkpoint_every, "checkpoint_every")
    output_dir = prepare_output_dir(output_dir)
    with RunLock(output_dir) if chief else contextlib.nullcontext():
        check_outputs(output_dir, RUN_OUTPUTS)
        manager = checkpoint_manager(
            os.path.join(output_dir, CHECKPOINT_DIR),
            max_to_keep,
            read_only=not chief,
        )
        state = None
        if resume and manager.latest() is not None:
            build_optimizer(model)
            state = manager.restore_latest_valid(model, fingerprint)
        latest = manager.latest() if state is not None else None
        if latest is None and chief:
            # Starting over: what a previous run left (a log, TensorBoard
            # events, checkpoints for --noresume) would be mixed into this.
            if verbose and os.path.exists(os.path.join(output_dir, LOG_FILE)):
                print(f"Starting over in {output_dir}: removing the old run.")
            clear_run(output_dir)
        log_path = os.path.join(output_dir, LOG_FILE)
        build_optimizer(model)
        start_step, window = 0, None
        if state is not None:
            start_step = state["step"]
            if state["extra"].get("log_every") == log_every:
                window = state["extra"].get("window_state")
            if verbose:
                print(f"Resuming from {latest} (step {start_step}).")
        if chief:
            truncate_log(
                log_path,
                start_step,
                keep=lambda s: s % log_every == 0 or s >= total_steps,
            )
        if start_step >= total_steps:
            return TrainingResult(
                start_step, start_step, total_steps, {}, latest
            )
        offset = start_step - optimizer_step(model)
        logger = StepLogger(
            log_path if chief else None,
            os.path.join(output_dir, TENSORBOARD_DIR)
            if tensorboard and chief
            else None,
            verbose=verbose if chief else 0,
            total_steps=total_steps,
            step_offset=offset,
        )
        run_checkpoint = RunCheckpoint(
            manager,
            checkpoint_every,
            total_steps,
            fingerprint,
            log_every=log_every,
            step_offset=offset,
            start_step=start_step,
            on_checkpoint=lambda step, path: logger.flush(),
        )
        run_checkpoint.restore_window = window
        begin = time.time()
        step = start_step
        try:
            with StopOnSignal(run_checkpoint) as stopper:
                for steps_per_epoch, epochs in window_segments(
                    start_step, total_steps, log_every
                ):
                    run_callbacks = WindowCallbackList(
                        [logger, run_checkpoint, *callbacks],
                        model,
                        epochs=epochs,
                        steps=steps_per_epoch,
                        verbose=0,
                    )
                    model.fit(
                        _starting_at(dataset, step),
                        epochs=epochs,
                        steps_per_epoch=steps_per_epoch,
                        callbacks=run_callbacks,
                        shuffle=False,
                        verbose=0,
                    )
                    step = optimizer_step(model) + offset
                    if (
                        run_checkpoint.diverged
                        or run_checkpoint.stop_requested is not None
                    ):
                        break
                    if model.stop_training:  # A user callback stopped it.
                        break
        finally:
            logger.close()
        seconds = time.time() - begin
        if run_checkpoint.diverged is not None:
            raise run_checkpoint.diverged
        return TrainingResult(
            start_step=start_step,
            step=step,
            total_steps=total_steps,
            losses=logger.losses,
            checkpoint=manager.latest(),
            interrupted=stopper.signal if step < total_steps else None,
            seconds=seconds,
        )
