"""What makes a run checkpoint intact, checked before it is used.

Shared by the local (`CheckpointManager`) and the sharded Orbax
(`ShardedCheckpointManager`) checkpoints:

- `read_state`: `state.json` is read bounded and validated against its
  schema (types, ranges, file names inside the checkpoint); any mismatch,
  even in valid JSON (`"format": "2"`, `"model_variables": 5`), is damage,
  so that the fallback to an older checkpoint takes over.
- `check_checksums`: every file the state lists has the SHA-256 written
  with it, and is a regular file (a FIFO never hangs the hash).
- `check_h5_file` / `check_npz_file`: every array's declared size is
  checked from metadata against what the file stores before any data is
  read, then float arrays are read in bounded slices and must be finite.
"""

import hashlib
import os
import re
import zipfile

import numpy as np

from keras_aim.utils import io_utils
from keras_aim.utils.errors import CheckpointDamagedError
from keras_aim.utils.errors import SettingsError
from keras_aim.utils.errors import UnreadableFileError

FORMAT_VERSION = 2
# state.json lists every variable with its path; far beyond a 7B run's.
MAX_STATE_BYTES = 64 * 1024**2
# Float arrays are checked for finiteness this many bytes at a time.
SLICE_BYTES = 64 * 1024**2
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NPY_HEADERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_record(record):
    return (
        isinstance(record, dict)
        and isinstance(record.get("path"), str)
        and isinstance(record.get("dtype"), str)
        and isinstance(record.get("shape"), list)
        and all(_is_int(d) and d >= 0 for d in record["shape"])
    )


def _is_numbers(value, depth=0):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return True
    return (
        depth < 8
        and isinstance(value, list)
        and all(_is_numbers(v, depth + 1) for v in value)
    )


def _is_inside(name):
    """A relative path inside the checkpoint folder, with no `..` part."""
    if not isinstance(name, str) or not name or "\\" in name:
        return False
    parts = name.split("/")
    return not os.path.isabs(name) and all(
        part not in ("", ".", "..") for part in parts
    )


def validate_state(state, state_path):
    """Raises `CheckpointDamagedError` naming the first schema mismatch.

    Returns:
        The state, with `format` defaulting to 1 (keras_aim 0.1).

    Raises:
        SettingsError: a format newer than this keras_aim reads (not
            damage: a newer keras_aim reads it).
    """

    def damaged(reason):
        raise CheckpointDamagedError(state_path, reason)

    if not isinstance(state, dict):
        damaged(f"holds a JSON {type(state).__name__}, not an object")
    version = state.get("format", 1)
    if not _is_int(version) or version < 1:
        damaged(f"'format' must be a positive integer; got {version!r}")
    if version > FORMAT_VERSION:
        raise SettingsError(
            f"Checkpoint {state_path!r} has format {version}, newer than "
            f"this keras_aim reads ({FORMAT_VERSION}); upgrade keras_aim."
        )
    if not _is_int(state.get("step")) or state["step"] < 0:
        damaged(f"'step' must be an integer >= 0; got {state.get('step')!r}")
    for key in ("fingerprint", "metadata", "extra"):
        if not isinstance(state.get(key, {}), dict):
            damaged(f"{key!r} must be an object; got {state[key]!r}")
    for key in ("model_variables", "optimizer_variables"):
        records = state.get(key)
        if not isinstance(records, list) or not all(map(_is_record, records)):
            shown = repr(records)[:80]
            damaged(
                f"{key!r} must be a list of {{path, shape, dtype}} records; "
                f"got {shown}"
            )
    for key in ("keras_backend", "time"):
        if not isinstance(state.get(key, ""), str):
            damaged(f"{key!r} must be a string; got {state[key]!r}")
    if not isinstance(state.get("orbax", False), bool):
        damaged(f"'orbax' must be true or false; got {state['orbax']!r}")
    processes = state.get("processes", 1)
    if not _is_int(processes) or processes < 1:
        damaged(f"'processes' must be a positive integer; got {processes!r}")
    extra = state.get("extra", {})
    if "log_every" in extra and not _is_int(extra["log_every"]):
        damaged(f"'extra.log_every' must be an integer; got {extra!r}")
    if "window_state" in extra and not (
        isinstance(extra["window_state"], list)
        and _is_numbers(extra["window_state"])
    ):
        damaged("'extra.window_state' must be a list of numbers")
    sums = state.get("sha256", {})
    if not isinstance(sums, dict) or not all(
        _is_inside(name) and isinstance(d, str) and _HEX64.match(d)
        for name, d in sums.items()
    ):
        damaged(
            "'sha256' must map file names inside the checkpoint to "
            "SHA-256 hex digests"
        )
    sizes = state.get("sizes", {})
    if not isinstance(sizes, dict) or not all(
        name in sums and _is_int(size) and size >= 0
        for name, size in sizes.items()
    ):
        damaged("'sizes' must map the files of 'sha256' to their sizes")
    state["format"] = version
    return state


def read_state(state_path):
    """Reads and validates `state.json`; any failure is damage."""
    try:
        state = io_utils.read_json(
            state_path, MAX_STATE_BYTES, what="Checkpoint state"
        )
    except UnreadableFileError as error:
        raise CheckpointDamagedError(
            state_path, f"unreadable ({error.reason})"
        ) from error
    return validate_state(state, state_path)


