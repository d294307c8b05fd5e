"""Batches of a dataset (:func:`loader`) and the evaluation loop (accuracy and loss, or PSNR), shared by
fine-tuning, quantisation and the benchmarks.

>>> from adderconv import get_model
>>> from adderconv.data import load_data
>>> data = load_data("digits", (1, 32, 32), limit=64)
>>> sorted(evaluate(get_model("lenet5_bn").eval(), data.test, "classify", 32, torch.device("cpu")))
['acc', 'loss', 'n']
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, default_collate

from .ranks import DistInfo, all_reduce_sum, shard

__all__ = ["evaluate", "loader", "psnr", "autocast"]


def _collate(batch: Any) -> Any:
    # TensorPairs.__getitems__ already returns a batched (x, y); per-item datasets go through default_collate.
    return batch if isinstance(batch, tuple) else default_collate(batch)


def loader(ds: Dataset, indices: Tensor, batch_size: int, num_workers: int = 0, drop_tail: int = 0) -> DataLoader:
    """Batches of ``ds`` in the order of ``indices``; a tail batch smaller than ``drop_tail`` is dropped."""
    idx = indices.tolist()
    batches = [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    if batches and len(batches[-1]) < drop_tail:
        batches.pop()
    return DataLoader(ds, batch_sampler=batches, num_workers=num_workers, collate_fn=_collate)


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` on ``device`` at ``dtype``, or nothing when ``dtype`` is None (AMP off)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def psnr(mse: float, peak: float = 1.0) -> float:
    return float("inf") if mse <= 0 else 10 * math.log10(peak * peak / mse)


@torch.no_grad()
def evaluate(model: nn.Module, ds: Dataset, task: str, batch_size: int, device: torch.device,
             amp_dtype: torch.dtype | None = None, info: DistInfo | None = None, num_workers: int = 0,
             bicubic: bool = False) -> dict[str, float]:
    """Loss and accuracy (classification) or PSNR over all pixels of the set (SR; outputs clamped to [0, 1]).

    Under DDP each rank evaluates its share and the sums are all-reduced. ``bicubic`` adds the PSNR of the
    degraded input itself (SR's baseline).
    """
    info = info or DistInfo()
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)   # loss sum, correct / squared error, count, bicubic sq. error
    for x, y in loader(ds, shard(torch.arange(len(ds)), info, pad=False), batch_size, num_workers):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            out = model(x)
        out = out.float()
        if task == "sr":
            sums[0] += F.l1_loss(out, y, reduction="sum").item()
            sums[1] += (out.clamp(0, 1) - y).pow(2).sum().item()
            sums[3] += (x.float() - y).pow(2).sum().item() if bicubic else 0.0
            sums[2] += y.numel()
        else:
            sums[0] += F.cross_entropy(out, y, reduction="sum").item()
            sums[1] += (out.argmax(1) == y).sum().item()
            sums[2] += len(y)
    all_reduce_sum(sums, info)
    model.train(was_training)
    n = max(sums[2].item(), 1.0)
    if task == "sr":
        pixels_per_item = ds[0][1].numel() if len(ds) else 1
        res = {"loss": sums[0].item() / n, "psnr": psnr(sums[1].item() / n),
               "n": n / pixels_per_item}
        if bicubic:
            res["bicubic_psnr"] = psnr(sums[3].item() / n)
        return res
    return {"loss": sums[0].item() / n, "acc": sums[1].item() / n, "n": n}
