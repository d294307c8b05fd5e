"""The adder convolution as one PyTorch custom op, ``torch.ops.adderconv.adder_conv2d``.

torch.export, torch.compile, fvcore's tracer and the ONNX exporter all see one named node; every kernel
sits behind it (see :mod:`adderconv.kernels`). Its autograd follows AdderNet rather than calculus:

- ``grad_weight = sum g * (X - W)``               (full precision; the true derivative is sign(X - W))
- ``grad_input  = sum_o g * HardTanh(W - X)``      (clipped; the true derivative is sign(W - X))

The two gradients are custom ops too, so compiled graphs keep them opaque and fake-tensor tracing works.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from . import kernels
from ._shapes import conv_output_size, pair

__all__ = ["adder_conv2d", "adder_conv3d"]


def _geometry(stride, padding, dilation, groups: int, nd: int, what: str) -> None:
    """stride >= 1, padding >= 0, dilation >= 1 (``nd`` ints each) and groups >= 1: a negative stride or
    dilation walks the kernels' pointers out of their buffers, a zero one divides by zero."""
    for name, values, low in (("stride", stride, 1), ("padding", padding, 0), ("dilation", dilation, 1)):
        if len(values) != nd or any(isinstance(v, bool) or not isinstance(v, (int, torch.SymInt)) or v < low
                                    for v in values):
            raise ValueError(f"{what}: {name} must be {nd} integers >= {low}, got {list(values)!r}")
    if isinstance(groups, bool) or not isinstance(groups, (int, torch.SymInt)) or groups < 1:
        raise ValueError(f"{what}: groups must be an integer >= 1, got {groups!r}")


def _check(x: Tensor, weight: Tensor, stride, padding, dilation, groups: int) -> tuple[int, int, int, int]:
    """Every argument of the op, before any kernel sees it (each kernel trusts them): the output shape."""
    if x.dim() != 4 or weight.dim() != 4:
        raise ValueError(f"adder_conv2d expects 4-d input and weight, got {x.dim()}-d and {weight.dim()}-d")
    if not (x.dtype.is_floating_point and weight.dtype.is_floating_point):   # (mixed under autocast: x's dtype)
        raise ValueError(f"adder_conv2d expects floating-point input and weight, got {x.dtype} and {weight.dtype}")
    if x.device != weight.device:
        raise ValueError(f"adder_conv2d: input on {x.device}, weight on {weight.device}")
    _geometry(stride, padding, dilation, groups, 2, "adder_conv2d")
    if min(weight.shape[1:]) < 1:
        raise ValueError(f"adder_conv2d: the kernel needs at least one input channel and one tap, got weight "
                         f"{tuple(weight.shape)}")
    if x.shape[1] != weight.shape[1] * groups or weight.shape[0] % groups:
        raise ValueError(f"adder_conv2d: input has {x.shape[1]} channels, weight {tuple(weight.shape)}, "
                         f"groups={groups}: expected input channels = weight.shape[1] * groups and "
                         f"out channels divisible by groups")
    hw = [conv_output_size(x.shape[2 + i], weight.shape[2 + i], stride[i], padding[i], dilation[i]) for i in range(2)]
    if min(hw) < 1:
        raise ValueError(f"adder_conv2d: input {tuple(x.shape[2:])} is smaller than the kernel "
                         f"{tuple(weight.shape[2:])} (padding {tuple(padding)}, dilation {tuple(dilation)})")
    return (x.shape[0], weight.shape[0], hw[0], hw[1])


def _check_grad(grad: Tensor, x: Tensor, weight: Tensor, stride, padding, dilation, groups: int) -> None:
    shape = _check(x, weight, stride, padding, dilation, groups)
    if tuple(grad.shape) != shape or not grad.dtype.is_floating_point or grad.device != x.device:
        raise ValueError(f"adder_conv2d: the output gradient must be floating-point {shape} on {x.device}, got "
                         f"{grad.dtype} {tuple(grad.shape)} on {grad.device}")


@torch.library.custom_op("adderconv::adder_conv2d", mutates_args=())
def _adder_conv2d(x: Tensor, weight: Tensor, stride: list[int], padding: list[int], dilation: list[int],
                  groups: int) -> Tensor:
    _check(x, weight, stride, padding, dilation, groups)
    return kernels.backend_for(x).forward(x.contiguous(), weight.contiguous(), stride, padding, dilation, groups)


@_adder_conv2d.register_fake
def _(x, weight, stride, padding, dilation, groups):
    return x.new_empty(_check(x, weight, stride, padding, dilation, groups))


@torch.library.custom_op("adderconv::adder_conv2d_grad_input", mutates_args=())
def _grad_input(grad: Tensor, x: Tensor, weight: Tensor, stride: list[int], padding: list[int],
                dilation: list[int], groups: int) -> Tensor:
    _check_grad(grad, x, weight, stride, padding, dilation, groups)
    return kernels.backend_for(x).grad_input(grad.contiguous(), x.contiguous(), weight.contiguous(),
                                             stride, padding, dilation, groups)


@_grad_input.register_fake
def _(grad, x, weight, stride, padding, dilation, groups):
    _check_grad(grad, x, weight, stride, padding, dilation, groups)
    return torch.empty_like(x)


@torch.library.custom_op("adderconv::adder_conv2d_grad_weight", mutates_args=())
def _grad_weight(grad: Tensor, x: Tensor, weight: Tensor, stride: list[int], padding: list[int],
                 dilation: list[int], groups: int) -> Tensor:
    _check_grad(grad, x, weight, stride, padding, dilation, groups)
    return kernels.backend_for(x).grad_weight(grad.contiguous(), x.contiguous(), weight.contiguous(),
                                              stride, padding, dilation, groups)


