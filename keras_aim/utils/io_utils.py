"""Crash-safe file writes shared by presets and run checkpoints.

A folder is written next to its final name and renamed into place, so that
a failure midway (a full disk, a kill) never leaves a half-written folder
under the final name; the previous version is removed only after the new
one is in place.
"""

import contextlib
import json
import os
import shutil
import uuid


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


def replace_folder(temporary, final):
    """Moves the complete folder `temporary` to `final`, replacing it.

    At every moment either the old or the new folder exists under a name
    a reader can find: the old one is renamed aside first and deleted last.
    """
    fsync_tree(temporary)
    parent = os.path.dirname(os.path.abspath(final))
    if os.path.exists(final):
        aside = f"{final}.old-{uuid.uuid4().hex[:8]}"
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


@contextlib.contextmanager
def atomic_folder(final):
    """Yields a temporary folder that replaces `final` when the block ends.

    If the block raises, the temporary folder is deleted and `final` is left
    exactly as it was.

    Example:

    ```python
    with atomic_folder("run/backbone") as folder:
        write_json(os.path.join(folder, "config.json"), config)
    ```
    """
    final = os.path.abspath(os.fspath(final))
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    temporary = os.path.join(
        parent, f".{os.path.basename(final)}.tmp-{uuid.uuid4().hex[:8]}"
    )
    os.makedirs(temporary)
    try:
        yield temporary
        replace_folder(temporary, final)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
