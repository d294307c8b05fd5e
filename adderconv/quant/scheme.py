"""The integer grid of one adder layer (4 to 8 bits) and how calibration chooses it.

``|x - w| = s * |q(x) - q(w)|`` holds only when input and weight are codes on one grid, so an adder layer has
ONE scale ``s`` and zero point ``z`` shared by its input and its weight, per tensor. Per-channel weight scales
(the usual int8 choice for convolutions) cannot work: output channel ``o`` would compare ``x / s_in`` with
``w / s_o``, and ``|a/s_in - b/s_o|`` is not a multiple of ``|a - b|`` for any rescaling of the sum. Codes are
unsigned, ``q(v) = clamp(round(v / s) + z, 0, 2^N - 1)`` at N bits (4..8), held in bytes whatever N: the uint8
SAD kernels serve every width unchanged (a narrower grid only uses fewer of a byte's codes); float 0 is exactly
code ``z`` (zero padding is the zero point), so the grid's range always contains 0.

The grid spans the INPUT's range only. A weight outside it is clipped to it, exactly: for every x in
[lo, hi] and w > hi, ``|x - w| = |x - hi| + (w - hi)`` (and the mirror for w < lo), so clipping adds a constant
per output channel, ``C_o = sum_j dist(w_oj, [lo, hi])``, which the layer's epilogue subtracts
(:func:`adderconv.quant.layers.affine_of`). Adder weights often lie far outside their inputs (an SR net's
reach +-80 over inputs in [0, 1.3]); a grid joined with the weights would give those inputs 2 codes.

Group-shared grids (Nie et al., NeurIPS 2022; AdderNet 2.0): with ``groups`` k > 1 a layer's output channels are
sorted by their largest weight magnitude ``max_j |w_oj|`` and cut into k contiguous groups of (near) equal size
(:func:`split_channels`; a sort, not k-means: deterministic, and no group of one outlier channel). Each group
gets its own grid and the input is quantised once per group. Its range is chosen (:func:`group_grids`) among
the layer's calibrated input range scaled by 0.3 .. 2 (clipped toward small weights, extended toward large ones)
by the mean squared error of the group's outputs on a few calibration inputs, the layer's arithmetic simulated
in float (:func:`fake_quant`). A per-term error of ``|x - w|`` over sampled pairs was tried first and chose
worse grids than the calibrated one on a trained LeNet: it misses that clipping inputs biases every term of a
sum the same way. The calibrated range is a candidate, so no group is worse than one grid on those inputs.

Calibration observes the layer's input on real batches and chooses the range:
- ``minmax``: the observed input range (nothing saturates on the batches seen);
- ``percentile``: the input range clipped at the given percentile (lower and upper tails);
- ``mse``: the clip of the observed range that minimises the inputs' mean squared quantisation error,
  searched over 20 clips.

>>> g = Grid.from_range(-1.0, 3.0)
>>> (round(g.scale, 6), g.zero_point)
(0.015686, 64)
>>> g4 = Grid.from_range(-1.0, 3.0, bits=4)
>>> (round(g4.scale, 6), g4.zero_point, g4.qmax)
(0.266667, 4, 15)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..errors import AdderconvError

__all__ = ["Grid", "Observer", "METHODS", "BITS", "check_bits", "choose_grid", "split_channels", "group_grids",
           "fake_quant"]

BITS = range(4, 9)   # code widths: 4 bits is where published adder PTQ stops; 8 is a byte
METHODS = ("minmax", "percentile", "mse")
_SAMPLE = 1 << 18   # input values kept per layer for percentile / MSE (a random subsample across batches)
_KEEP = 1 << 17     # input values kept as whole inputs (at least 4) for the group-grid search


def check_bits(bits: object) -> int:
    """``bits`` as an int in 4..8, else :class:`AdderconvError` (one line, in library terms)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in BITS:
        raise AdderconvError(f"`bits` must be an integer from {BITS[0]} to {BITS[-1]} (codes on 0 .. 2^bits - 1), "
                             f"got {bits!r}")
    return bits


@dataclass(frozen=True)
class Grid:
    """Scale (float32-representable), zero point and code width of one shared grid (codes 0 .. 2^bits - 1)."""

    scale: float
    zero_point: int
    bits: int = 8

    @property
    def qmax(self) -> int:
        """The largest code, 2^bits - 1."""
        return (1 << self.bits) - 1

    @classmethod
    def from_range(cls, lo: float, hi: float, bits: int = 8) -> Grid:
        qmax = (1 << check_bits(bits)) - 1
        lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
        if hi - lo <= 0:
            hi = lo + 1e-8
        scale = float(torch.tensor((hi - lo) / qmax, dtype=torch.float32))
        zero_point = int(min(qmax, max(0, round(-lo / scale))))
        return cls(scale, zero_point, bits)

    def codes(self, v: Tensor) -> Tensor:
        """uint8 codes of ``v`` (the same float32 arithmetic as the kernels' quantiser, then the width's clamp)."""
        scale = torch.tensor(self.scale, dtype=torch.float32)
        return (torch.round(v.to(torch.float32) / scale) + self.zero_point).clamp_(0, self.qmax).to(torch.uint8)

    def values(self, q: Tensor) -> Tensor:
        return (q.to(torch.float32) - self.zero_point) * self.scale

    @property
    def bounds(self) -> tuple[float, float]:
        """The float range the codes represent, ``[(0 - z) s, (2^bits - 1 - z) s]``."""
        return (-self.zero_point * self.scale, (self.qmax - self.zero_point) * self.scale)


