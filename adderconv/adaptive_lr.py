"""AdderNet's adaptive learning rate, as a gradient transform.

For every adder layer ``l`` the gradient of its weight is rescaled before the optimizer sees it::

    grad_l <- eta * sqrt(k_l) * grad_l / ||grad_l||_2        (k_l = numel(W_l), eta = 0.2 in the paper's code)

Where it is applied matters. The default placement is *after* the full backward pass -- after DDP has
averaged gradients across ranks, after gradient accumulation, and after AMP's GradScaler has unscaled them
-- and right before ``optimizer.step()``. The transform is scale-invariant, so applying it to still-scaled
AMP gradients and then letting the scaler divide by the loss scale would shrink every adder update by that
scale: use :meth:`AdaptiveLR.step`, which orders the calls for you.

``placement="backward"`` reproduces the reference implementation, which normalises each backward call's
gradient inside the op (per micro-batch and per rank, before any reduction), for comparison. One difference
remains, by design: a weight used twice in one graph (a shared layer) is normalised once, on its summed
gradient, under either placement; the reference code normalises each call and sums the results, so a weight
used ``n`` times moves by up to ``n`` times the step there, and by one step here (the rule's intent: the update
of a layer is ``lr * eta * sqrt(k)`` in norm).

>>> model = torch.nn.Sequential(AdderConv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
>>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
>>> alr = AdaptiveLR(model, eta=0.2)
>>> model(torch.randn(2, 3, 8, 8)).sum().backward()
>>> alr.step(opt)
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch
from torch import Tensor, nn

from .layers import AdderConv1d, AdderConv2d, AdderConv3d, AdderLinear

__all__ = ["AdaptiveLR", "adaptive_scale", "adder_weights"]

ADDER_LAYERS = (AdderConv1d, AdderConv2d, AdderConv3d, AdderLinear)


def adaptive_scale(grad: Tensor, eta: float) -> Tensor:
    """``eta * sqrt(numel) * grad / ||grad||_2`` (a zero gradient stays zero).

    The norm is taken in the gradient's own precision (float64 stays float64), half precisions in float32,
    where their sum of squares cannot overflow."""
    acc = grad.detach().double() if grad.dtype == torch.float64 else grad.detach().float()
    norm = acc.norm(p=2).clamp(min=1e-12)
    return grad * (eta * math.sqrt(grad.numel()) / norm).to(grad.dtype)


def adder_weights(model: nn.Module) -> list[nn.Parameter]:
    """The weight parameter of every adder layer in ``model`` (each once, even if shared)."""
    seen: dict[int, nn.Parameter] = {}
    for module in model.modules():
        if isinstance(module, ADDER_LAYERS):
            seen.setdefault(id(module.weight), module.weight)
    return list(seen.values())


class AdaptiveLR:
    """Per-layer adaptive learning rate for the adder layers of ``model``.

    Args:
        model: the network (a DDP wrapper is fine: its parameters are the module's).
        eta: the paper's hyper-parameter (0.2 in the reference code).
        placement: ``"step"`` (default; call :meth:`apply` or :meth:`step` before the optimizer step) or
            ``"backward"`` (reference behaviour: a hook rescales each backward's gradient as it is produced).
    """

    def __init__(self, model: nn.Module, eta: float = 0.2,
                 placement: Literal["step", "backward"] = "step",
                 params: Iterable[nn.Parameter] | None = None) -> None:
        if eta <= 0:
            raise ValueError(f"eta must be positive, got {eta}")
        if placement not in ("step", "backward"):
            raise ValueError(f"placement must be 'step' or 'backward', got {placement!r}")
        self.eta, self.placement = eta, placement
        self.params = list(params) if params is not None else adder_weights(model)
        self._hooks = [p.register_hook(lambda g: adaptive_scale(g, self.eta)) for p in self.params] \
            if placement == "backward" else []

    @torch.no_grad()
    def apply(self) -> None:
        """Rescale the accumulated gradients in place (no-op for ``placement='backward'``)."""
        if self.placement != "step":
            return
        for p in self.params:
            if p.grad is not None:
                p.grad.copy_(adaptive_scale(p.grad, self.eta))

    def step(self, optimizer: torch.optim.Optimizer, scaler: "torch.amp.GradScaler | None" = None) -> None:
        """Unscale (AMP), rescale the adder gradients, then step the optimizer (through the scaler if given)."""
        if scaler is None:
            self.apply()
            optimizer.step()
            return
        scaler.unscale_(optimizer)
        self.apply()
        scaler.step(optimizer)

    def remove(self) -> None:
        """Detach the backward hooks (``placement='backward'``)."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
