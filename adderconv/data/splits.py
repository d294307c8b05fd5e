"""What every source returns (:class:`DataSplit` of :class:`TensorPairs` or lazy datasets) and how a
source cuts its parts: a seeded permutation (:func:`split_indices`) and a per-part cap (:func:`cap`).

>>> train, val, test = split_indices(10, seed=0, val_fraction=0.25, test_fraction=0.2)
>>> (len(train), len(val), len(test)), sorted(torch.cat([train, val, test]).tolist()) == list(range(10))
((6, 2, 2), True)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["DataSplit", "TensorPairs", "split_indices", "cap"]


class TensorPairs(Dataset):
    """(input, target) pairs held in two tensors; ``__getitems__`` slices a whole batch at once."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        if len(x) != len(y):
            raise ValueError(f"inputs ({len(x)}) and targets ({len(y)}) differ in length")
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.x[i], self.y[i]

    def __getitems__(self, idx: list[int]) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(idx, dtype=torch.long)
        return self.x[index], self.y[index]


@dataclass
class DataSplit:
    """Train/val/test datasets of one task. ``task`` is ``"classify"`` or ``"sr"``."""

    train: Dataset
    val: Dataset
    test: Dataset
    task: str
    num_classes: int | None
    input_shape: tuple[int, ...]          # (C, H, W) of one sample
    description: str
    augment: str = "none"                 # "none" | "crop_flip" (CIFAR-style) | "flip" (SR)
    scale: int = 1                        # SR upscaling factor


def split_indices(n: int, seed: int, val_fraction: float, test_fraction: float) -> tuple[Tensor, Tensor, Tensor]:
    """(train, val, test) indices of ``n`` samples: disjoint, complete, and a function of ``seed`` alone."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test, n_val = round(n * test_fraction), round(n * (1 - test_fraction) * val_fraction)
    return perm[n_test + n_val:], perm[n_test:n_test + n_val], perm[:n_test]


def cap(idx: Tensor, limit: int | None) -> Tensor:
    """The first ``limit`` indices (all of them with None): smoke runs cap each part."""
    return idx if limit is None else idx[:limit]
