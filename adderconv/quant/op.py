"""The int8 adder convolution as one PyTorch custom op, ``torch.ops.adderconv.adder_conv2d_int8``.

``adder_conv2d_int8(x, weight, zero_point, stride, padding, dilation, groups, scale, shift, mode, lo)``:

- ``x``: uint8 codes, channels-last ``(N, H, W, C)``; ``weight``: uint8 codes ``(O, C/g, kh, kw)``, both on one
  grid with zero point ``zero_point`` (padding is the zero point);
- ``S[n, oh, ow, o] = sum_j |x_col - w|`` in int32 (exact), then by ``mode``: 0 the int32 ``S``; 1 float32
  ``scale[o] * S + shift[o]``; 2 uint8 ``clamp(round(scale[o] * S + shift[o]), lo, 255)``; always (N, OH, OW, O).

It runs the C++ SAD kernels (:mod:`adderconv.kernels.int8`) on CPU tensors, the PyTorch integer fallback
(:mod:`adderconv.kernels.int8_portable`) elsewhere or when the extension cannot be built; the fake impl makes
it traceable (torch.export, fake tensors). Packed weights are cached per weight tensor and vector path.

>>> x = torch.randint(0, 256, (1, 5, 5, 8), dtype=torch.uint8)
>>> w = torch.randint(0, 256, (4, 8, 3, 3), dtype=torch.uint8)
>>> adder_conv2d_int8(x, w, 128, padding=1).shape
torch.Size([1, 5, 5, 4])
"""
from __future__ import annotations

import math
import struct
import weakref
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode as _dispatch_mode

from .._shapes import conv_output_size, pair
from ..kernels import int8, int8_portable
from ..ops import _geometry

__all__ = ["adder_conv2d_int8", "adder_conv2d_int8_residual", "quantize_uint8", "MODES", "kernel_name"]

MODES = {"int32": 0, "float": 1, "uint8": 2}
_DTYPES = (torch.int32, torch.float32, torch.uint8)
_EMPTY = torch.empty(0)
_packs: dict[int, tuple] = {}   # id(weight) -> (weakref, version, isa, zero point, groups, packed)


def kernel_name() -> str:
    """Which implementation CPU tensors get: ``cpu-<isa>`` (C++ SAD kernels) or ``portable`` (PyTorch)."""
    return f"cpu-{int8.isa_name()}" if int8.available() else "portable"


def _code(value: int, what: str) -> None:
    """A zero point or clamp floor: a code, 0..255 (the kernels would wrap -5 to 251)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise ValueError(f"{what} must be an integer in [0, 255], got {value!r}")


_FLOAT32 = torch.finfo(torch.float32)


def _grid_scale(scale: float, what: str) -> None:
    """A grid's scale: a normal float32 > 0 whose 255 codes span a finite float32 range (NaN, 0, -1, inf, 1e300
    and 1e-300, which is 0 in float32, are not)."""
    if not (math.isfinite(scale) and _FLOAT32.tiny <= scale and 255.0 * scale < _FLOAT32.max):
        raise ValueError(f"{what} must be a float32 in [{_FLOAT32.tiny:.3g}, {_FLOAT32.max / 255:.3g}] (a grid of "
                         f"255 finite steps), got {scale!r}")


def _check(x: Tensor, weight: Tensor, zero_point: int, groups: int, mode: int, scale: Tensor, shift: Tensor,
           stride, padding, dilation, lo: int = 0) -> tuple[int, int, int, int]:
    """Every argument before any kernel (the C++ one checks again; the portable one trusts them): the output shape.
    The epilogue's values (``scale``, ``shift``) are checked by the kernels, which read them anyway (a check here
    would cost a reduction per call), and when a layer is built or loaded (:mod:`.layers`)."""
    if x.dim() != 4 or weight.dim() != 4 or x.dtype != torch.uint8 or weight.dtype != torch.uint8:
        raise ValueError(f"adder_conv2d_int8 expects 4-d uint8 input (N, H, W, C) and weight (O, C/g, kh, kw), "
                         f"got {x.dtype} {tuple(x.shape)} and {weight.dtype} {tuple(weight.shape)}")
    _geometry(stride, padding, dilation, groups, 2, "adder_conv2d_int8")
    if min(weight.shape[1:]) < 1 or x.shape[3] != weight.shape[1] * groups or weight.shape[0] % groups:
        raise ValueError(f"adder_conv2d_int8: input has {x.shape[3]} channels, weight {tuple(weight.shape)}, "
                         f"groups={groups}")
    if mode not in (0, 1, 2):
        raise ValueError(f"adder_conv2d_int8: mode must be 0, 1 or 2, got {mode}")
    _code(zero_point, "adder_conv2d_int8: the zero point")
    _code(lo, "adder_conv2d_int8: the clamp floor `lo`")
    if mode and (scale.numel() != weight.shape[0] or shift.numel() != weight.shape[0]
                 or scale.dtype != torch.float32 or shift.dtype != torch.float32):
        raise ValueError(f"adder_conv2d_int8: scale and shift need {weight.shape[0]} float32 values, got "
                         f"{scale.dtype} {scale.numel()} and {shift.dtype} {shift.numel()}")
    return _out_shape(x, weight, stride, padding, dilation)


def _check_values(scale: Tensor, shift: Tensor) -> None:
    """The epilogue's values, where no kernel checks them (the portable fallback)."""
    if not (bool(torch.isfinite(scale).all()) and bool(torch.isfinite(shift).all())):
        raise ValueError("adder_conv2d_int8: the epilogue's scale and shift must be finite")