@_grad_weight.register_fake
def _(grad, x, weight, stride, padding, dilation, groups):
    _check_grad(grad, x, weight, stride, padding, dilation, groups)
    return torch.empty_like(weight)


def _setup_context(ctx, inputs, output) -> None:
    x, weight, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(x, weight)
    ctx.conf = (stride, padding, dilation, groups)


def _backward(ctx, grad: Tensor):
    x, weight = ctx.saved_tensors
    need_x, need_w = ctx.needs_input_grad[:2]
    gx = _grad_input(grad, x, weight, *ctx.conf) if need_x else None
    gw = _grad_weight(grad, x, weight, *ctx.conf) if need_w else None
    return gx, gw, None, None, None, None


_adder_conv2d.register_autograd(_backward, setup_context=_setup_context)


def adder_conv2d(
    x: Tensor,
    weight: Tensor,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> Tensor:
    """Adder convolution ``Y[n,o,p] = -sum_j |X_col[n,j,p] - W[o,j]|`` with zero padding.

    Shapes follow :func:`torch.nn.functional.conv2d` (no bias; add it outside).

    >>> y = adder_conv2d(torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3), padding=1)
    >>> tuple(y.shape)
    (2, 4, 8, 8)
    """
    return _adder_conv2d(x, weight, list(pair(stride, "stride")), list(pair(padding, "padding")),
                         list(pair(dilation, "dilation")), int(groups))


# --- counting (adderconv.op_registry, which adderconv.analysis reads): the op's registration, next to the op --
from .counting import Tally as _Tally  # noqa: E402
from .op_registry import register as _register_count  # noqa: E402


def _macs(x, weight, out) -> int:   # one |x - w| per output element and receptive-field element
    return x[0] * math.prod(weight) * math.prod(out[2:])


@_register_count(torch.ops.adderconv.adder_conv2d, category="adder")
def _count_forward(outs, x, weight):
    macs = _macs(x, weight, outs[0])
    return _Tally(add=macs, acc=macs)    # |x - w| (an add), then the accumulation (acc); 0 mul


@_register_count(torch.ops.adderconv.adder_conv2d_grad_weight, category="adder")
def _count_grad_weight(outs, grad, x, weight):
    # (g @ X_col^T) - W * sum_p g: a GEMM (1 mul + 1 acc per MAC) plus the rank-1 term (the sums, W * s, -)
    macs, g = _macs(x, weight, grad), math.prod(grad)
    return _Tally(mul=macs + math.prod(weight), acc=macs, add=g - grad[1] + math.prod(weight))


@_register_count(torch.ops.adderconv.adder_conv2d_grad_input, category="adder")
def _count_grad_input(outs, grad, x, weight):
    # sum_o g * clamp(W - X, -1, 1): per MAC a subtraction, two comparisons, a product and the accumulation
    macs = _macs(x, weight, grad)
    return _Tally(mul=macs, add=macs, acc=macs, cmp=2 * macs)


def _triple(v: int | Sequence[int], name: str) -> tuple[int, int, int]:
    t = (v,) * 3 if isinstance(v, int) else tuple(int(i) for i in v)
    if len(t) != 3:
        raise ValueError(f"{name} must be an int or 3 ints, got {v!r}")
    return t  # type: ignore[return-value]


def adder_conv3d(
    x: Tensor,
    weight: Tensor,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> Tensor:
    """3-d adder convolution ``Y[n,o,d,h,w] = -sum |X - W|`` over each (depth, height, width) receptive field.

    Exactly a sum over the kernel's depth taps of 2-d adder convolutions, each over the input's depth slices
    that tap reads, so every 2-d kernel (and its AdderNet gradients) serves it unchanged: padded depth slices
    are zeros, as zero padding is everywhere else.

    >>> y = adder_conv3d(torch.randn(1, 2, 4, 6, 6), torch.randn(3, 2, 3, 3, 3), padding=1)
    >>> tuple(y.shape)
    (1, 3, 4, 6, 6)
    """
    if x.dim() != 5 or weight.dim() != 5:
        raise ValueError(f"adder_conv3d expects 5-d input and weight, got {x.dim()}-d and {weight.dim()}-d")
    stride, padding, dilation = _triple(stride, "stride"), _triple(padding, "padding"), _triple(dilation, "dilation")
    _geometry(stride, padding, dilation, groups, 3, "adder_conv3d")
    if min(weight.shape[1:]) < 1:
        raise ValueError(f"adder_conv3d: the kernel needs at least one input channel and one tap, got weight "
                         f"{tuple(weight.shape)}")
    n, c, depth = x.shape[:3]
    kd = weight.shape[2]
    out_d = conv_output_size(depth, kd, stride[0], padding[0], dilation[0])
    if out_d < 1:
        raise ValueError(f"adder_conv3d: input depth {depth} is smaller than the kernel depth {kd} "
                         f"(padding {padding[0]}, dilation {dilation[0]})")
    xp = torch.nn.functional.pad(x, (0, 0, 0, 0, padding[0], padding[0])) if padding[0] else x
    y = None
    for t in range(kd):
        start = t * dilation[0]
        xs = xp[:, :, start:start + stride[0] * (out_d - 1) + 1:stride[0]]            # (N, C, Do, H, W)
        xs = xs.transpose(1, 2).reshape(n * out_d, c, *x.shape[3:])
        part = adder_conv2d(xs, weight[:, :, t], stride[1:], padding[1:], dilation[1:], groups)
        y = part if y is None else y + part
    return y.view(n, out_d, *y.shape[1:]).transpose(1, 2)
