"""Batch transforms of training: SR's bicubic degradation and the per-batch random augmentation.

>>> flat = torch.full((1, 1, 8, 8), 0.5)
>>> torch.allclose(degrade_bicubic(flat, 2), flat)
True
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["degrade_bicubic", "augment_batch"]


def degrade_bicubic(hr: Tensor, scale: int) -> Tensor:
    """(N, C, H, W) -> bicubic x``scale`` down (antialiased) then bicubic up to the same size (VDSR input)."""
    h, w = hr.shape[-2:]
    lr = F.interpolate(hr, size=(h // scale, w // scale), mode="bicubic", align_corners=False, antialias=True)
    return F.interpolate(lr, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


def augment_batch(kind: str, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random augmentation of one training batch, drawn from ``generator`` (seeded per epoch: resumable).

    ``crop_flip``: CIFAR's 4-pixel zero-padded random crop + horizontal flip; ``flip``: horizontal flip
    (applied to the SR target too).
    """
    if kind == "none":
        return x, y
    n = len(x)
    flip = torch.rand(n, generator=generator) < 0.5
    if kind == "crop_flip":
        h, w = x.shape[-2:]
        pad = F.pad(x, (4, 4, 4, 4))
        dy, dx = torch.randint(0, 9, (2, n), generator=generator).tolist()
        x = torch.stack([pad[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    m = flip.view(-1, *([1] * (x.dim() - 1))).to(x.device)
    x = torch.where(m, x.flip(-1), x)
    if y.dim() == x.dim():   # an image target (SR) flips with its input
        y = torch.where(m, y.flip(-1), y)
    return x, y
