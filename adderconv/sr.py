"""AdderSR's parts (CVPR 2021): a learnable power activation and the self-shortcut block.

Adder layers cannot learn the identity mapping (|x - w| summed is never x), hence the self-shortcut
``Y = adder(X) + X``; and they cannot act as high-pass filters, hence the power activation
``sign(x) * |x|^alpha`` that sharpens (alpha > 1) or flattens (alpha < 1) responses.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from .layers import AdderConv2d

__all__ = ["PowerActivation", "AdderSRBlock"]


class PowerActivation(nn.Module):
    """``sign(x) * |x| ** alpha`` with a learnable ``alpha`` per channel or per layer.

    Near zero, ``|x| ** alpha`` has an infinite slope for alpha < 1 and ``d/d alpha = |x|^alpha log|x|``
    is 0 * -inf; both are made finite by evaluating on ``max(|x|, eps)``.

    >>> act = PowerActivation(8)
    >>> act(torch.randn(2, 8, 4, 4)).shape
    torch.Size([2, 8, 4, 4])
    """

    def __init__(self, channels: int = 1, init: float = 1.0, per: Literal["channel", "layer"] = "channel",
                 eps: float = 1e-6) -> None:
        super().__init__()
        if per not in ("channel", "layer"):
            raise ValueError(f"per must be 'channel' or 'layer', got {per!r}")
        self.per, self.eps = per, eps
        self.alpha = nn.Parameter(torch.full((channels if per == "channel" else 1,), float(init)))

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.alpha.view(1, -1, *([1] * (x.dim() - 2))) if self.per == "channel" else self.alpha
        magnitude = x.abs().clamp(min=self.eps)
        return torch.sign(x) * magnitude.pow(alpha.to(x.dtype))

    def extra_repr(self) -> str:
        return f"channels={self.alpha.numel()}, per={self.per!r}"


class AdderSRBlock(nn.Module):
    """AdderSR's block: adder -> BN -> (+ identity) -> ReLU -> power activation.

    ``layer`` lets the same block hold a convolution for the CNN baseline; ``shortcut`` and ``power``
    switch the two AdderSR additions off for the paper's ablation.
    """

    def __init__(self, channels: int, kernel_size: int = 3, shortcut: bool = True, power: bool = True,
                 layer: type[nn.Module] = AdderConv2d) -> None:
        super().__init__()
        self.body = layer(channels, channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.shortcut = shortcut
        self.act = nn.ReLU(inplace=False)
        self.power = PowerActivation(channels) if power else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn(self.body(x))
        if self.shortcut:
            y = y + x
        return self.power(self.act(y))