class Observer:
    """Running min/max and a bounded random sample of one layer's inputs over the calibration batches."""

    def __init__(self, seed: int = 0) -> None:
        self.lo, self.hi, self.count = float("inf"), float("-inf"), 0
        self.sample: list[Tensor] = []
        self.kept: list[Tensor] = []   # the first whole inputs, up to _KEEP values: the group-grid search runs on them
        self._gen = torch.Generator().manual_seed(seed)

    def __call__(self, x: Tensor) -> None:
        have = sum(t.shape[0] for t in self.kept)
        per = max(1, x[0].numel()) if x.dim() and x.shape[0] else 1
        if x.dim() and have * per < _KEEP:
            self.kept.append(x.detach().float()[:max(4 - have, (_KEEP - have * per) // per)].clone())
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


def choose_grid(obs: Observer, method: str = "percentile", percentile: float = 99.99, bits: int = 8) -> Grid:
    """The shared grid of one layer from its observed inputs (weights are clipped to it exactly, see above)."""
    if method not in METHODS:
        raise AdderconvError(f"calibration method must be one of {', '.join(METHODS)}, got {method!r}")
    if obs.count == 0:
        raise AdderconvError("a quantised layer saw no calibration data (is it reached by the model's forward?)")
    if method == "minmax":
        return Grid.from_range(obs.lo, obs.hi, bits)
    sample = torch.cat(obs.sample)
    if method == "percentile":
        if not 50.0 < percentile <= 100.0:
            raise AdderconvError(f"the calibration percentile must be in (50, 100], got {percentile}")
        q = torch.quantile(sample[:1 << 24], torch.tensor([1 - percentile / 100, percentile / 100])).tolist()
        return Grid.from_range(q[0], q[1], bits)
    lo, hi = min(obs.lo, 0.0), max(obs.hi, 0.0)
    best: tuple[float, Grid] | None = None
    for k in range(20):
        clip = 1.0 - 0.7 * k / 19   # 1.0 ... 0.3 of the joined range
        grid = Grid.from_range(lo * clip, hi * clip, bits)
        err = _mse(sample, grid)
        if best is None or err < best[0]:
            best = (err, grid)
    return best[1]


def split_channels(weight: Tensor, k: int) -> Tensor:
    """Each output channel's group (int64, 0 .. k-1): channels sorted by ``max |w|``, cut into k contiguous groups
    whose sizes differ by at most one.

    >>> split_channels(torch.tensor([[3.0], [0.1], [2.0], [0.2]]), 2).tolist()
    [1, 0, 1, 0]
    """
    out = weight.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= out:
        raise AdderconvError(f"`groups` must be an integer from 1 to the layer's {out} output channels, got {k!r}")
    order = torch.argsort(weight.detach().flatten(1).abs().amax(1).cpu(), stable=True)
    group_of = torch.empty(out, dtype=torch.int64)
    group_of[order] = torch.arange(out, dtype=torch.int64) * k // out
    return group_of


def fake_quant(v: Tensor, grid: Grid, keep_outside: bool = False) -> Tensor:
    """``v`` rounded onto ``grid`` (its codes' values), straight-through for gradients; ``keep_outside``: values
    outside the grid's range are kept (weights: for inputs on the grid the clamp is exact, so a weight's float
    distance is already the integer layer's), else clipped to it with a zero gradient (inputs)."""
    q = grid.values(grid.codes(v.detach())).to(v.dtype)
    lo, hi = grid.bounds
    inside = (v >= lo) & (v <= hi)
    return torch.where(inside, v + (q - v).detach(), v if keep_outside else q)


_CLIPS = tuple(0.3 + 0.05 * i for i in range(14)) + (1.0, 1.25, 1.5, 2.0)


@torch.no_grad()
def group_grids(obs: Observer, adder: nn.Module, group_of: Tensor, base: Grid) -> list[Grid]:
    """One grid per group of output channels: the ``base`` (calibrated) range scaled by each of ``_CLIPS``, the
    candidate whose layer outputs on the observer's kept batch are closest (mean squared error over the group's
    channels) to the float layer's, the layer's arithmetic simulated by :func:`fake_quant`."""
    if not obs.kept:
        raise AdderconvError("a quantised layer saw no calibration data (is it reached by the model's forward?)")
    x = torch.cat(obs.kept)
    ref = adder(x)
    lo, hi = base.bounds
    candidates = [base] + [Grid.from_range(lo * f, hi * f, base.bits) for f in _CLIPS if f != 1.0]
    k = int(group_of.max()) + 1
    errs = torch.empty(len(candidates), k, dtype=torch.float64)
    for i, c in enumerate(candidates):
        y = functional_call(adder, {"weight": fake_quant(adder.weight, c, keep_outside=True)}, (fake_quant(x, c),))
        per_channel = (y - ref).double().pow(2).transpose(0, 1).flatten(1).mean(1)
        errs[i] = torch.zeros(k, dtype=torch.float64).index_add_(0, group_of, per_channel)
    return [candidates[int(i)] for i in errs.argmin(0)]   # ties: the first, the calibrated range
