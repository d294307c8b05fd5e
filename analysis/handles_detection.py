"""Handles for sorting and selection (``sort``, ``topk``, ``_unique2``, ``nonzero``) and for torchvision's
detection ops (``nms``, ``roi_align`` and its backward): what a detector's heads run between the convolutions.

Comparison counts are those of the algorithms the CPU kernels use, at their bound where the data decides:

- ``sort`` of ``n`` elements: ``n * ceil(log2 n)`` comparisons per sorted row (a merge sort's bound);
- ``topk`` of ``k`` from ``n``: a heap of the ``k`` best, each element compared with its smallest (1) and, at
  worst, sifted in (``ceil(log2 k)``): ``n * (1 + ceil(log2 k))`` per row;
- ``_unique2``: a sort of the flattened input and a comparison of each element with its neighbour;
- ``nonzero``: one comparison with zero per element; ``argmax``/``argmin`` as ``amax`` (``n - 1`` per result);
- ``nms`` over ``N`` boxes keeping ``K``: the sort by score, the areas (2 add, 1 mul per box), and for each kept
  box its IoU with every box after it (``K (2N - K - 1) / 2`` pairs at most: the kernel skips boxes already
  suppressed, which shapes do not show): per pair 4 comparisons for the intersection's corners, 2 to clamp its
  sides at 0, 2 subtractions for the sides, 1 product, the union (2 add), 1 division and the threshold test;
- ``roi_align`` with ``S = sampling_ratio^2`` points per bin: per point and box (shared by the channels) the
  coordinates and the four bilinear weights (6 mul, 6 add); per output element and point the weighted sum of 4
  neighbours into the bin's sum (4 mul, 4 acc), then the mean (1 div). Its backward recomputes the weights per
  element and point and adds the 4 weighted gradients into the input's (10 mul, 10 add), after one division.
  ``sampling_ratio <= 0`` sizes the grid from each box (data): listed as unsupported, never guessed.

torchvision's ops exist only once torchvision is imported; :func:`register_torchvision` registers them then
(the captures call it before counting), so importing the counter never imports torchvision.

>>> import torch
>>> from adderconv.analysis.registry import HANDLES
>>> HANDLES[torch.ops.aten.sort]([(2, 8), (2, 8)], dict(self=(2, 8), dim=-1))
Tally(cmp=48)
"""
from __future__ import annotations

import math
import sys
import threading
from typing import Any

from .counts import Tally
from .registry import HANDLES, register

__all__ = ["register_torchvision", "sort_comparisons"]


def _shape(v: Any, what: str) -> tuple[int, ...]:
    if not isinstance(v, tuple):
        raise ValueError(f"expected a tensor shape for {what}, got {v!r}")
    return v


def _log2(n: int) -> int:
    return math.ceil(math.log2(n)) if n > 1 else 0


def sort_comparisons(n: int) -> int:
    """Comparisons to sort ``n`` elements (a merge sort's bound, ``n * ceil(log2 n)``)."""
    return n * _log2(n)


def _rows(x: tuple[int, ...], dim: int) -> tuple[int, int]:
    """(rows, length) of a tensor seen along ``dim`` (a 0-d tensor is one row of one)."""
    if not x:
        return 1, 1
    n = x[int(dim) % len(x)]
    return math.prod(x) // max(n, 1), n


@register("aten::sort", category="reduce")
def _sort(outs, self, dim=-1):
    rows, n = _rows(_shape(self, "input"), dim)
    return Tally(cmp=rows * sort_comparisons(n))


@register("aten::topk", category="reduce")
def _topk(outs, self, k, dim=-1):
    rows, n = _rows(_shape(self, "input"), dim)
    return Tally(cmp=rows * n * (1 + _log2(int(k))))


@register("aten::_unique2", category="reduce")
def _unique(outs, self):
    n = math.prod(_shape(self, "input"))
    return Tally(cmp=sort_comparisons(n) + max(n - 1, 0))


@register("aten::argmax", "aten::argmin", category="reduce")
def _argmax(outs, self):
    return Tally(cmp=math.prod(_shape(self, "input")) - math.prod(_shape(outs[0], "output")))


@register("aten::nonzero", category="reduce")
def _nonzero(outs, self):
    return Tally(cmp=math.prod(_shape(self, "input")))


_IOU = Tally(cmp=4 + 2 + 1, add=2 + 2, mul=1, div=1)     # corners, clamps, threshold; sides, union; area; ratio


def nms_tally(boxes: int, kept: int) -> Tally:
    pairs = kept * (2 * boxes - kept - 1) // 2
    return Tally(cmp=sort_comparisons(boxes)) + Tally(add=2, mul=1) * boxes + _IOU * pairs


def _nms(outs, dets):
    return nms_tally(_shape(dets, "dets")[0], _shape(outs[0], "kept indices")[0])


def _samples(sampling_ratio: int) -> int:
    if int(sampling_ratio) <= 0:
        raise ValueError("sampling_ratio <= 0 sizes each box's sampling grid from its coordinates (data)")
    return int(sampling_ratio) ** 2


def _roi_align(outs, sampling_ratio):
    out = _shape(outs[0], "output")                    # (K, C, PH, PW)
    s = _samples(sampling_ratio)
    points = out[0] * math.prod(out[2:]) * s
    n = math.prod(out)
    return Tally(mul=6 * points + 4 * s * n, add=6 * points, acc=4 * s * n, div=n)


def _roi_align_backward(outs, grad, sampling_ratio):
    n, s = math.prod(_shape(grad, "grad")), _samples(sampling_ratio)
    return Tally(div=n, mul=10 * s * n, add=10 * s * n)


def register_torchvision() -> None:
    """Register torchvision's detection ops, once, if torchvision is imported (its ops exist only then)."""
    if "torchvision" not in sys.modules:
        return
    import torch

    ops = getattr(torch.ops, "torchvision", None)
    try:
        nms, roi_align = ops.nms, ops.roi_align
    except (AttributeError, RuntimeError):             # torchvision without its compiled ops
        return
    with _LOCK:
        if nms in HANDLES:
            return
        register(nms, category="detection")(_nms)
        register(roi_align, category="detection")(_roi_align)
        backward = getattr(ops, "_roi_align_backward", None)
        if backward is not None:
            register(backward, category="detection")(_roi_align_backward)


_LOCK = threading.Lock()