def _out_shape(x: Tensor, weight: Tensor, stride, padding, dilation) -> tuple[int, int, int, int]:
    hw = [conv_output_size(x.shape[1 + i], weight.shape[2 + i], stride[i], padding[i], dilation[i]) for i in range(2)]
    if min(hw) < 1:
        raise ValueError(f"adder_conv2d_int8: input {tuple(x.shape[1:3])} is smaller than the kernel "
                         f"{tuple(weight.shape[2:])}")
    return (x.shape[0], hw[0], hw[1], weight.shape[0])


def _packed(weight: Tensor, zero_point: int, groups: int) -> Tensor:
    isa = int8.isa()
    hit = _packs.get(id(weight))
    if hit is not None and hit[0]() is weight and hit[1:5] == (weight._version, isa, zero_point, groups):
        return hit[5]
    packed = int8.pack(weight, zero_point, groups, isa)
    key = id(weight)
    _packs[key] = (weakref.ref(weight, lambda _, k=key: _packs.pop(k, None)), weight._version, isa, zero_point,
                   groups, packed)
    return packed


def _adder_conv2d_int8_impl(x: Tensor, weight: Tensor, zero_point: int, stride: list[int], padding: list[int],
                            dilation: list[int], groups: int, scale: Tensor, shift: Tensor, mode: int,
                            lo: int) -> Tensor:
    _check(x, weight, zero_point, groups, mode, scale, shift, stride, padding, dilation, lo)
    if x.device.type == "cpu" and int8.available():
        return int8.extension().forward(x.contiguous(), _packed(weight, zero_point, groups), weight.shape[0],
                                        weight.shape[2], weight.shape[3], zero_point, stride, padding, dilation,
                                        groups, scale.contiguous(), shift.contiguous(), mode, lo, -1)
    if mode:
        _check_values(scale, shift)
    return int8_portable.adder_int8(x, weight, zero_point, stride, padding, dilation, groups, scale, shift, mode, lo)


@torch.library.custom_op("adderconv::adder_conv2d_int8", mutates_args=())
def _adder_conv2d_int8(x: Tensor, weight: Tensor, zero_point: int, stride: list[int], padding: list[int],
                       dilation: list[int], groups: int, scale: Tensor, shift: Tensor, mode: int,
                       lo: int) -> Tensor:
    return _adder_conv2d_int8_impl(x, weight, zero_point, stride, padding, dilation, groups, scale, shift, mode, lo)


@_adder_conv2d_int8.register_fake
def _(x, weight, zero_point, stride, padding, dilation, groups, scale, shift, mode, lo):
    shape = _check(x, weight, zero_point, groups, mode, scale, shift, stride, padding, dilation, lo)
    return x.new_empty(shape, dtype=_DTYPES[mode])


def _direct(*tensors: Tensor) -> bool:
    """Call the C++ kernels without the op dispatcher (~20 us a call, a quarter of a batch-1 ResNet-20): plain
    CPU tensors outside every trace, dispatch mode (the energy capture) and compile, so all of those see the op."""
    return (all(type(t) is Tensor and t.device.type == "cpu" for t in tensors) and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling() and _dispatch_mode() is None and int8.available())


