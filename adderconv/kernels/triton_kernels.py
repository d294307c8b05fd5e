"""Triton adder kernels for CUDA tensors: forward, clipped input gradient, weight gradient.

All three are direct (no im2col in memory): each program gathers the input pixels under its kernel taps with
masked loads (a padded pixel reads as 0, so it contributes ``|0 - w|``). float16/bfloat16 inputs are read as
is and accumulated in float32; outputs come back in the input dtype.

- forward: a (positions x output channels) tile, ``acc += |x - w|`` over the receptive field.
- grad_input: a (pixels) tile of one input channel, summing ``g * clamp(w - x, -1, 1)`` over the taps that
  reach each pixel and the group's output channels (the clipped rule has no GEMM form).
- grad_weight: ``g @ X_col^T`` with ``tl.dot`` (IEEE float32 for float32 inputs: no TF32 rounding) minus
  the rank-1 term ``W * sum_p g``.

The kernels are defined on first use, so ``TRITON_INTERPRET=1`` (set before that) runs them on CPU tensors:
that is how CI checks them without a GPU. ``benchmarks/gpu_check.py`` checks and times them on a GPU.

>>> from adderconv.kernels import triton_kernels
>>> triton_kernels.importable()  # doctest: +SKIP
True
"""
from __future__ import annotations

import functools
import importlib.util
import os
from types import SimpleNamespace

import torch
from torch import Tensor

__all__ = ["importable", "supports", "forward", "grad_input", "grad_weight"]

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@functools.cache
def importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def supports(x: Tensor) -> bool:
    return x.is_cuda and x.dtype in _DTYPES and importable()


