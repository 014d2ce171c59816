"""A run's output folder and its step log (`log.csv`)."""

import csv
import os
import shutil

import numpy as np

from keras_aim.training.errors import SettingsError

LOG_FILE = "log.csv"
LOG_FIELDS = ("step", "loss", "learning_rate")
TENSORBOARD_DIR = "tensorboard"
CHECKPOINT_DIR = "checkpoints"


def prepare_output_dir(path):
    """Creates `path` if needed and checks that files can be written there.

    Args:
        path: the output folder.

    Returns:
        The absolute path.

    Raises:
        SettingsError: naming the folder and the reason, when it cannot be
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


def clear_run(output_dir):
    """Deletes the log, TensorBoard and checkpoint folders of a run."""
    shutil.rmtree(os.path.join(output_dir, CHECKPOINT_DIR), ignore_errors=True)
    shutil.rmtree(os.path.join(output_dir, TENSORBOARD_DIR), ignore_errors=True)
    log = os.path.join(output_dir, LOG_FILE)
    if os.path.exists(log):
        os.remove(log)


def read_log(path):
    """Reads `log.csv` into `{"step": int array, "loss": ..., ...}`."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = {}
    for field in LOG_FIELDS:
        dtype = "int64" if field == "step" else "float64"
        columns[field] = np.array([row[field] for row in rows], dtype=dtype)
    return columns


def truncate_log(path, last_step, keep=lambda step: True):
    """Keeps the header and the rows with `step <= last_step` and `keep`."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        rows = [
            r
            for r in csv.DictReader(f)
            if int(r["step"]) <= last_step and keep(int(r["step"]))
        ]
    temporary = path + ".tmp"
    with open(temporary, "w", newline="") as f:
        writer = csv.DictWriter(f, LOG_FIELDS)
        writer.writeheader()
        writer.writerows({k: r[k] for k in LOG_FIELDS} for r in rows)
    os.replace(temporary, path)
