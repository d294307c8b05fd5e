"""How a dataset is shared among DDP ranks and how their per-rank sums combine (the process group itself is
set up by :mod:`adderconv.training.distributed`). Every rank walks the same seeded permutation and takes every
``world``-th index of it, padded so all ranks run the same number of steps (DDP needs that).

>>> shard(torch.arange(5), DistInfo(rank=1, world_size=2)).tolist()
[1, 3, 0]
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["DistInfo", "shard", "all_reduce_sum"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False
    owns_group: bool = False     # we created the process group, so we destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def shard(indices: Tensor, info: DistInfo, pad: bool = True) -> Tensor:
    """This rank's part of ``indices``; with ``pad`` every rank gets the same count (wrapping around)."""
    if info.world_size == 1:
        return indices
    if pad and len(indices) % info.world_size:
        extra = info.world_size - len(indices) % info.world_size
        indices = torch.cat([indices, indices[:extra]])
    return indices[info.rank::info.world_size]


def all_reduce_sum(t: Tensor, info: DistInfo) -> Tensor:
    """Sum ``t`` over ranks (in place; a no-op for a single process)."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t
