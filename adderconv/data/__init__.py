"""Data: the sources (one per file, each registered by name), the shared pieces, the loader and evaluation.

Sources: ``digits`` (scikit-learn, offline; the default), ``cifar10:DIR``, ``mnist:DIR`` / ``fashion-mnist``
(idx files), ``imagefolder:DIR``, ``sr:DIR`` / ``sr:skimage``; a bare directory goes to the source that
recognises it (CIFAR batches, idx files, else an ImageFolder). Adding a source: a new module that registers
its loader with :func:`register_source`, imported below. Fine-tuning, quantisation and the benchmarks build on
this package; it imports nothing from them.

>>> load_data("digits", (1, 32, 32), limit=16).num_classes
10
"""
from __future__ import annotations

# Registration order is the order messages list the sources and bare directories are offered to them:
# imagefolder claims any directory, so it comes after the sources that recognise theirs.
from . import digits, cifar10, mnist, imagefolder, sr  # noqa: F401, I001  (each registers its source)
from .evaluate import autocast, evaluate, loader, psnr
from .load import load_data, source_forms
from .ranks import DistInfo, all_reduce_sum, shard
from .registry import Request, Source, default_shape, register_source, sources
from .splits import DataSplit, TensorPairs, cap, split_indices
from .sr import SKIMAGE_SPLIT
from .transforms import augment_batch, degrade_bicubic
from .unpickle import safe_unpickle

__all__ = [
    "load_data", "default_shape", "DataSplit", "TensorPairs", "split_indices", "cap", "register_source", "sources",
    "source_forms", "Request", "Source", "safe_unpickle", "degrade_bicubic", "augment_batch", "SKIMAGE_SPLIT",
    "evaluate", "loader", "psnr", "autocast", "DistInfo", "shard", "all_reduce_sum",
]
