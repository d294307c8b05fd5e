"""Quantisation-aware fine-tuning: train an adder network through the arithmetic its quantised copy will do.

:func:`prepare_qat` calibrates the grids exactly as :func:`adderconv.quantize` does (same ``bits``, ``groups``,
method) and wraps every adder layer it would quantise in a :class:`FakeQuantAdder`: the layer's input is
rounded onto each of its grids and its weight onto its channel's grid (straight-through: the gradient passes
as if nothing were rounded, and stops for inputs clipped at a grid's edge), so training sees the rounding the
integer layer will make. A weight outside its grid stays as it is: for inputs on the grid
``|x - w| = |x - clip(w)| + dist(w, grid)`` exactly, the integer layer's clipped code plus its folded constant
(:mod:`.scheme`), so the float distance already is the quantised one. The grids stay fixed while training; the
BatchNorms train as usual. :func:`adderconv.quantize` of the trained model (with the same ``bits`` and
``groups``) uses those grids, so its outputs equal the fake-quantised model's in eval mode up to float rounding.

>>> import torch, adderconv
>>> net = adderconv.get_model("lenet5_bn_adder")
>>> qat = prepare_qat(net, torch.randn(16, 1, 32, 32), bits=6)
>>> type(qat.get_submodule("4")).__name__
'FakeQuantAdder'
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .scheme import Grid, fake_quant

__all__ = ["FakeQuantAdder", "prepare_qat", "fake_quant"]


class FakeQuantAdder(nn.Module):
    """An adder layer (``adder``, trainable) run on fake-quantised inputs and weights: with one grid per group of
    output channels (``channel_group``), the input rounded onto each group's grid and each channel's output taken
    from its group's run."""

    def __init__(self, adder: nn.Module, grids: list[Grid], channel_group: Tensor | None, groups: int) -> None:
        super().__init__()
        self.adder, self.grids, self.bits, self.groups = adder, list(grids), grids[0].bits, groups
        out = adder.weight.shape[0]
        self.register_buffer("channel_group", channel_group.clone() if channel_group is not None
                             else torch.zeros(out, dtype=torch.int64))

    def forward(self, x: Tensor) -> Tensor:
        w = self.adder.weight
        y = None
        for g, grid in enumerate(self.grids):
            mine = (self.channel_group == g).to(w.device)
            wq = torch.where(mine.view(-1, *[1] * (w.dim() - 1)), fake_quant(w, grid, keep_outside=True), w)
            yg = functional_call(self.adder, {"weight": wq}, (fake_quant(x, grid),))
            if len(self.grids) == 1:
                return yg
            mask = mine.view(1, -1, *[1] * (yg.dim() - 2))
            y = torch.where(mask, yg, y if y is not None else torch.zeros_like(yg))
        return y

    def extra_repr(self) -> str:
        return f"bits={self.bits}, grids={len(self.grids)}"


def prepare_qat(model: nn.Module, calibration: Tensor | Iterable[Any], *, bits: int = 8, groups: int = 1,
                method: str = "percentile", percentile: float = 99.99,
                max_batches: int | None = None) -> nn.Module:
    """A trainable copy of ``model`` whose adder layers train through fake quantisation on the grids
    :func:`adderconv.quantize` chooses with the same arguments (see the module docstring); ``model`` is not
    changed. Train it as any model, then ``adderconv.quantize(trained, None, bits=bits, groups=groups)``."""
    from .api import quantize, set_module
    from .layers import QuantAdderConv2d

    q = quantize(model, calibration, bits=bits, groups=groups, method=method, percentile=percentile,
                 max_batches=max_batches)
    out = copy.deepcopy(model)
    for n, m in q.named_modules():
        if isinstance(m, QuantAdderConv2d):
            group = m.channel_group if m.grid_groups > 1 else None
            set_module(out, n, FakeQuantAdder(out.get_submodule(n), m.grids, group, groups))
    return out.train(model.training)
