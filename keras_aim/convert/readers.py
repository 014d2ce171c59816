"""Lazy, read-only readers of released AIM checkpoint files.

The authors' release (El-Nouby et al., 2024) ships PyTorch state dicts as
`model.safetensors` (hub folders) and as `.pth` files (`apple/AIM`). A
reader lists tensor names and shapes without reading data and reads one
tensor at a time as a NumPy array, so that converting a model never holds a
second copy of it. Damaged files raise a `ValueError` naming the file.
"""

import json
import os
import struct

import numpy as np

from keras_aim.utils import io_utils

# safetensors itself refuses headers over 100 MB.
MAX_SAFETENSORS_HEADER_BYTES = 100 * 1024**2


class StateDictReader:
    """Read-only, lazy view of a checkpoint's tensors.

    Use `open_state_dict` to get one. `keys()` lists the tensor names,
    `shape(name)` gives a shape without reading data and `get(name)` reads
    one tensor as a NumPy array; `get(name, dtype)` (a cast for a weight)
    refuses a tensor stored as integers or booleans. Readers are context
    managers.
    """

    def __init__(self, path):
        self.path = path

    def keys(self):
        raise NotImplementedError

    def shape(self, name):
        raise NotImplementedError

    def get(self, name, dtype=None):
        raise NotImplementedError

    def shapes(self):
        """Returns `{name: shape}` for every tensor, without reading data."""
        return {name: self.shape(name) for name in self.keys()}

    def __contains__(self, name):
        return name in self.keys()

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _missing(self, name):
        return KeyError(f"Tensor {name!r} is not in checkpoint {self.path}.")


def _not_float(name, path, stored):
    return ValueError(
        f"Tensor {name!r} in {path} has dtype {stored}, but every AIM weight "
        "is a float tensor: the checkpoint is damaged or not an AIM one."
    )


def _bfloat16():
    import ml_dtypes

    return ml_dtypes.bfloat16


def _wants_bfloat16(dtype):
    return dtype is not None and "bfloat16" in str(
        getattr(dtype, "name", dtype)
    )


_SAFETENSORS_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "<u2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}


class _SafetensorsReader(StateDictReader):
    """Reads one tensor at a time with positional reads.

    `safe_open` validates the file, then is dropped: its memory map would
    keep every page read so far resident (and counted in RSS) until the
    reader closes, i.e. a second copy of the model by the end of a load.
    """

    def __init__(self, path):
        super().__init__(path)
        try:
            from safetensors import safe_open
        except ImportError as error:
            raise ImportError(
                f"Reading {path} needs the `safetensors` package: "
                "`pip install safetensors` (or `keras-aim[convert]`)."
            ) from error
        try:
            with io_utils.open_regular(path, what="Checkpoint file") as f:
                (size,) = struct.unpack("<Q", f.read(8))
                if size > MAX_SAFETENSORS_HEADER_BYTES:
                    raise ValueError(f"a header of {size:,} bytes")
                header = json.loads(f.read(size))
            with safe_open(path, framework="numpy") as handle:
                names = list(handle.keys())
        except Exception as error:
            # safetensors raises its own `SafetensorError(Exception)`.
            raise ValueError(
                f"Could not read safetensors file {path}: it is truncated, "
                f"corrupt or not a safetensors file ({error})."
            ) from error
        self._meta = {}
        for name in names:
            entry = header[name]
            begin, end = entry["data_offsets"]
            self._meta[name] = (
                tuple(int(d) for d in entry["shape"]),
                entry["dtype"],
                8 + size + begin,
                end - begin,
            )
        self._keys = names
        self._file = open(path, "rb", buffering=0)

    def keys(self):
        return list(self._keys)

    def shape(self, name):
        if name not in self._meta:
            raise self._missing(name)
        return self._meta[name][0]

    def get(self, name, dtype=None):
        shape = self.shape(name)
        _, stored, offset, num_bytes = self._meta[name]
        if stored not in _SAFETENSORS_DTYPES:
            raise ValueError(
                f"Tensor {name!r} in {self.path} has dtype {stored}, which "
                "keras_aim cannot read."
            )
        dtype_code = np.dtype(_SAFETENSORS_DTYPES[stored])
        declared = int(np.prod(shape, dtype=object)) * dtype_code.itemsize
        if declared != num_bytes:  # checked before anything is allocated
            raise ValueError(
                f"Tensor {name!r} in {self.path} has {num_bytes} bytes for "
                f"shape {shape} and dtype {stored}: the file is corrupt."
            )
        array = np.empty(shape, dtype_code)
        if dtype is not None and stored not in ("F64", "F32", "F16", "BF16"):
            raise _not_float(name, self.path, stored)
        self._read_into(name, offset, array)
        if stored == "BF16":
            array = array.view(_bfloat16())
            if not _wants_bfloat16(dtype):
                array = array.astype(np.float32)
        return array if dtype is None else array.astype(dtype, copy=False)

    def _read_into(self, name, offset, array):
        if self._file is None:
            raise ValueError(f"Checkpoint {self.path} is closed.")
        buffer = memoryview(array.reshape(-1).view(np.uint8))
        self._file.seek(offset)
        done = 0
        while done < len(buffer):
            count = self._file.readinto(buffer[done:])
            if not count:
                raise ValueError(
                    f"Could not read tensor {name!r} from {self.path}: the "
                    "file ends early (truncated)."
                )
            done += count

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None


