"""DDP plumbing for ``torchrun --nproc-per-node N -m adderconv finetune ...``.

torchrun sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``; :func:`setup` joins the process
group (NCCL on GPUs, gloo on CPU). Every rank walks the same seeded permutation of the training set and
takes every ``world``-th index of it, padded so all ranks run the same number of steps (DDP needs that).
The batch size is global: each rank gets ``batch_size // world``.

>>> info = setup("cpu")          # no torchrun environment: a single process
>>> (info.rank, info.world_size, info.enabled)
(0, 1, False)
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["DistInfo", "setup", "shard", "all_reduce_sum", "teardown"]


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


def setup(device_type: str) -> DistInfo:
    """Join the process group described by torchrun's environment (or an existing one); else single process."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)),
                        dist.get_world_size() > 1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0))
    if device_type == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistInfo(rank, world, local, True, owns_group=True)


def teardown(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


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
