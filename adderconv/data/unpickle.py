"""A restricted unpickler for data files in Python's pickle format (CIFAR's python batches): numpy arrays,
builtin containers and bytes load; any other class named in the file is refused, so loading runs no code.

>>> import io, pickle
>>> _SafeUnpickler(io.BytesIO(pickle.dumps({b"labels": [1, 2]})), encoding="bytes").load()
{b'labels': [1, 2]}
"""
from __future__ import annotations

import os
import pickle

from ..errors import AdderconvError

__all__ = ["safe_unpickle"]


class _SafeUnpickler(pickle.Unpickler):
    """Only what CIFAR's python batches need: numpy arrays/dtypes and bytes decoding. Anything else is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),                         # how protocol-2 pickles spell a bytes object
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed here")


def safe_unpickle(path: str | os.PathLike) -> object:
    """Unpickle ``path`` allowing only builtin containers, bytes and numpy arrays (CIFAR's python format)."""
    try:
        with open(path, "rb") as f:
            return _SafeUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise AdderconvError(f"{path}: not a CIFAR python batch ({e})") from None
