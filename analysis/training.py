"""The optimizer's part of a training step: the update of every parameter element, as a hand formula.

Counted in steady state (from the second step on, when the momentum and moment buffers exist), as
``torch.optim``'s single-tensor code computes it (an ``add`` with ``alpha != 1`` is a mul and an add):

- ``sgd`` (the AdderNet recipe: momentum 0.9, weight decay 5e-4): ``g += wd p`` (1 mul, 1 add),
  ``b = m b + g`` (1 mul, 1 add), ``p -= lr b`` (1 mul, 1 add) per element;
- ``adam`` (torch's defaults, no weight decay): ``m.lerp_(g, 1 - b1)`` (2 add, 1 mul),
  ``v = b2 v + (1 - b2) g g`` (3 mul, 1 add), ``sqrt(v) / c2 + eps`` (sqrt, div, add),
  ``p -= s m / denom`` (div, mul, add) per element, and the step counter (1 add per tensor).

Adder layers add AdderNet's adaptive learning rate before the update (``g <- eta sqrt(k) g / ||g||``, k the
weight's elements): the norm (k mul, k - 1 add, 1 sqrt), the factor (1 div, 1 mul) and the scaling (k mul).

>>> optimizer_tally("sgd", [(10, False)])
Tally(mul=30, add=30)
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from adderconv.errors import AdderconvError

from .counts import LayerCounts, OpCount, Tally

__all__ = ["OPTIMIZERS", "optimizer_tally", "optimizer_layer", "parameter_sizes"]

#: name -> (per-element update, per-tensor extra, what is assumed)
OPTIMIZERS: dict[str, tuple[Tally, Tally, str]] = {
    "sgd": (Tally(mul=3, add=3), Tally(), "SGD, momentum 0.9, weight decay 5e-4"),
    "adam": (Tally(mul=5, add=5, sqrt=1, div=2), Tally(add=1), "Adam, torch defaults (no weight decay)"),
}


def optimizer_tally(name: str, params: Sequence[tuple[int, bool]]) -> Tally:
    """The update of parameters given as ``(elements, is an adder weight)`` with optimizer ``name``."""
    if name not in OPTIMIZERS:
        raise AdderconvError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    per_element, per_tensor, _ = OPTIMIZERS[name]
    total = Tally()
    for k, adder in params:
        total = total + per_element * k + per_tensor
        if adder:
            total = total + Tally(mul=2 * k + 1, add=k - 1, sqrt=1, div=1)
    return total


def parameter_sizes(model: nn.Module) -> list[tuple[int, bool]]:
    """Trainable parameters as ``(elements, is an adder weight)`` (an adder layer's ``weight``)."""
    out = []
    for mod in model.modules():
        adder = "Adder" in type(mod).__name__
        for name, p in mod.named_parameters(recurse=False):
            if p.requires_grad:
                out.append((p.numel(), adder and name == "weight"))
    return out


def optimizer_layer(name: str, model: nn.Module) -> LayerCounts:
    """A pseudo-layer ``(optimizer)`` holding the update line of a training step."""
    tally = optimizer_tally(name, parameter_sizes(model))
    return LayerCounts(name="(optimizer)", type=OPTIMIZERS[name][2],
                       ops=[OpCount(f"optimizer::{name}", "optimizer", tally, "optimizer")])
