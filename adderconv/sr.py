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


class _SignedPower(torch.autograd.Function):
    """``sign(x) * max(|x|, eps) ** alpha`` with a hand-written backward.

    Autograd of ``pow(tensor, tensor)`` evaluates a second ``pow`` and a ``log`` in the backward; here the
    forward keeps ``log m`` and the output, so the backward is multiplications only.
    """

    @staticmethod
    def forward(ctx, x: Tensor, alpha: Tensor, eps: float) -> Tensor:
        m = x.abs().clamp_(min=eps)
        log_m = m.log()
        y = torch.sign(x).mul_(torch.exp(log_m * alpha))
        ctx.save_for_backward(alpha, m, log_m, y)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        alpha, m, log_m, y = ctx.saved_tensors
        gx = ga = None
        if ctx.needs_input_grad[0]:      # d/dx = alpha |x|^(alpha-1) = alpha |y| / m; 0 where the clamp held
            gx = (grad * alpha * y.abs() / m).masked_fill_(m <= ctx.eps, 0)
        if ctx.needs_input_grad[1]:      # d/d alpha = y log m, summed over the broadcast dimensions
            ga = (grad * y * log_m).sum_to_size(alpha.shape)
        return gx, ga, None


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
        alpha = alpha.to(x.dtype)
        if torch.is_grad_enabled() and (x.requires_grad or alpha.requires_grad) and not _tracing():
            return _SignedPower.apply(x, alpha, self.eps)
        return torch.sign(x) * x.abs().clamp(min=self.eps).pow(alpha)   # inference, export and op counting

    def extra_repr(self) -> str:
        return f"channels={self.alpha.numel()}, per={self.per!r}"


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


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
