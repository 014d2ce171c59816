"""A run's output folder and its step log (`log.csv`)."""

import csv
import os
import shutil
import socket
import stat
import time

import numpy as np

from keras_aim.callbacks.knn_monitor import KNN_LOG_FILE
from keras_aim.callbacks.step_logger import LOG_FIELDS
from keras_aim.utils import io_utils
from keras_aim.utils.errors import SettingsError

LOG_FILE = "log.csv"
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


# What each kind of output must be where it already exists.
OUTPUT_KINDS = ("file", "folder", "preset")
# What `train` writes into its run folder.
RUN_OUTPUTS = {
    LOG_FILE: "file",
    TENSORBOARD_DIR: "folder",
    CHECKPOINT_DIR: "folder",
}


def _what_is(path):
    """`"a directory"`, `"a FIFO"`, ... or `None` for a regular file."""
    if os.path.islink(path) and not os.path.exists(path):
        return "a broken symbolic link"
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        return f"unreadable ({error.strerror or error})"
    for test, what in (
        (stat.S_ISREG, None),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return what
    return "not a regular file"


def check_outputs(output_dir, outputs):
    """Checks what already sits where a run will write, before it starts.

    Args:
        output_dir: the run folder.
        outputs: `{name: kind}`: `"file"` (must be a regular file, or a
            link to one, if it exists), `"folder"` (a directory) or
            `"preset"` (a directory holding nothing but a preset's files,
            which `save_to_preset` would otherwise refuse at the end).

    Raises:
        SettingsError: naming the first path that cannot take its output.
    """
    for name, kind in outputs.items():
        if kind not in OUTPUT_KINDS:
            raise ValueError(
                f"Output {name!r} has kind {kind!r}; expected one of "
                f"{OUTPUT_KINDS}."
            )
        path = os.path.join(output_dir, name)
        if not os.path.lexists(path):
            continue
        what = _what_is(path)
        problem = None
        if kind == "file" and what is not None:
            problem = f"is {what}, where the run writes a file"
        elif kind != "file" and what != "a directory":
            problem = f"is {what or 'a file'}, where the run writes a folder"
        elif kind == "preset":
            from keras_aim.utils.preset_utils import check_preset_target

            try:
                check_preset_target(path)
            except ValueError as error:
                raise SettingsError(str(error)) from None
        if problem:
            raise SettingsError(
                f"{path!r} {problem}. Move it away or pass another "
                "--output_dir."
            )


def clear_run(output_dir):
    """Deletes the logs (`log.csv`, `knn.csv`), TensorBoard and checkpoint
    folders of a run.

    Checkpoints found damaged (`damaged_step_...`) are kept, moved to
    `damaged_checkpoints/` for inspection.
    """
    checkpoints = os.path.join(output_dir, CHECKPOINT_DIR)
    if os.path.isdir(checkpoints):
        for name in os.listdir(checkpoints):
            if name.startswith("damaged_"):
                keep = os.path.join(output_dir, "damaged_checkpoints")
                os.makedirs(keep, exist_ok=True)
                target = os.path.join(keep, name)
                shutil.rmtree(target, ignore_errors=True)
                os.rename(os.path.join(checkpoints, name), target)
    shutil.rmtree(checkpoints, ignore_errors=True)
    shutil.rmtree(os.path.join(output_dir, TENSORBOARD_DIR), ignore_errors=True)
    for name in (LOG_FILE, KNN_LOG_FILE):
        log = os.path.join(output_dir, name)
        if os.path.exists(log):
            os.remove(log)


# A row of log.csv is ~100 bytes: ten million logged steps fit in 1 GB.
MAX_LOG_BYTES = 1024**3


def read_log(path):
    """Reads `log.csv` into `{"step": int array, "loss": ..., ...}`."""
    io_utils.check_regular_file(path, MAX_LOG_BYTES, what="Training log")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = {}
    for field in LOG_FIELDS:
        dtype = "int64" if field == "step" else "float64"
        columns[field] = np.array([row[field] for row in rows], dtype=dtype)
    return columns


def truncate_log(path, last_step, keep=lambda step: True):
    """Keeps the header and the rows with `step <= last_step` and `keep`."""
    if not os.path.lexists(path):
        return
    # Whatever is there (a FIFO, a directory, a broken or looping link)
    # must be a regular file.
    io_utils.check_regular_file(path, MAX_LOG_BYTES, what="Training log")
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


LOCK_FILE = ".lock"
_HELD = {}  # folder -> [file descriptor, depth]: re-entrant per process


class RunLock:
    """An exclusive lock on a run folder, so two runs never share one.

    `fcntl.flock` on `output_dir/.lock`: the kernel drops it when the
    holder exits or is killed, so a lock left by a crash is recovered by
    the next run without any clean-up. The file records the holder (pid,
    host, start time) for the message a second run gets. Re-entrant within
    one process (the example and `train` both take it).

    Example:

    ```python
    with RunLock("runs/pretrain"):
        ...  # the only process writing there
    ```
    """

    def __init__(self, output_dir):
        self.folder = os.path.abspath(os.fspath(output_dir))
        self.path = os.path.join(self.folder, LOCK_FILE)

    def __enter__(self):
        import fcntl

        held = _HELD.get(self.folder)
        if held is not None:
            held[1] += 1
            return self
        descriptor = self._open()
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            with os.fdopen(descriptor, errors="replace") as f:
                holder = " ".join(f.read(300).split()) or "another process"
            raise SettingsError(
                f"`output_dir`={self.folder!r} is in use by {holder}. Wait "
                "for that run to finish (or stop it), or pass another "
                "--output_dir."
            ) from None
        os.ftruncate(descriptor, 0)
        os.write(
            descriptor,
            (
                f"process {os.getpid()} on {socket.gethostname()} (since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n"
            ).encode(),
        )
        _HELD[self.folder] = [descriptor, 1]
        return self

    def _open(self):
        """The lock file's descriptor: a regular file, never followed
        through a link (that would truncate the link's target), never
        blocking (a FIFO)."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK
        flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            descriptor = os.open(self.path, flags, 0o644)
        except OSError as error:
            what = _what_is(self.path) if os.path.lexists(self.path) else None
            if os.path.islink(self.path):
                what = "a symbolic link"
            raise SettingsError(
                f"Cannot take the run lock {self.path!r}: it is "
                f"{what or error.strerror or error}. Remove it, or pass "
                "another --output_dir."
            ) from None
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            what = _what_is(self.path)
            os.close(descriptor)
            raise SettingsError(
                f"Cannot take the run lock {self.path!r}: it is {what}, not a "
                "regular file. Remove it, or pass another --output_dir."
            )
        return descriptor

    def __exit__(self, *exc):
        held = _HELD[self.folder]
        held[1] -= 1
        if held[1] == 0:
            del _HELD[self.folder]
            os.close(held[0])  # Closing releases the flock.
