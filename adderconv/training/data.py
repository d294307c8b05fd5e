"""Re-exports: the data sources live in :mod:`adderconv.data`; this module keeps the old import path working for
user code (the package itself imports adderconv.data).

>>> from adderconv.training.data import load_data as f
>>> f is load_data
True
"""
from __future__ import annotations

from ..data import (SKIMAGE_SPLIT, DataSplit, TensorPairs, augment_batch, default_shape, degrade_bicubic,
                    load_data, safe_unpickle)

__all__ = ["DataSplit", "TensorPairs", "load_data", "default_shape", "safe_unpickle", "degrade_bicubic",
           "augment_batch", "SKIMAGE_SPLIT"]
