"""``cifar10:DIR``: CIFAR-10's python batches (``data_batch_*``, ``test_batch``, directly in DIR or in
``cifar-10-batches-py/``), read with the restricted unpickler; the test split is ``test_batch``.

>>> cifar_dir(Path("/nonexistent")) is None
True
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import AdderconvError
from .images import fit, normalise
from .registry import Request, register_source
from .splits import DataSplit, TensorPairs, cap, split_indices
from .unpickle import safe_unpickle

__all__ = ["cifar_dir", "load_cifar10"]


def cifar_dir(path: Path) -> Path | None:
    """The folder holding the batches (``path`` or its ``cifar-10-batches-py/``), None if neither does."""
    for d in (path, path / "cifar-10-batches-py"):
        if (d / "data_batch_1").is_file():
            return d
    return None


def _batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise AdderconvError(f"{path}: expected a CIFAR python batch file, found a directory or nothing")
    obj = safe_unpickle(path)
    if not isinstance(obj, dict):
        raise AdderconvError(f"{path}: expected a dict, found {type(obj).__name__}")
    obj = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
    data, labels = obj.get("data"), obj.get("labels")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise AdderconvError(f"{path}: expected 'data' as an N x 3072 uint8 array")
    try:
        y = np.asarray(labels)
    except (ValueError, TypeError):
        y = np.asarray([], dtype=object)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_) or len(y) != len(data):
        raise AdderconvError(f"{path}: expected 'labels' as {len(data)} integers (one per image), got "
                             f"{len(y) if y.ndim == 1 else 'shape ' + str(y.shape)} of {y.dtype}")
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise AdderconvError(f"{path}: CIFAR-10 labels must be 0-9, found {int(y.min())}..{int(y.max())}")
    return data.reshape(-1, 3, 32, 32), y.astype(np.int64)


@register_source("cifar10", usage=("cifar10:DIR",), shape=(3, 32, 32), detect=lambda p: cifar_dir(p) is not None)
def load_cifar10(req: Request) -> DataSplit:
    root, shape, limit = Path(req.arg), req.shape, req.limit
    d = cifar_dir(root)
    if d is None:
        raise AdderconvError(f"{root}: no CIFAR-10 python batches (data_batch_1 ... test_batch) found")
    batches = sorted(d.glob("data_batch_*"))
    train = [_batch(p) for p in batches]
    if not (d / "test_batch").is_file():
        raise AdderconvError(f"{d}: test_batch is missing")
    xt, yt = _batch(d / "test_batch")
    x = torch.from_numpy(np.concatenate([b[0] for b in train])).float() / 255
    y = torch.from_numpy(np.concatenate([b[1] for b in train]))
    x, xt = fit(x, shape), fit(torch.from_numpy(xt).float() / 255, shape)
    tr, va, _ = split_indices(len(y), req.split_seed, req.val_fraction, 0.0)
    mean, std = x[tr].mean(dim=(0, 2, 3)), x[tr].std(dim=(0, 2, 3))
    x, xt = normalise(x, mean, std), normalise(xt, mean, std)
    te = cap(torch.arange(len(xt)), limit)
    tr, va = cap(tr, limit), cap(va, limit)
    desc = (f"CIFAR-10 ({d}): {len(tr)} train / {len(va)} val (from {len(batches)} training batches) / "
            f"{len(te)} test (test_batch), split seed {req.split_seed}")
    yt_t = torch.from_numpy(yt)
    return DataSplit(TensorPairs(x[tr], y[tr]), TensorPairs(x[va], y[va]), TensorPairs(xt[te], yt_t[te]),
                     "classify", 10, tuple(shape), desc, augment="crop_flip")
