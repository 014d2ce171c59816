"""Safe reads of user files and crash-safe writes.

Reads: every reader of a user file (image folders, preset and converter
configs, LoRA and checkpoint files, released checkpoints) first checks it
with `check_regular_file`, or reads it with `read_bounded` / `read_json`:
only regular files (symlinks are followed, so a link to `/dev/zero` is a
character device), their size known before any byte is read, reads that
stop at a limit. A FIFO never blocks a reader, a device never streams into
memory.

Writes: a folder is written next to its final name and renamed into place,
so that a failure midway (a full disk, a kill) never leaves a half-written
folder under the final name; the previous version is removed only after
the new one is in place. A write killed midway leaves its temporary folder
behind; the next write to the same name removes it, once it can prove (by
a lock the dead writer held) that no live process owns it.
"""

import contextlib
import json
import os
import re
import shutil
import stat
import uuid

from keras_aim.utils.errors import MissingFileError
from keras_aim.utils.errors import UnreadableFileError

# JSON files keras_aim reads (configs, state.json) are kilobytes; this is
# far beyond any of them.
MAX_JSON_BYTES = 64 * 1024**2
_KINDS = (
    (stat.S_ISDIR, "is a directory, not a file"),
    (stat.S_ISFIFO, "is a FIFO (named pipe), not a regular file"),
    (stat.S_ISCHR, "is a character device, not a regular file"),
    (stat.S_ISBLK, "is a block device, not a regular file"),
    (stat.S_ISSOCK, "is a socket, not a regular file"),
)


def _check_stat(path, info, max_bytes, what):
    for test, reason in _KINDS:
        if test(info.st_mode):
            raise UnreadableFileError(path, reason, what)
    if not stat.S_ISREG(info.st_mode):
        raise UnreadableFileError(path, "is not a regular file", what)
    if max_bytes is not None and info.st_size > max_bytes:
        raise UnreadableFileError(
            path,
            f"is {info.st_size:,} bytes, more than the {max_bytes:,} bytes "
            "allowed for it",
            what,
        )
    return info.st_size


