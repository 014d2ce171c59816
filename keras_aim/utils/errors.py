"""The errors a training run reports."""


class SettingsError(ValueError):
    """Bad run settings: an unwritable output folder, a resume mismatch."""


class TrainingDivergedError(RuntimeError):
    """The loss or the weights became NaN or infinite during training.

    Attributes:
        step: the step at which the non-finite loss (or weight) was seen; with
            logging every k steps, the last step of that window.
        loss: that step's (or window's) loss.
        checkpoint: the path of the last good checkpoint, or `None`.

    `advice` replaces the message's last part (what was kept, what to do).
    """

    def __init__(self, step, loss, checkpoint, what="loss", advice=None):
        self.step = step
        self.loss = loss
        self.checkpoint = checkpoint
        kept = (
            f"The last good checkpoint is kept: {checkpoint}."
            if checkpoint
            else "No checkpoint had been written yet."
        )
        advice = advice or (
            f"{kept} Lower the learning rate (or check the input data) and "
            "start over (in the example: --noresume or a new --output_dir)."
        )
        super().__init__(
            f"Training diverged: the {what} is not finite at step {step} "
            f"(loss={loss}). Training was stopped. {advice}"
        )


class CheckpointDamagedError(SettingsError):
    """A checkpoint file is damaged (truncated, altered, non-finite).

    Attributes:
        path: the damaged file.
    """

    def __init__(self, path, reason):
        self.path = path
        super().__init__(f"Checkpoint file {path!r} is damaged: {reason}.")


class UnreadableFileError(ValueError):
    """A user file that is not a regular file, is too large or unreadable.

    Attributes:
        path: the file.
        reason: what is wrong with it, e.g. "is a FIFO (named pipe)".
    """

    def __init__(self, path, reason, what="File"):
        self.path = path
        self.reason = reason
        super().__init__(f"{what} {path!r} {reason}.")


class MissingFileError(UnreadableFileError, FileNotFoundError):
    """A user file that does not exist (also a `FileNotFoundError`)."""
