"""Pure-PyTorch adder kernels: always available, any device, any dtype; the fallback behind the op.

Memory stays O(im2col): the forward uses ``torch.cdist(p=1)`` (no O x J x L temporary), the weight
gradient is a GEMM plus a rank-1 term, and the clipped input gradient walks the positions in chunks.
Low-precision inputs are computed in float32 and cast back.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._shapes import conv_output_size

__all__ = ["forward", "grad_input", "grad_weight", "CHUNK_ELEMENTS"]

# Upper bound on the elements of the (O/G, chunk, J) temporary in grad_input (64 MiB of float32).
CHUNK_ELEMENTS = 1 << 24


def _compute_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _columns(x: Tensor, weight: Tensor, stride, padding, dilation, groups: int) -> Tensor:
    """im2col as (G, N*L, J): one row per output position, J = C/G * kh * kw."""
    n = x.shape[0]
    cols = F.unfold(x.to(_compute_dtype(x)), weight.shape[-2:], dilation, padding, stride)  # (N, C*k*k, L)
    j, L = cols.shape[1] // groups, cols.shape[2]
    return cols.view(n, groups, j, L).permute(1, 0, 3, 2).reshape(groups, n * L, j)


def _grad_rows(grad: Tensor, groups: int) -> Tensor:
    """grad_output (N, O, Ho, Wo) as (G, O/G, N*L)."""
    n, o = grad.shape[:2]
    g = grad.to(_compute_dtype(grad)).reshape(n, groups, o // groups, -1)
    return g.permute(1, 2, 0, 3).reshape(groups, o // groups, -1)


def forward(x: Tensor, weight: Tensor, stride, padding, dilation, groups: int) -> Tensor:
    n, o = x.shape[0], weight.shape[0]
    cols = _columns(x, weight, stride, padding, dilation, groups)
    w = weight.to(cols.dtype).reshape(groups, o // groups, -1)
    y = torch.cdist(w, cols, p=1)                                       # (G, O/G, N*L)
    out_hw = _out_hw(x, weight, stride, padding, dilation)
    y = y.view(groups, o // groups, n, -1).permute(2, 0, 1, 3).reshape(n, o, *out_hw).contiguous()
    return y.neg_().to(x.dtype)


def grad_weight(grad: Tensor, x: Tensor, weight: Tensor, stride, padding, dilation, groups: int) -> Tensor:
    # sum_p g[o,p] (X[j,p] - W[o,j]) = (g @ X^T)[o,j] - W[o,j] * sum_p g[o,p]
    cols = _columns(x, weight, stride, padding, dilation, groups)       # (G, NL, J)
    g = _grad_rows(grad, groups)                                         # (G, O/G, NL)
    w = weight.to(cols.dtype).reshape(groups, weight.shape[0] // groups, -1)
    dw = torch.bmm(g, cols) - w * g.sum(-1, keepdim=True)
    return dw.reshape(weight.shape).to(weight.dtype)


def grad_input(grad: Tensor, x: Tensor, weight: Tensor, stride, padding, dilation, groups: int) -> Tensor:
    cols = _columns(x, weight, stride, padding, dilation, groups)       # (G, NL, J)
    g = _grad_rows(grad, groups)                                         # (G, O/G, NL)
    og = g.shape[1]
    w = weight.to(cols.dtype).reshape(groups, og, 1, -1)                 # (G, O/G, 1, J)
    dcols = torch.empty_like(cols)
    step = max(1, CHUNK_ELEMENTS // max(1, og * cols.shape[-1]))
    for start in range(0, cols.shape[1], step):
        sl = slice(start, start + step)
        clipped = (w - cols[:, None, sl]).clamp_(-1.0, 1.0)             # (G, O/G, c, J)
        dcols[:, sl] = torch.einsum("goc,gocj->gcj", g[:, :, sl], clipped)
    n, c = x.shape[:2]
    dcols = dcols.view(groups, n, -1, cols.shape[-1]).permute(1, 0, 3, 2).reshape(n, c * weight[0, 0].numel(), -1)
    dx = F.fold(dcols, x.shape[-2:], weight.shape[-2:], dilation, padding, stride)
    return dx.to(x.dtype)


def _out_hw(x: Tensor, weight: Tensor, stride, padding, dilation) -> tuple[int, int]:
    return tuple(conv_output_size(x.shape[-2 + i], weight.shape[-2 + i], stride[i], padding[i], dilation[i])
                 for i in range(2))  # type: ignore[return-value]
