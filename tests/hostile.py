"""Hostile files and guards shared by the round-two reliability tests.

`make_hostile(path, kind)` puts something that is not a small regular file
under a file's name: a FIFO, a symlink to `/dev/zero`, a directory, a
10 GB sparse file (no disk used), a broken or looping symlink, a socket.
`run_bounded` runs a reader in a daemon thread and fails the test if it
has not returned in time (a hang), and `memory_limit` caps the address
space so that a reader streaming a device or allocating a size it was told
fails with `MemoryError` instead of exhausting the machine.
"""

import contextlib
import os
import resource
import socket
import stat
import struct
import threading
import zlib

HOSTILE_KINDS = (
    "fifo",
    "dev_zero",
    "directory",
    "sparse_huge",
    "broken_link",
    "link_loop",
    "socket",
)
SPARSE_BYTES = 10 * 1024**3


def make_hostile(path, kind):
    """Creates a `kind` (one of `HOSTILE_KINDS`) at `path`."""
    path = os.fspath(path)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev_zero":
        os.symlink("/dev/zero", path)
    elif kind == "directory":
        os.makedirs(path)
    elif kind == "sparse_huge":
        with open(path, "wb"):
            pass
        os.truncate(path, SPARSE_BYTES)
    elif kind == "broken_link":
        os.symlink(path + ".missing", path)
    elif kind == "link_loop":
        os.symlink(os.path.basename(path), path)
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.bind(path)
        except OSError:  # a path too long for a socket: a FIFO instead
            os.mkfifo(path)
        finally:
            server.close()
    else:
        raise ValueError(kind)
    return path


def release_fifos(folder):
    """Opens the write end of every FIFO under `folder`, so that a reader
    stuck on one (a regression) gets EOF and its thread ends."""
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with contextlib.suppress(OSError):
                if stat.S_ISFIFO(os.lstat(path).st_mode):
                    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def run_bounded(function, timeout=60.0, folder=None):
    """`(result, error)` of `function()`, run in a daemon thread.

    Fails the test if it has not returned within `timeout` seconds; the
    FIFOs under `folder` are then opened for writing to free the thread.
    """
    out = {}

    def target():
        try:
            out["result"] = function()
        except BaseException as error:  # handed back to the test
            out["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    hung = thread.is_alive()
    if hung and folder is not None:
        release_fifos(folder)
    assert not hung, f"{function} did not return within {timeout} s"
    return out.get("result"), out.get("error")


def _address_space():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return None


@contextlib.contextmanager
def memory_limit(extra_bytes=4 * 1024**3):
    """Caps the address space at its current size plus `extra_bytes`."""
    current = _address_space()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if current is None:
        yield
        return
    limit = current + extra_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _chunk(kind, data):
    body = kind + data
    return (
        struct.pack(">I", len(data))
        + body
        + struct.pack(">I", zlib.crc32(body))
    )


def png_bytes(width=4, height=4, declared=None):
    """A valid grey PNG; `declared=(w, h)` writes other sizes in its header
    (a decompression bomb when they are huge)."""
    w, h = declared or (width, height)
    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    rows = b"".join(b"\x00" + bytes(range(width)) for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )


def jpeg_header_bytes(width, height, padding=0):
    """The start of a baseline JPEG declaring `width` x `height` (after an
    APP segment of `padding` bytes), with an end marker: enough for the
    header checks, not a decodable image."""
    app = b"\xff\xe0" + struct.pack(">H", padding + 2) + b"\x00" * padding
    frame = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1)
    frame += b"\x01\x11\x00"
    return b"\xff\xd8" + app + frame + b"\xff\xda\x00\x02" + b"\xff\xd9"


def gif_header_bytes(width, height):
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00" * 6 + b";"


def bmp_header_bytes(width, height):
    size = 54
    header = b"BM" + struct.pack("<IHHI", size, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, *[0] * 6)
    return header + info + b"\x00" * 8