def check_regular_file(path, max_bytes=None, what="File"):
    """Returns the size of `path` if it is a regular file within a limit.

    Nothing is opened: `os.stat` follows symlinks and never blocks, so a
    FIFO, a device (`/dev/zero`), a socket or a directory under a file's
    name is refused before any reader touches it.

    Args:
        path: the file.
        max_bytes: int, the largest size accepted, or `None` for any.
        what: how the message names the file ("Image file", ...).

    Raises:
        MissingFileError: it does not exist (also a `FileNotFoundError`).
        UnreadableFileError: a `ValueError` naming the file and what is
            wrong with it.
    """
    path = os.fspath(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise MissingFileError(path, "does not exist", what) from None
    except (OSError, ValueError) as error:  # a loop, a NUL in the name
        reason = getattr(error, "strerror", None) or error
        raise UnreadableFileError(
            path, f"cannot be read ({reason})", what
        ) from None
    return _check_stat(path, info, max_bytes, what)


@contextlib.contextmanager
def open_regular(path, max_bytes=None, what="File"):
    """Opens the regular file `path` for reading bytes, checked twice.

    `check_regular_file` first; then the file is opened without blocking
    (a FIFO swapped in after the check still cannot hang the open) and the
    open descriptor is checked again. Yields an unbuffered binary file.
    """
    path = os.fspath(path)
    check_regular_file(path, max_bytes, what)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
    flags |= getattr(os, "O_BINARY", 0)
    try:
        descriptor = os.open(path, flags)
    except OSError as error:
        raise UnreadableFileError(
            path, f"cannot be read ({error.strerror or error})", what
        ) from None
    with os.fdopen(descriptor, "rb", buffering=0) as f:
        _check_stat(path, os.fstat(descriptor), max_bytes, what)
        yield f


def read_bounded(path, max_bytes, what="File"):
    """The bytes of the regular file `path`, refused beyond `max_bytes`.

    Opened with `open_regular`, and read at most `max_bytes + 1` bytes, so
    a file that grows without end (or lies about its size) is refused too.
    """
    chunks, total = [], 0
    with open_regular(path, max_bytes, what) as f:
        try:
            while total <= max_bytes:
                chunk = f.read(min(1 << 20, max_bytes + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
        except OSError as error:
            raise UnreadableFileError(
                os.fspath(path),
                f"cannot be read ({error.strerror or error})",
                what,
            ) from None
    if total > max_bytes:
        raise UnreadableFileError(
            os.fspath(path),
            f"holds more than the {max_bytes:,} bytes allowed",
            what,
        )
    return b"".join(chunks)


def read_json(path, max_bytes=MAX_JSON_BYTES, what="JSON file"):
    """Parses the JSON file `path`, read with `read_bounded`.

    Raises:
        UnreadableFileError: not a regular file, too large, not UTF-8 or
            not valid JSON; the message names the file.
    """
    data = read_bounded(path, max_bytes, what)
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise UnreadableFileError(
            os.fspath(path), f"is not valid JSON ({error})", what
        ) from None


def check_h5_dataset(dataset, path, file_size):
    """Refuses an HDF5 dataset whose declared size its file cannot hold.

    Read from metadata only: a compressed or sparse (chunked, unwritten)
    dataset can declare gigabytes in a file of kilobytes, and reading it
    would allocate them all. keras_aim and Keras write their weights
    uncompressed, so the bytes a dataset declares are stored in the file.

    Returns:
        The dataset's declared size in bytes.
    """
    declared = int(dataset.size) * dataset.dtype.itemsize
    stored = dataset.id.get_storage_size()
    if declared and (declared > file_size or stored < declared):
        raise ValueError(
            f"{path}: dataset {dataset.name!r} declares shape "
            f"{dataset.shape} ({declared:,} bytes) but the file stores "
            f"{stored:,} bytes for it (a compressed or sparse dataset); "
            "the file is damaged or not written by keras_aim or Keras."
        )
    return declared


def h5_datasets(f):
    """`{name: dataset}` of every dataset in an open file (no data read)."""
    import h5py

    found = {}
    f.visititems(
        lambda name, item: (
            found.__setitem__(name, item)
            if isinstance(item, h5py.Dataset)
            else None
        )
    )
    return found


def fsync_directory(path):
    """Flushes a folder's entries (renames) to disk where the OS allows."""
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


def fsync_tree(path):
    """fsyncs every file under `path`, then the folders themselves."""
    for root, _, names in os.walk(path):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_directory(root)


def write_json(path, obj, indent=1):
    """Writes `obj` as JSON to `path` through a temporary file and a rename."""
    temporary = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(temporary, "w") as f:
            json.dump(obj, f, indent=indent)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def replace_folder(temporary, final, aside=None):
    """Moves the complete folder `temporary` to `final`, replacing it.

    At every moment either the old or the new folder exists under a name
    a reader can find: the old one is renamed aside first (to `aside`, by
    default `final.old-XXXXXXXX`) and deleted last.
    """
    fsync_tree(temporary)
    parent = os.path.dirname(os.path.abspath(final))
    if os.path.exists(final):
        aside = aside or f"{final}.old-{uuid.uuid4().hex[:8]}"
        os.rename(final, aside)
        try:
            os.rename(temporary, final)
        except BaseException:
            os.rename(aside, final)
            raise
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.rename(temporary, final)
    fsync_directory(parent)


def _fcntl():
    try:
        import fcntl
    except ImportError:  # Windows: no stale-write recovery.
        return None
    return fcntl


def _write_names(final):
    parent, base = os.path.split(final)
    pattern = re.compile(
        rf"^\.{re.escape(base)}\.tmp-(?P<token>[0-9a-f]{{12}})\.lock$"
    )
    return parent, base, pattern


class _WriteLock:
    """A lock file beside a write in progress, held until the write ends.

    It is created under another name, locked, then renamed into place, so
    a lock file under its real name is always locked by a live writer or
    left by a dead one (the kernel drops a dead process's `flock`).
    """

    def __init__(self, parent, base, token):
        self.descriptor = None
        fcntl = _fcntl()
        if fcntl is None:
            return
        self.path = os.path.join(parent, f".{base}.tmp-{token}.lock")
        pending = f"{self.path}-new"
        descriptor = os.open(pending, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(
                descriptor, f"keras_aim write, pid {os.getpid()}\n".encode()
            )
            os.rename(pending, self.path)
        except BaseException:
            os.close(descriptor)
            with contextlib.suppress(OSError):
                os.remove(pending)
            raise
        self.descriptor = descriptor

    def release(self):
        if self.descriptor is None:
            return
        with contextlib.suppress(OSError):
            os.remove(self.path)  # Removed while still held.
        os.close(self.descriptor)
        self.descriptor = None


def clean_stale_writes(final):
    """Removes what dead `atomic_folder` writes to `final` left behind.

    Only writes that are provably ours and provably dead are touched: a
    `.NAME.tmp-XXXXXXXXXXXX.lock` file beside `final` whose lock no live
    process holds. Its temporary folder is removed; an old version renamed
    aside (`NAME.old-XXXXXXXXXXXX`) is removed if `final` exists, and put
    back as `final` if the writer died between its two renames. Anything
    else, including folders of writes that are still running, is left.

    Returns:
        The paths removed or restored.
    """
    fcntl = _fcntl()
    final = os.path.abspath(os.fspath(final))
    parent, base, pattern = _write_names(final)
    if fcntl is None or not os.path.isdir(parent):
        return []
    cleaned = []
    for name in sorted(os.listdir(parent)):
        match = pattern.match(name)
        if match is None:
            continue
        lock = os.path.join(parent, name)
        try:
            descriptor = os.open(lock, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # Its writer is alive.
            try:  # A finished writer removes its lock before releasing it.
                if not os.path.samestat(os.fstat(descriptor), os.lstat(lock)):
                    continue
            except OSError:
                continue
            token = match.group("token")
            temporary = os.path.join(parent, f".{base}.tmp-{token}")
            aside = f"{final}.old-{token}"
            if os.path.isdir(temporary):
                shutil.rmtree(temporary, ignore_errors=True)
                cleaned.append(temporary)
            if os.path.isdir(aside):
                if os.path.exists(final):
                    shutil.rmtree(aside, ignore_errors=True)
                else:
                    os.rename(aside, final)
                cleaned.append(aside)
            os.remove(lock)
            cleaned.append(lock)
        finally:
            os.close(descriptor)
    return cleaned


@contextlib.contextmanager
def atomic_folder(final):
    """Yields a temporary folder that replaces `final` when the block ends.

    If the block raises, the temporary folder is deleted and `final` is left
    exactly as it was. A write killed outright (SIGKILL, a power cut) leaves
    its temporary folder; the next `atomic_folder(final)` removes it (see
    `clean_stale_writes`).

    Example:

    ```python
    with atomic_folder("run/backbone") as folder:
        write_json(os.path.join(folder, "config.json"), config)
    ```
    """
    final = os.path.abspath(os.fspath(final))
    parent, base, _ = _write_names(final)
    os.makedirs(parent, exist_ok=True)
    clean_stale_writes(final)
    token = uuid.uuid4().hex[:12]
    temporary = os.path.join(parent, f".{base}.tmp-{token}")
    lock = _WriteLock(parent, base, token)
    try:
        os.makedirs(temporary)
        yield temporary
        replace_folder(temporary, final, aside=f"{final}.old-{token}")
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    finally:
        lock.release()
