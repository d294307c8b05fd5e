"""The int8 grid of one adder layer and how calibration chooses it.

``|x - w| = s * |q(x) - q(w)|`` holds only when input and weight are codes on one grid, so an adder layer has
ONE scale ``s`` and zero point ``z`` shared by its input and its weight, per tensor. Per-channel weight scales
(the usual int8 choice for convolutions) cannot work: output channel ``o`` would compare ``x / s_in`` with
``w / s_o``, and ``|a/s_in - b/s_o|`` is not a multiple of ``|a - b|`` for any rescaling of the sum. Codes are
unsigned 8-bit, ``q(v) = clamp(round(v / s) + z, 0, 255)``; float 0 is exactly code ``z`` (zero padding is the
zero point), so the grid's range always contains 0.

The grid spans the INPUT's range only. A weight outside it is clipped to it, exactly: for every x in
[lo, hi] and w > hi, ``|x - w| = |x - hi| + (w - hi)`` (and the mirror for w < lo), so clipping adds a constant
per output channel, ``C_o = sum_j dist(w_oj, [lo, hi])``, which the layer's epilogue subtracts
(:func:`adderconv.quant.layers.affine_of`). Adder weights often lie far outside their inputs (an SR net's
reach +-80 over inputs in [0, 1.3]); a grid joined with the weights would give those inputs 2 codes.

Calibration observes the layer's input on real batches and chooses the range:
- ``minmax``: the observed input range (nothing saturates on the batches seen);
- ``percentile``: the input range clipped at the given percentile (lower and upper tails);
- ``mse``: the clip of the observed range that minimises the inputs' mean squared quantisation error,
  searched over 20 clips.

>>> g = Grid.from_range(-1.0, 3.0)
>>> (round(g.scale, 6), g.zero_point)
(0.015686, 64)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import AdderconvError

__all__ = ["Grid", "Observer", "METHODS", "choose_grid"]

METHODS = ("minmax", "percentile", "mse")
_SAMPLE = 1 << 18   # input values kept per layer for percentile / MSE (a random subsample across batches)


@dataclass(frozen=True)
class Grid:
    """Scale (float32-representable) and zero point of one layer's shared uint8 grid."""

    scale: float
    zero_point: int

    @classmethod
    def from_range(cls, lo: float, hi: float) -> Grid:
        lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
        if hi - lo <= 0:
            hi = lo + 1e-8
        scale = float(torch.tensor((hi - lo) / 255.0, dtype=torch.float32))
        zero_point = int(min(255, max(0, round(-lo / scale))))
        return cls(scale, zero_point)

    def codes(self, v: Tensor) -> Tensor:
        """uint8 codes of ``v`` (the same float32 arithmetic as the kernels' quantiser)."""
        scale = torch.tensor(self.scale, dtype=torch.float32)
        return (torch.round(v.to(torch.float32) / scale) + self.zero_point).clamp_(0, 255).to(torch.uint8)

    def values(self, q: Tensor) -> Tensor:
        return (q.to(torch.float32) - self.zero_point) * self.scale

    @property
    def bounds(self) -> tuple[float, float]:
        """The float range the codes represent, ``[(0 - z) s, (255 - z) s]``."""
        return (-self.zero_point * self.scale, (255 - self.zero_point) * self.scale)


class Observer:
    """Running min/max and a bounded random sample of one layer's inputs over the calibration batches."""

    def __init__(self, seed: int = 0) -> None:
        self.lo, self.hi, self.count = float("inf"), float("-inf"), 0
        self.sample: list[Tensor] = []
        self._gen = torch.Generator().manual_seed(seed)

    def __call__(self, x: Tensor) -> None:
        x = x.detach().float().flatten()
        self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
        self.count += x.numel()
        keep = min(x.numel(), _SAMPLE // 4)
        self.sample.append(x[torch.randint(0, x.numel(), (keep,), generator=self._gen)] if keep < x.numel() else x)
        if sum(s.numel() for s in self.sample) > 2 * _SAMPLE:
            merged = torch.cat(self.sample)
            self.sample = [merged[torch.randperm(merged.numel(), generator=self._gen)[:_SAMPLE]]]


def _mse(values: Tensor, grid: Grid) -> float:
    return float((grid.values(grid.codes(values)) - values).pow(2).mean())


def choose_grid(obs: Observer, method: str = "percentile", percentile: float = 99.99) -> Grid:
    """The shared grid of one layer from its observed inputs (weights are clipped to it exactly, see above)."""
    if method not in METHODS:
        raise AdderconvError(f"calibration method must be one of {', '.join(METHODS)}, got {method!r}")
    if obs.count == 0:
        raise AdderconvError("a quantised layer saw no calibration data (is it reached by the model's forward?)")
    if method == "minmax":
        return Grid.from_range(obs.lo, obs.hi)
    sample = torch.cat(obs.sample)
    if method == "percentile":
        if not 50.0 < percentile <= 100.0:
            raise AdderconvError(f"the calibration percentile must be in (50, 100], got {percentile}")
        q = torch.quantile(sample[:1 << 24], torch.tensor([1 - percentile / 100, percentile / 100])).tolist()
        return Grid.from_range(q[0], q[1])
    lo, hi = min(obs.lo, 0.0), max(obs.hi, 0.0)
    best: tuple[float, Grid] | None = None
    for k in range(20):
        clip = 1.0 - 0.7 * k / 19   # 1.0 ... 0.3 of the joined range
        grid = Grid.from_range(lo * clip, hi * clip)
        err = _mse(sample, grid)
        if best is None or err < best[0]:
            best = (err, grid)
    return best[1]
