"""The adder layers as functions with ``torch.nn.functional``'s signatures: one definition of padding, bias and
dimensionality that the layers, the ATen rewrite and the ONNX export all call.

- :func:`adder_conv` is ``F.conv1d``/``F.conv2d``/``F.conv3d`` (chosen by the weight's rank), ``'same'`` and
  ``'valid'`` padding included, computing ``-sum |x - w|``;
- :func:`adder_linear` is ``F.linear``, computing ``-sum_i |x_i - W_oi|``.

>>> import torch
>>> adder_conv(torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3), padding="same").shape
torch.Size([1, 4, 8, 8])
>>> adder_linear(torch.randn(2, 5), torch.randn(3, 5)).shape
torch.Size([2, 3])
"""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from ._shapes import same_padding
from .ops import adder_conv2d, adder_conv3d

__all__ = ["adder_conv", "adder_linear"]


def _tuple(v: int | Sequence[int], nd: int, name: str) -> list[int]:
    out = [int(v)] * nd if isinstance(v, int) else [int(i) for i in v]
    if len(out) != nd:
        raise ValueError(f"{name} must be an int or {nd} ints for a {nd}-d adder convolution, got {v!r}")
    return out


def adder_conv(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: int | Sequence[int] = 1,
               padding: int | Sequence[int] | str = 0, dilation: int | Sequence[int] = 1, groups: int = 1) -> Tensor:
    """The adder convolution with ``F.convNd``'s arguments (zero padding; pad other modes beforehand)."""
    nd = weight.dim() - 2
    if nd not in (1, 2, 3):
        raise ValueError(f"adder_conv expects a 3-, 4- or 5-d weight (1-, 2-, 3-d convolution), got {weight.dim()}-d")
    stride, dilation = _tuple(stride, nd, "stride"), _tuple(dilation, nd, "dilation")
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"padding string must be 'same' or 'valid', got {padding!r}")
        if padding == "same" and any(s != 1 for s in stride):
            raise ValueError("padding='same' is not supported for strided adder convolutions (as for F.conv)")
        pads = [same_padding(k, d) if padding == "same" else (0, 0) for k, d in zip(weight.shape[2:], dilation)]
        if any(lo != hi for lo, hi in pads):       # torch puts the odd pixel after: pad explicitly, then none
            x = F.pad(x, [p for lo_hi in reversed(pads) for p in lo_hi])
            pads = [(0, 0)] * nd
        padding = [lo for lo, _ in pads]
    padding = _tuple(padding, nd, "padding")
    if nd == 1:   # a height-1 image through the 2-d op
        y = adder_conv2d(x.unsqueeze(2), weight.unsqueeze(2), [1, *stride], [0, *padding], [1, *dilation],
                         groups).squeeze(2)
    elif nd == 2:
        y = adder_conv2d(x, weight, stride, padding, dilation, groups)
    else:
        y = adder_conv3d(x, weight, stride, padding, dilation, groups)
    return y + bias.view(1, -1, *([1] * nd)) if bias is not None else y


def adder_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear``'s arguments, computing ``-sum_i |x_i - W_oi|`` (+ bias); any leading dimensions."""
    lead = x.shape[:-1]
    y = adder_conv2d(x.reshape(-1, x.shape[-1], 1, 1), weight[:, :, None, None]).reshape(*lead, weight.shape[0])
    return y + bias if bias is not None else y