def adder_conv2d_int8(x: Tensor, weight: Tensor, zero_point: int, stride: int | Sequence[int] = 1,
                      padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1, groups: int = 1,
                      scale: Tensor | None = None, shift: Tensor | None = None, mode: str = "int32",
                      lo: int = 0) -> Tensor:
    """The int8 adder op with conv-style arguments; ``mode`` is ``"int32"``, ``"float"`` or ``"uint8"``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    args = (x, weight, int(zero_point), list(pair(stride, "stride")), list(pair(padding, "padding")),
            list(pair(dilation, "dilation")), int(groups), _EMPTY if scale is None else scale,
            _EMPTY if shift is None else shift, MODES[mode], int(lo))
    return _adder_conv2d_int8_impl(*args) if _direct(x, weight) else _adder_conv2d_int8(*args)


def _check_residual(x: Tensor, weight: Tensor, zero_point: int, stride, padding, dilation, groups: int,
                    scale: Tensor, shift: Tensor, qscale: float, qz: int) -> tuple[int, int, int, int]:
    shape = _check(x, weight, zero_point, groups, 1, scale, shift, stride, padding, dilation)
    if qscale != 0.0:    # 0: no codes
        _grid_scale(qscale, "adder_conv2d_int8_residual: the codes' scale")
    _code(qz, "adder_conv2d_int8_residual: the codes' zero point")
    return shape


def _residual_impl(x: Tensor, weight: Tensor, zero_point: int, stride: list[int], padding: list[int],
                   dilation: list[int], groups: int, scale: Tensor, shift: Tensor, residual: Tensor,
                   relu: bool, qscale: float, qz: int, codes_only: bool) -> tuple[Tensor, Tensor]:
    shape = _check_residual(x, weight, zero_point, stride, padding, dilation, groups, scale, shift, qscale, qz)
    if tuple(residual.shape) != shape or residual.dtype != torch.float32:
        raise ValueError(f"adder_conv2d_int8_residual: the residual must be float32 {shape} (N, OH, OW, O), got "
                         f"{residual.dtype} {tuple(residual.shape)}")
    if x.device.type == "cpu" and int8.available():
        y, q = int8.extension().forward_residual(x.contiguous(), _packed(weight, zero_point, groups), weight.shape[0],
                                                 weight.shape[2], weight.shape[3], zero_point, stride, padding,
                                                 dilation, groups, scale.contiguous(), shift.contiguous(),
                                                 residual.contiguous(), relu, qscale, qz, not codes_only, -1)
        return y, q
    _check_values(scale, shift)
    s = int8_portable.sums(x, weight, zero_point, stride, padding, dilation, groups)
    y, q = int8_portable.residual_epilogue(s, scale, shift, residual, relu, qscale, qz)
    return (y.new_empty(0), q) if codes_only else (y, q)


@torch.library.custom_op("adderconv::adder_conv2d_int8_residual", mutates_args=())
def _adder_conv2d_int8_residual(x: Tensor, weight: Tensor, zero_point: int, stride: list[int], padding: list[int],
                                dilation: list[int], groups: int, scale: Tensor, shift: Tensor, residual: Tensor,
                                relu: bool, qscale: float, qz: int, codes_only: bool) -> tuple[Tensor, Tensor]:
    return _residual_impl(x, weight, zero_point, stride, padding, dilation, groups, scale, shift, residual, relu,
                          qscale, qz, codes_only)


@_adder_conv2d_int8_residual.register_fake
def _(x, weight, zero_point, stride, padding, dilation, groups, scale, shift, residual, relu, qscale, qz, codes_only):
    shape = _check_residual(x, weight, zero_point, stride, padding, dilation, groups, scale, shift, qscale, qz)
    return (x.new_empty((0,) if codes_only else shape, dtype=torch.float32),
            x.new_empty(shape if qscale > 0 else (0,), dtype=torch.uint8))


def adder_conv2d_int8_residual(x: Tensor, weight: Tensor, zero_point: int, stride: int | Sequence[int] = 1,
                               padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1,
                               groups: int = 1, *, scale: Tensor, shift: Tensor, residual: Tensor,
                               relu: bool = False, codes_scale: float = 0.0, codes_zero_point: int = 0,
                               codes_only: bool = False) -> tuple[Tensor, Tensor]:
    """The int8 adder op with the residual fused: float32 ``[relu](scale * S + shift + residual)`` (N, OH, OW, O),
    ``residual`` laid out the same, and with ``codes_scale`` > 0 also its uint8 codes on that grid (exactly
    :func:`quantize_uint8` of the float output, channels-last), else an empty tensor. ``codes_only``: the codes
    alone (the float output is not written and comes back empty)."""
    if codes_only and codes_scale <= 0:
        raise ValueError("adder_conv2d_int8_residual: codes_only needs the codes' grid (codes_scale > 0)")
    if codes_scale != 0:
        _grid_scale(float(codes_scale), "adder_conv2d_int8_residual: the codes' scale")   # before packing
    scale32 = struct.unpack("f", struct.pack("f", float(codes_scale)))[0]
    args = (x, weight, int(zero_point), list(pair(stride, "stride")), list(pair(padding, "padding")),
            list(pair(dilation, "dilation")), int(groups), scale, shift, residual, bool(relu), scale32,
            int(codes_zero_point), bool(codes_only))
    return _residual_impl(*args) if _direct(x, weight, residual) else _adder_conv2d_int8_residual(*args)


def _check_quantize(x: Tensor, scale: float, zero_point: int, lo: int) -> None:
    if x.dim() != 4 or not x.dtype.is_floating_point:
        raise ValueError(f"quantize_uint8 expects a float (N, C, H, W) tensor, got {x.dtype} {tuple(x.shape)}")
    _grid_scale(scale, "quantize_uint8: the scale")
    _code(zero_point, "quantize_uint8: the zero point")
    _code(lo, "quantize_uint8: the clamp floor `lo`")


@torch.library.custom_op("adderconv::quantize_uint8", mutates_args=())
def _quantize_uint8(x: Tensor, scale: float, zero_point: int, lo: int) -> Tensor:
    _check_quantize(x, scale, zero_point, lo)
    if x.device.type == "cpu" and x.dtype == torch.float32 and int8.available():
        return int8.extension().quantize(x, scale, zero_point, lo)
    return int8_portable.quantize(x, torch.tensor(scale, dtype=torch.float32, device=x.device), zero_point, lo)


@_quantize_uint8.register_fake
def _(x, scale, zero_point, lo):
    _check_quantize(x, scale, zero_point, lo)
    return x.new_empty((x.shape[0], x.shape[2], x.shape[3], x.shape[1]), dtype=torch.uint8)


def quantize_uint8(x: Tensor, scale: float, zero_point: int, lo: int = 0) -> Tensor:
    """float (N, C, H, W) -> channels-last uint8 codes ``clamp(round(x / scale) + zero_point, lo, 255)``
    (``scale`` rounded to float32 first; division, as ONNX QuantizeLinear)."""
    _grid_scale(float(scale), "quantize_uint8: the scale")            # before float32 packing (1e300 overflows)
    scale32 = struct.unpack("f", struct.pack("f", float(scale)))[0]   # no tensor: nothing for a trace to read
    return _quantize_uint8(x, scale32, int(zero_point), int(lo))


# --- counting (adderconv.analysis): the ops' registrations, next to the ops ------------------------------
from ..counting import Tally as _Tally  # noqa: E402
from ..op_registry import register as _register_count  # noqa: E402


@_register_count(torch.ops.adderconv.adder_conv2d_int8, category="adder")
def _count_int8(outs, x, weight, mode):
    # as the float adder: |x - w| (an int8 add) and the accumulation (an int32 acc) per MAC; the fused
    # epilogue is a per-output affine (1 mul + 1 add), plus rounding and the clamp when it requantises
    out = math.prod(outs[0])
    macs = out * math.prod(weight[1:])
    epilogue = _Tally() if mode == 0 else _Tally(mul=out, add=out, cmp=2 * out if mode == 2 else 0)
    return _Tally(add=macs, acc=macs) + epilogue


@_register_count(torch.ops.adderconv.adder_conv2d_int8_residual, category="adder")
def _count_int8_residual(outs, x, weight, relu, qscale):
    # the adder and its float epilogue (mode 1), then the residual add, the ReLU and the fused quantiser
    out = math.prod(outs[1]) if qscale > 0 else math.prod(outs[0])
    macs = out * math.prod(weight[1:])
    quant = _Tally(mul=out, add=out, cmp=2 * out) if qscale > 0 else _Tally()
    return _Tally(add=macs, acc=macs) + _Tally(mul=out, add=2 * out, cmp=out if relu else 0) + quant


@_register_count(torch.ops.adderconv.quantize_uint8, category="elementwise")
def _count_quantize(outs, x):
    n = math.prod(x)
    return _Tally(mul=n, add=n, cmp=2 * n)   # scale, shift by the zero point, clamp to [lo, 255]