class _TorchReader(StateDictReader):
    def __init__(self, path):
        super().__init__(path)
        try:
            import torch
        except ImportError as error:
            raise ImportError(
                f"Reading the PyTorch checkpoint {path} needs `torch`: "
                "`pip install torch` (the CPU build is enough), or convert "
                "a hub folder (config.json + model.safetensors) instead."
            ) from error
        self._torch = torch
        try:
            try:
                state = torch.load(
                    path, map_location="cpu", weights_only=True, mmap=True
                )
            except RuntimeError as error:
                if "mmap" not in str(error):
                    raise
                # Files in the legacy (non-zip) format cannot be mapped.
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ValueError(
                f"Could not read PyTorch checkpoint {path}: it is truncated, "
                f"corrupt or not a `torch.save` file of tensors ({error})."
            ) from error
        if isinstance(state, dict):
            for wrapper in ("state_dict", "model"):
                if isinstance(state.get(wrapper), dict) and len(state) == 1:
                    state = state[wrapper]
        if not isinstance(state, dict) or not all(
            isinstance(v, torch.Tensor) for v in state.values()
        ):
            raise ValueError(
                f"PyTorch checkpoint {path} must hold a dict of tensors (a "
                f"state dict); got {type(state).__name__}."
            )
        self._state = state

    def keys(self):
        return list(self._state.keys())

    def shape(self, name):
        if name not in self._state:
            raise self._missing(name)
        return tuple(int(s) for s in self._state[name].shape)

    def get(self, name, dtype=None):
        if name not in self._state:
            raise self._missing(name)
        tensor = self._state[name].detach()
        if dtype is not None and not tensor.is_floating_point():
            raise _not_float(name, self.path, tensor.dtype)
        if tensor.dtype == self._torch.bfloat16:
            if _wants_bfloat16(dtype):
                bits = tensor.contiguous().view(self._torch.int16).numpy()
                return bits.view(_bfloat16())
            tensor = tensor.float()
        array = tensor.numpy()
        return array if dtype is None else array.astype(dtype, copy=False)

    def close(self):
        self._state = {}


class _MergedReader(StateDictReader):
    def __init__(self, readers):
        super().__init__(" + ".join(str(r.path) for r in readers))
        self._owner = {}
        for reader in readers:
            for name in reader.keys():
                if name in self._owner:
                    raise ValueError(
                        f"Tensor {name!r} appears in both "
                        f"{self._owner[name].path} and {reader.path}."
                    )
                self._owner[name] = reader
        self._readers = readers

    def keys(self):
        return list(self._owner)

    def shape(self, name):
        if name not in self._owner:
            raise self._missing(name)
        return self._owner[name].shape(name)

    def get(self, name, dtype=None):
        if name not in self._owner:
            raise self._missing(name)
        return self._owner[name].get(name, dtype=dtype)

    def close(self):
        for reader in self._readers:
            reader.close()


def open_state_dict(path, *more_paths):
    """Opens a released checkpoint lazily.

    Args:
        path: a `.safetensors` file or a `.pth` / `.pt` / `.bin` file written
            by `torch.save` (a dict of tensors).
        *more_paths: further files whose tensors are added (e.g. a head
            `.pth` next to a backbone `.pth`); names must not repeat.

    Returns:
        A `StateDictReader` with `keys()`, `shape(name)` and
        `get(name, dtype=None)`. `get` returns a NumPy array; bfloat16
        tensors come back as float32, or as `ml_dtypes.bfloat16` when
        `dtype="bfloat16"` is asked for.

    Raises:
        FileNotFoundError: a file does not exist.
        ValueError: a file is truncated, corrupt or of an unknown kind.

    Example:

    >>> reader = open_state_dict("aim-600M/model.safetensors")  # doctest: +SKIP
    >>> reader.shape("trunk.blocks.0.attn.qkv.weight")  # doctest: +SKIP
    (4608, 1536)
    """
    readers = [_open_one(p) for p in (path,) + more_paths]
    return readers[0] if len(readers) == 1 else _MergedReader(readers)


def _open_one(path):
    path = os.fspath(path)
    io_utils.check_regular_file(path, what="Checkpoint file")
    if path.endswith(".safetensors"):
        return _SafetensorsReader(path)
    if path.endswith((".pth", ".pt", ".bin")):
        return _TorchReader(path)
    raise ValueError(
        f"Unknown checkpoint file type: {path}. Expected a `.safetensors` "
        "file or a `.pth` / `.pt` / `.bin` file written by `torch.save`."
    )


class _DictReader(StateDictReader):
    def __init__(self, state_dict):
        super().__init__("<state dict>")
        self._state = state_dict

    def keys(self):
        return list(self._state)

    def shape(self, name):
        return tuple(np.shape(self._state[name]))

    def get(self, name, dtype=None):
        array = np.asarray(self._state[name])
        if dtype is not None and array.dtype.kind not in "fV":
            raise _not_float(name, self.path, array.dtype)
        return array if dtype is None else array.astype(dtype)


class _FilteredReader(StateDictReader):
    """A reader that hides the `head.*` tensors (backbone-only loading)."""

    def __init__(self, reader):
        super().__init__(reader.path)
        self._reader = reader

    def keys(self):
        return [k for k in self._reader.keys() if not k.startswith("head.")]

    def shape(self, name):
        return self._reader.shape(name)

    def get(self, name, dtype=None):
        return self._reader.get(name, dtype=dtype)


def as_reader(state):
    """A `StateDictReader` for a reader or a plain `{name: array}` dict."""
    if isinstance(state, StateDictReader):
        return state
    if isinstance(state, dict):
        return _DictReader(state)
    raise ValueError(
        "Expected a state-dict reader (from `open_state_dict`) or a dict of "
        f"arrays; got {type(state).__name__}."
    )


def without_head(reader):
    """A view of `reader` that hides the `head.*` tensors."""
    return _FilteredReader(reader)
