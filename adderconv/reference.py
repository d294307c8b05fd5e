"""The adder convolution written out from its definition, in float64.

This is the yardstick every kernel is tested against. It builds no im2col and shares no code with the
kernels: it walks the kernel offsets and takes strided slices of the zero-padded input.

    Y[n, o, p]  = -sum_j |X[n, j, p] - W[o, j]|
    dW[o, j]    =  sum_{n,p} g[n, o, p] * (X[n, j, p] - W[o, j])          (full precision, AdderNet eq. 5)
    dX[n, j, p] =  sum_o g[n, o, p] * HardTanh(W[o, j] - X[n, j, p])      (clipped, AdderNet eq. 7)
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._shapes import conv_output_size, pair

__all__ = ["adder_conv2d_reference", "adder_conv2d_reference_grads", "adder_conv3d_reference",
           "adder_conv3d_reference_grads"]


def _windows(
    x_pad: Tensor, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int], out: tuple[int, int]
) -> Iterator[tuple[int, int, tuple[slice, slice]]]:
    """Yield (ki, kj, spatial slices) selecting the input pixel under kernel tap (ki, kj) for every output."""
    for ki in range(kernel[0]):
        for kj in range(kernel[1]):
            r0, c0 = ki * dilation[0], kj * dilation[1]
            rows = slice(r0, r0 + stride[0] * (out[0] - 1) + 1, stride[0])
            cols = slice(c0, c0 + stride[1] * (out[1] - 1) + 1, stride[1])
            yield ki, kj, (rows, cols)


def _setup(x: Tensor, weight: Tensor, stride, padding, dilation, groups: int):
    stride, padding, dilation = pair(stride), pair(padding), pair(dilation)
    x64, w64 = x.detach().double(), weight.detach().double()
    n, c, h, w = x64.shape
    o, cg, kh, kw = w64.shape
    if c != cg * groups or o % groups:
        raise ValueError(f"channels do not fit groups={groups}: input {c}, weight {tuple(w64.shape)}")
    out = (conv_output_size(h, kh, stride[0], padding[0], dilation[0]),
           conv_output_size(w, kw, stride[1], padding[1], dilation[1]))
    x_pad = F.pad(x64, (padding[1], padding[1], padding[0], padding[0]))
    # (N, G, 1, Cg, H, W) against (1, G, O/G, Cg, 1, 1): broadcasting pairs each group's channels.
    xg = x_pad.view(n, groups, 1, cg, *x_pad.shape[-2:])
    wg = w64.view(1, groups, o // groups, cg, kh, kw)
    return xg, wg, (kh, kw), stride, dilation, out, padding


def adder_conv2d_reference(
    x: Tensor,
    weight: Tensor,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> Tensor:
    """Float64 forward of the adder convolution (zero padding), straight from the definition."""
    xg, wg, kernel, stride, dilation, out, _ = _setup(x, weight, stride, padding, dilation, groups)
    n, o = x.shape[0], weight.shape[0]
    y = x.new_zeros((n, groups, o // groups, *out), dtype=torch.float64)
    for ki, kj, sl in _windows(xg, kernel, stride, dilation, out):
        xs = xg[..., sl[0], sl[1]]                                  # (N, G, 1, Cg, Ho, Wo)
        ws = wg[..., ki, kj].unsqueeze(-1).unsqueeze(-1)            # (1, G, O/G, Cg, 1, 1)
        y -= (xs - ws).abs().sum(dim=3)
    return y.view(n, o, *out)


def adder_conv2d_reference_grads(
    grad_out: Tensor,
    x: Tensor,
    weight: Tensor,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> tuple[Tensor, Tensor]:
    """Float64 (grad_input, grad_weight) by AdderNet's rules: full-precision dW, HardTanh-clipped dX."""
    xg, wg, kernel, stride, dilation, out, padding = _setup(x, weight, stride, padding, dilation, groups)
    n, o = x.shape[0], weight.shape[0]
    g = grad_out.detach().double().view(n, groups, o // groups, 1, *out)   # (N, G, O/G, 1, Ho, Wo)
    grad_xg = torch.zeros_like(xg[:, :, 0])                                 # (N, G, Cg, Hp, Wp)
    grad_w = torch.zeros_like(wg[0])                                        # (G, O/G, Cg, kh, kw)
    for ki, kj, sl in _windows(xg, kernel, stride, dilation, out):
        xs = xg[..., sl[0], sl[1]]
        ws = wg[..., ki, kj].unsqueeze(-1).unsqueeze(-1)
        grad_w[..., ki, kj] = (g * (xs - ws)).sum(dim=(0, 4, 5))
        grad_xg[..., sl[0], sl[1]] += (g * (ws - xs).clamp(-1.0, 1.0)).sum(dim=2)
    h, w = x.shape[-2:]
    grad_x = grad_xg.reshape(n, -1, *grad_xg.shape[-2:])[..., padding[0]:padding[0] + h, padding[1]:padding[1] + w]
    return grad_x.contiguous(), grad_w.reshape(weight.shape)


def _setup3d(x: Tensor, weight: Tensor, stride, padding, dilation, groups: int):
    stride, padding, dilation = (tuple(v) if isinstance(v, (tuple, list)) else (v,) * 3
                                 for v in (stride, padding, dilation))
    x64, w64 = x.detach().double(), weight.detach().double()
    n, c = x64.shape[:2]
    o, cg, *kernel = w64.shape
    if c != cg * groups or o % groups:
        raise ValueError(f"channels do not fit groups={groups}: input {c}, weight {tuple(w64.shape)}")
    out = tuple(conv_output_size(x64.shape[2 + i], kernel[i], stride[i], padding[i], dilation[i]) for i in range(3))
    x_pad = F.pad(x64, (padding[2], padding[2], padding[1], padding[1], padding[0], padding[0]))
    xg = x_pad.view(n, groups, 1, cg, *x_pad.shape[-3:])                    # (N, G, 1, Cg, D, H, W)
    wg = w64.view(1, groups, o // groups, cg, *kernel)                      # (1, G, O/G, Cg, kd, kh, kw)
    taps = [(t, tuple(slice(t[i] * dilation[i], t[i] * dilation[i] + stride[i] * (out[i] - 1) + 1, stride[i])
                      for i in range(3)))
            for t in ((a, b, c_) for a in range(kernel[0]) for b in range(kernel[1]) for c_ in range(kernel[2]))]
    return xg, wg, taps, out, padding


def adder_conv3d_reference(x: Tensor, weight: Tensor, stride=1, padding=0, dilation=1, groups: int = 1) -> Tensor:
    """Float64 forward of the 3-d adder convolution (zero padding), straight from the definition."""
    xg, wg, taps, out, _ = _setup3d(x, weight, stride, padding, dilation, groups)
    n, o = x.shape[0], weight.shape[0]
    y = x.new_zeros((n, groups, o // groups, *out), dtype=torch.float64)
    for t, sl in taps:
        ws = wg[(..., *t)].view(*wg.shape[:4], 1, 1, 1)
        y -= (xg[(..., *sl)] - ws).abs().sum(dim=3)
    return y.view(n, o, *out)


def adder_conv3d_reference_grads(grad_out: Tensor, x: Tensor, weight: Tensor, stride=1, padding=0, dilation=1,
                                 groups: int = 1) -> tuple[Tensor, Tensor]:
    """Float64 (grad_input, grad_weight) of the 3-d adder convolution by AdderNet's rules."""
    xg, wg, taps, out, padding = _setup3d(x, weight, stride, padding, dilation, groups)
    n, o = x.shape[0], weight.shape[0]
    g = grad_out.detach().double().view(n, groups, o // groups, 1, *out)
    grad_xg = torch.zeros_like(xg[:, :, 0])
    grad_w = torch.zeros_like(wg[0])
    for t, sl in taps:
        xs, ws = xg[(..., *sl)], wg[(..., *t)].view(*wg.shape[:4], 1, 1, 1)
        grad_w[(..., *t)] = (g * (xs - ws)).sum(dim=(0, 4, 5, 6))
        grad_xg[(..., *sl)] += (g * (ws - xs).clamp(-1.0, 1.0)).sum(dim=2)
    d, h, w = x.shape[-3:]
    grad_x = grad_xg.reshape(n, -1, *grad_xg.shape[-3:])[..., padding[0]:padding[0] + d, padding[1]:padding[1] + h,
                                                          padding[2]:padding[2] + w]
    return grad_x.contiguous(), grad_w.reshape(weight.shape)
