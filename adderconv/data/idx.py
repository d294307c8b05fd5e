"""The idx format of MNIST and its kin (Fashion-MNIST, KMNIST, EMNIST), read and validated with numpy.

An idx file is a 4-byte magic number (two zero bytes, the element type, the number of dimensions), one
big-endian uint32 per dimension, then the elements. We read unsigned bytes only (type 0x08): images are
idx3 (magic 2051: count, rows, columns), labels idx1 (magic 2049: count). A gzip stream (``.gz`` or not: the
content decides) is decompressed as it is read. The header's sizes are checked against a budget before
anything is allocated, and the data must fill the file exactly: a truncated or oversized file, a wrong magic
number or a damaged gzip stream is one line of :class:`AdderconvError`.

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
>>> _ = path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 0, 9]))
>>> read_idx(path, 1).tolist()
[7, 0, 9]
"""
from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from ..errors import AdderconvError, first_line

__all__ = ["read_idx", "MAGIC", "MAX_IDX_BYTES"]

MAGIC = {3: 0x0803, 1: 0x0801}      # unsigned bytes, 3 dims (2051: images) or 1 dim (2049: labels)
MAX_IDX_BYTES = 1 << 30             # EMNIST byclass's training images, the largest idx set in use, are 0.55 GB
_GZIP = b"\x1f\x8b"


def read_idx(path: Path, ndim: int, *, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """The uint8 array of the idx file ``path`` with ``ndim`` dimensions (3: images, 1: labels)."""
    kind = "images (idx3)" if ndim == 3 else "labels (idx1)"
    try:
        with open(path, "rb") as raw:
            gz = raw.read(2) == _GZIP
        with (gzip.open if gz else open)(path, "rb") as f:
            head = f.read(4 + 4 * ndim)
            if len(head) < 4 + 4 * ndim:
                raise AdderconvError(f"{path}: not idx {kind}: {len(head)} bytes, shorter than the header "
                                     f"({4 + 4 * ndim} bytes)")
            magic = int.from_bytes(head[:4], "big")
            if magic != MAGIC[ndim]:
                raise AdderconvError(f"{path}: not idx {kind} of unsigned bytes: magic number {magic} "
                                     f"(0x{magic:08x}), expected {MAGIC[ndim]} (0x{MAGIC[ndim]:08x})")
            shape = tuple(int.from_bytes(head[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
            size = math.prod(shape)
            if size > max_bytes:
                raise AdderconvError(f"{path}: the header claims {' x '.join(map(str, shape))} = {size:,} bytes, "
                                     f"over the budget of {max_bytes:,} bytes for one idx file")
            body = bytearray(size + 1)      # one byte more than promised: an oversized file shows itself
            got = _fill(f, body)
    except AdderconvError:
        raise
    except (OSError, EOFError, zlib.error) as e:    # gzip.BadGzipFile is an OSError; a cut stream an EOFError
        raise AdderconvError(f"{path}: not a readable idx file ({first_line(e)})") from None
    if got != size:
        how = "truncated" if got < size else "longer than its header says"
        raise AdderconvError(f"{path}: {how}: the header promises {' x '.join(map(str, shape))} = {size:,} bytes "
                             f"of data, the file holds {got:,}{'' if got < size else ' or more'}")
    return np.frombuffer(body, dtype=np.uint8, count=size).reshape(shape)   # writable: torch takes it as is


def _fill(f, buf: bytearray) -> int:
    """Read into ``buf`` until it is full or the stream ends; the bytes read."""
    view, got = memoryview(buf), 0
    while got < len(buf):
        n = f.readinto(view[got:])
        if not n:
            break
        got += n
    return got