def sha256_file(path):
    """The SHA-256 of a regular file, read in 16 MB blocks."""
    digest = hashlib.sha256()
    with io_utils.open_regular(path, what="Checkpoint file") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def _item_bytes(dtype):
    digits = "".join(c for c in dtype if c.isdigit())
    return max(1, int(digits) // 8) if digits else 8


def recorded_bytes(state):
    """The bytes of every variable `state.json` lists (a file's payload)."""
    return sum(
        _item_bytes(record["dtype"])
        * int(np.prod(record["shape"], dtype=object))
        for key in ("model_variables", "optimizer_variables")
        for record in state[key]
    )


def check_checksums(folder, sums, sizes=None, limit=None):
    """Every file in `sums` (relative to `folder`) has its SHA-256.

    Sizes are compared first, from `os.stat`: with the ones written with
    the checkpoint (`sizes`), or against `limit` bytes (older checkpoints),
    so that a file swapped for a huge one is refused without reading it.
    """
    sizes = sizes or {}
    for name, digest in sums.items():
        path = os.path.join(folder, *name.split("/"))
        try:
            size = io_utils.check_regular_file(path, what="Checkpoint file")
        except UnreadableFileError as error:
            raise CheckpointDamagedError(path, error.reason) from error
        if name in sizes and size != sizes[name]:
            raise CheckpointDamagedError(
                path, f"is {size:,} bytes; {sizes[name]:,} were written"
            )
        if name not in sizes and limit is not None and size > limit:
            raise CheckpointDamagedError(
                path,
                f"is {size:,} bytes, far more than its variables need "
                f"({limit:,} at most)",
            )
        try:
            actual = sha256_file(path)
        except (UnreadableFileError, OSError) as error:
            raise CheckpointDamagedError(path, str(error)) from error
        if actual != digest:
            raise CheckpointDamagedError(
                path, "its SHA-256 differs from the one written with it"
            )


def folder_checksums(folder, under):
    """`({name: SHA-256}, {name: size})` of every file below `folder/under`,
    named relative to `folder`."""
    sums, sizes = {}, {}
    for root, dirs, names in os.walk(os.path.join(folder, under)):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(root, name)
            relative = os.path.relpath(path, folder).replace(os.sep, "/")
            sums[relative] = sha256_file(path)
            sizes[relative] = os.path.getsize(path)
    return sums, sizes


def check_finite(array, path, name):
    """Raises `CheckpointDamagedError` if a float array holds NaN or inf."""
    array = np.asarray(array)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise CheckpointDamagedError(
            path, f"holds non-finite values (in {name!r})"
        )


def _slices(shape, itemsize):
    """Index slices along axis 0, each at most `SLICE_BYTES` (or one row)."""
    if not shape:
        return [()]
    row = itemsize * int(np.prod(shape[1:], dtype=np.int64))
    step = max(1, SLICE_BYTES // max(1, row))
    return [slice(i, i + step) for i in range(0, shape[0], step)]


def check_h5_file(path):
    """Every dataset of an HDF5 weights file: sizes, then finiteness."""
    import h5py

    try:
        file_size = io_utils.check_regular_file(path, what="Checkpoint file")
        with h5py.File(path, "r") as f:
            datasets = io_utils.h5_datasets(f)
            total = 0
            for dataset in datasets.values():
                total += io_utils.check_h5_dataset(dataset, path, file_size)
            if total > file_size:
                raise ValueError(
                    f"its datasets declare {total:,} bytes in a file of "
                    f"{file_size:,}"
                )
            for name, dataset in datasets.items():
                if dataset.dtype.kind != "f":
                    continue  # ints, and bfloat16 stored raw ("V2")
                for part in _slices(dataset.shape, dataset.dtype.itemsize):
                    check_finite(dataset[part], path, name)
    except CheckpointDamagedError:
        raise
    except Exception as error:  # h5py raises many error types.
        raise CheckpointDamagedError(
            path, f"unreadable ({type(error).__name__}: {error})"
        ) from error


def check_npz_file(path):
    """Every array of a (legacy) `.npz`: header sizes, then finiteness."""
    try:
        file_size = io_utils.check_regular_file(path, what="Checkpoint file")
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.file_size > file_size:
                    raise ValueError(
                        f"member {info.filename!r} declares {info.file_size:,}"
                        f" bytes in a file of {file_size:,}"
                    )
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read_header = _NPY_HEADERS.get(version)
                    if read_header is None:
                        raise ValueError(f"npy format {version}")
                    shape, _, dtype = read_header(member)
                declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if declared > info.file_size:
                    raise ValueError(
                        f"{info.filename!r} declares shape {shape} "
                        f"({declared:,} bytes) in {info.file_size:,} bytes"
                    )
        with np.load(path, allow_pickle=False) as arrays:
            for name in arrays.files:
                check_finite(arrays[name], path, name)
    except CheckpointDamagedError:
        raise
    except Exception as error:  # zipfile / numpy raise many error types.
        raise CheckpointDamagedError(
            path, f"unreadable ({type(error).__name__}: {error})"
        ) from error
