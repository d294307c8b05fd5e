"""The int8 adder op in plain PyTorch integer arithmetic: the fallback that always works (any CPU, any device).

Same contract as the C++ kernel (:mod:`adderconv.kernels.int8`): channels-last uint8 input codes, uint8 weight
codes ``(O, C/g, kh, kw)``, padding with the zero point, int32 sums ``S = sum |x - w|``, then the epilogue of
:func:`epilogue` (int32, float32 affine, or requantised uint8). The integers are exact (int32 throughout); the
float epilogue is the same float32 operations in the same order as the C++ one, so results are bit-identical.

>>> x = torch.full((1, 3, 3, 8), 5, dtype=torch.uint8)
>>> w = torch.full((2, 8, 3, 3), 7, dtype=torch.uint8)
>>> int(adder_int8(x, w, 0, [1, 1], [0, 0], [1, 1], 1, None, None, 0, 0)[0, 0, 0, 0])
144
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["adder_int8", "sums", "epilogue", "quantize", "codes", "residual_epilogue"]

_CHUNK = 1 << 24   # elements of one tap's |x - w| tensor at most (bounds the fallback's memory)


def sums(x: Tensor, weight: Tensor, zero_point: int, stride, padding, dilation, groups: int) -> Tensor:
    """int32 ``S[n, oh, ow, o] = sum_j |x_col - w|`` with zero-point padding; x (N, H, W, C) uint8."""
    n, h, w_, c = x.shape
    o, cg, kh, kw = weight.shape
    og = o // groups
    xi = x.permute(0, 3, 1, 2).to(torch.int16)
    ph, pw = padding
    xi = F.pad(xi, (pw, pw, ph, ph), value=int(zero_point))
    ho = (h + 2 * ph - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w_ + 2 * pw - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    wi = weight.to(torch.int16).view(1, groups, og, cg, kh, kw)
    out = torch.zeros(n, groups, og, ho, wo, dtype=torch.int32, device=x.device)
    step = max(1, _CHUNK // max(1, groups * og * cg * ho * wo))
    for n0 in range(0, n, step):
        for i in range(kh):
            for j in range(kw):
                r0, c0 = i * dilation[0], j * dilation[1]
                tap = xi[n0:n0 + step, :, r0:r0 + (ho - 1) * stride[0] + 1:stride[0],
                         c0:c0 + (wo - 1) * stride[1] + 1:stride[1]]
                tap = tap.reshape(tap.shape[0], groups, 1, cg, ho, wo)
                d = (tap - wi[..., i, j, None, None]).abs_()
                out[n0:n0 + step] += d.sum(3, dtype=torch.int32)
    return out.view(n, o, ho, wo).permute(0, 2, 3, 1).contiguous()


def epilogue(s: Tensor, scale: Tensor | None, shift: Tensor | None, mode: int, lo: int) -> Tensor:
    """mode 0: S; 1: float32 ``scale * S + shift``; 2: uint8 ``clamp(round(scale * S + shift), lo, 255)``."""
    if mode == 0:
        return s
    v = s.to(torch.float32) * scale + shift
    if mode == 1:
        return v
    return torch.round(v).clamp_(lo, 255).to(torch.uint8)


def adder_int8(x: Tensor, weight: Tensor, zero_point: int, stride, padding, dilation, groups: int,
               scale: Tensor | None, shift: Tensor | None, mode: int, lo: int) -> Tensor:
    """The whole op: :func:`sums` then :func:`epilogue` (output channels-last, (N, OH, OW, O))."""
    return epilogue(sums(x, weight, zero_point, stride, padding, dilation, groups), scale, shift, mode, lo)


def codes(x: Tensor, scale: Tensor, zero_point: int, lo: int = 0) -> Tensor:
    """uint8 codes ``clamp(round(x / scale) + z, lo, 255)`` of a float tensor, elementwise (float32 scale)."""
    return (torch.round(x.to(torch.float32) / scale) + zero_point).clamp_(lo, 255).to(torch.uint8)


def quantize(x: Tensor, scale: Tensor, zero_point: int, lo: int = 0) -> Tensor:
    """float (N, C, H, W) -> channels-last uint8 codes ``clamp(round(x / scale) + z, lo, 255)`` (float32 scale)."""
    return codes(x.permute(0, 2, 3, 1), scale, zero_point, lo).contiguous()


def residual_epilogue(s: Tensor, scale: Tensor, shift: Tensor, residual: Tensor, relu: bool,
                      qscale: float, qz: int) -> tuple[Tensor, Tensor]:
    """The residual epilogue on int32 sums (N, OH, OW, O): ``[relu](scale * S + shift + residual)`` in float32 and,
    when ``qscale`` > 0, its uint8 codes on the grid (qscale, qz) (else an empty tensor)."""
    v = epilogue(s, scale, shift, 1, 0) + residual
    if relu:
        v = torch.relu(v)
    if qscale <= 0:
        return v, v.new_empty(0, dtype=torch.uint8)
    return v, codes(v, torch.tensor(qscale, dtype=torch.float32, device=v.device), qz)