@functools.cache
def _kernels() -> SimpleNamespace:
    import triton
    import triton.language as tl

    @triton.jit
    def fwd(x, w, y, N, C, H, W, O, HO, WO, CG, OG, KH, KW, SH, SW, PH, PW, DH, DW,
            BLOCK_M: tl.constexpr, BLOCK_O: tl.constexpr):
        gi = tl.program_id(2)
        L = HO * WO
        m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        m_ok = m < N * L
        n, r = m // L, m % L
        oh, ow = r // WO, r % WO
        o = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
        o_ok = o < OG
        oa = gi * OG + o
        J = CG * KH * KW
        acc = tl.zeros((BLOCK_M, BLOCK_O), dtype=tl.float32)
        for c in range(CG):
            xc = x + (n * C + gi * CG + c) * H * W
            for ki in range(KH):
                ih = oh * SH - PH + ki * DH
                row_ok = m_ok & (ih >= 0) & (ih < H)
                for kj in range(KW):
                    iw = ow * SW - PW + kj * DW
                    ok = row_ok & (iw >= 0) & (iw < W)
                    xv = tl.load(xc + ih * W + iw, mask=ok, other=0.0).to(tl.float32)
                    wv = tl.load(w + oa * J + (c * KH + ki) * KW + kj, mask=o_ok, other=0.0).to(tl.float32)
                    acc += tl.abs(xv[:, None] - wv[None, :])
        out = y + (n[:, None] * O + oa[None, :]) * L + r[:, None]
        tl.store(out, (-acc).to(y.dtype.element_ty), mask=m_ok[:, None] & o_ok[None, :])

    @triton.jit
    def dx(g, x, w, out, N, C, H, W, O, HO, WO, CG, OG, KH, KW, SH, SW, PH, PW, DH, DW,
           BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr):
        c = tl.program_id(1)
        gi, cl = c // CG, c % CG
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        p_ok = p < N * H * W
        n, r = p // (H * W), p % (H * W)
        ih, iw = r // W, r % W
        xv = tl.load(x + (n * C + c) * H * W + r, mask=p_ok, other=0.0).to(tl.float32)
        J = CG * KH * KW
        acc = tl.zeros((BLOCK_P,), dtype=tl.float32)
        for ki in range(KH):
            th = ih + PH - ki * DH          # = oh * SH when this tap reaches the pixel
            oh = th // SH
            h_ok = p_ok & (th >= 0) & (th % SH == 0) & (oh < HO)
            for kj in range(KW):
                tw = iw + PW - kj * DW
                ow = tw // SW
                ok = h_ok & (tw >= 0) & (tw % SW == 0) & (ow < WO)
                for o0 in range(0, OG, BLOCK_O):
                    o = o0 + tl.arange(0, BLOCK_O)
                    o_ok = o < OG
                    oa = gi * OG + o
                    gv = tl.load(g + ((n[:, None] * O + oa[None, :]) * HO + oh[:, None]) * WO + ow[:, None],
                                 mask=ok[:, None] & o_ok[None, :], other=0.0).to(tl.float32)
                    wv = tl.load(w + oa * J + (cl * KH + ki) * KW + kj, mask=o_ok, other=0.0).to(tl.float32)
                    d = tl.minimum(tl.maximum(wv[None, :] - xv[:, None], -1.0), 1.0)
                    acc += tl.sum(gv * d, axis=1)
        tl.store(out + (n * C + c) * H * W + r, acc.to(out.dtype.element_ty), mask=p_ok)

    @triton.jit
    def dw(g, x, w, out, N, C, H, W, O, HO, WO, CG, OG, KH, KW, SH, SW, PH, PW, DH, DW,
           BLOCK_O: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_M: tl.constexpr, PREC: tl.constexpr,
           UPCAST: tl.constexpr):
        gi = tl.program_id(2)
        L = HO * WO
        J = CG * KH * KW
        o = tl.program_id(0) * BLOCK_O + tl.arange(0, BLOCK_O)
        o_ok = o < OG
        oa = gi * OG + o
        j = tl.program_id(1) * BLOCK_J + tl.arange(0, BLOCK_J)
        j_ok = j < J
        c, kk = j // (KH * KW), j % (KH * KW)
        ki, kj = kk // KW, kk % KW
        acc = tl.zeros((BLOCK_O, BLOCK_J), dtype=tl.float32)
        gsum = tl.zeros((BLOCK_O,), dtype=tl.float32)
        for m0 in range(0, N * L, BLOCK_M):
            m = m0 + tl.arange(0, BLOCK_M)
            m_ok = m < N * L
            n, r = m // L, m % L
            oh, ow = r // WO, r % WO
            gt = tl.load(g + (n[None, :] * O + oa[:, None]) * L + r[None, :],
                         mask=o_ok[:, None] & m_ok[None, :], other=0.0)                       # (O, M)
            ih = oh[:, None] * SH - PH + ki[None, :] * DH
            iw = ow[:, None] * SW - PW + kj[None, :] * DW
            ok = m_ok[:, None] & j_ok[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            xt = tl.load(x + ((n[:, None] * C + gi * CG + c[None, :]) * H + ih) * W + iw, mask=ok, other=0.0)
            if UPCAST:
                gt, xt = gt.to(tl.float32), xt.to(tl.float32)
            acc = tl.dot(gt, xt, acc, input_precision=PREC)                                   # (O, J)
            gsum += tl.sum(gt.to(tl.float32), axis=1)
        wv = tl.load(w + oa[:, None] * J + j[None, :], mask=o_ok[:, None] & j_ok[None, :], other=0.0)
        res = acc - wv.to(tl.float32) * gsum[:, None]      # rank-1 term: W[o, j] * sum_p g[o, p]
        tl.store(out + oa[:, None] * J + j[None, :], res, mask=o_ok[:, None] & j_ok[None, :])

    return SimpleNamespace(triton=triton, fwd=fwd, dx=dx, dw=dw)


def _geometry(x: Tensor, weight: Tensor, stride, padding, dilation, groups: int) -> tuple[int, ...]:
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return (n, c, h, w, o, ho, wo, cg, o // groups, kh, kw, stride[0], stride[1], padding[0], padding[1],
            dilation[0], dilation[1])


def forward(x: Tensor, weight: Tensor, stride, padding, dilation, groups: int) -> Tensor:
    k = _kernels()
    geo = _geometry(x, weight, stride, padding, dilation, groups)
    n, _, _, _, o, ho, wo, _, og = geo[:9]
    y = torch.empty((n, o, ho, wo), device=x.device, dtype=x.dtype)
    bm, bo = 64, 32
    grid = (k.triton.cdiv(n * ho * wo, bm), k.triton.cdiv(og, bo), groups)
    k.fwd[grid](x, weight.to(x.dtype), y, *geo, BLOCK_M=bm, BLOCK_O=bo)
    return y


def grad_input(grad: Tensor, x: Tensor, weight: Tensor, stride, padding, dilation, groups: int) -> Tensor:
    k = _kernels()
    geo = _geometry(x, weight, stride, padding, dilation, groups)
    n, c, h, w = geo[:4]
    dx = torch.empty_like(x)
    bp, bo = 64, 32
    k.dx[(k.triton.cdiv(n * h * w, bp), c)](grad.to(x.dtype), x, weight.to(x.dtype), dx, *geo,
                                            BLOCK_P=bp, BLOCK_O=bo)
    return dx


def grad_weight(grad: Tensor, x: Tensor, weight: Tensor, stride, padding, dilation, groups: int) -> Tensor:
    k = _kernels()
    geo = _geometry(x, weight, stride, padding, dilation, groups)
    og, j = geo[8], weight[0].numel()
    dw = torch.empty(weight.shape, device=x.device, dtype=torch.float32)
    bo, bj, bm = 32, 32, 32
    grid = (k.triton.cdiv(og, bo), k.triton.cdiv(j, bj), groups)
    # Triton's CPU interpreter gets bfloat16 tl.dot wrong (numpy has no bfloat16): it upcasts there only.
    upcast = x.dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1"
    prec = "ieee" if x.dtype == torch.float32 or upcast else "tf32"   # float32: no TF32 rounding in the GEMM
    k.dw[grid](grad.to(x.dtype), x, weight.to(x.dtype), dw, *geo, BLOCK_O=bo, BLOCK_J=bj, BLOCK_M=bm, PREC=prec,
               UPCAST=upcast)
    return dw.to(weight.dtype)
