"""DDP plumbing for ``torchrun --nproc-per-node N -m adderconv finetune ...``.

torchrun sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``; :func:`setup` joins the process
group (NCCL on GPUs, gloo on CPU). Every rank walks the same seeded permutation of the training set and
takes every ``world``-th index of it, padded so all ranks run the same number of steps (DDP needs that).
The batch size is global: each rank gets ``batch_size // world``. How the data is shared among the ranks
(:class:`DistInfo`, :func:`shard`, :func:`all_reduce_sum`) lives in :mod:`adderconv.data.ranks`.

>>> info = setup("cpu")          # no torchrun environment: a single process
>>> (info.rank, info.world_size, info.enabled)
(0, 1, False)
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from ..data.ranks import DistInfo, all_reduce_sum, shard

__all__ = ["DistInfo", "setup", "shard", "all_reduce_sum", "teardown"]


def setup(device_type: str) -> DistInfo:
    """Join the process group described by torchrun's environment (or an existing one); else single process."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                        local_rank=int(os.environ.get("LOCAL_RANK", 0)), enabled=dist.get_world_size() > 1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0))
    if device_type == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local, enabled=True, owns_group=True)


def teardown(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()
