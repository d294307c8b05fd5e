"""Adder layers with the constructor signatures of their torch.nn counterparts."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._shapes import same_padding
from .functional import adder_conv, adder_linear

__all__ = ["AdderConv2d", "AdderConv1d", "AdderConv3d", "AdderLinear"]

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _positive(what: str, value, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{what} must be an integer >= {low}, got {value!r}")


def _check_conv(in_channels: int, out_channels: int, groups: int, padding_mode: str) -> None:
    _positive("in_channels", in_channels)
    _positive("out_channels", out_channels)
    _positive("groups", groups)
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible "
                         f"by groups ({groups})")
    if padding_mode not in _PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")


def _geometry(kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int] | str,
              dilation: Sequence[int]) -> None:
    """Refused when the layer is built, not at its first forward: kernel, stride, dilation >= 1, padding >= 0."""
    for what, values, low in (("kernel_size", kernel_size, 1), ("stride", stride, 1), ("dilation", dilation, 1),
                              ("padding", () if isinstance(padding, str) else padding, 0)):
        if any(isinstance(v, bool) or not isinstance(v, int) or v < low for v in values):
            raise ValueError(f"{what} must be integers >= {low}, got {tuple(values)}")


def _ints(value: int | Sequence[int], n: int, what: str) -> tuple[int, ...]:
    """``value`` as ``n`` values, refusing what is not an integer (``int(1.5)`` would be a silent 1)."""
    items = tuple(value) if isinstance(value, (tuple, list, torch.Size)) else (value,) * n
    if len(items) == 1:
        items = items * n
    if len(items) != n or any(isinstance(v, bool) or not isinstance(v, int) for v in items):
        raise ValueError(f"{what} must be an integer or {n} integers, got {value!r}")
    return items


def _from_conv(cls: type, conv: nn.Module, conv_type: type[nn.Module]):
    """``cls`` (an adder layer with ``conv_type``'s constructor) with ``conv``'s geometry, copied weights and bias."""
    if not isinstance(conv, conv_type) or type(conv).forward is not conv_type.forward:
        raise TypeError(f"{cls.__name__}.from_conv expects an {conv_type.__name__}, got {type(conv).__name__}")
    layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                conv.groups, conv.bias is not None, conv.padding_mode, device=conv.weight.device,
                dtype=conv.weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(conv.weight)
        if conv.bias is not None:
            layer.bias.copy_(conv.bias)
    return layer


class _AdderConv(nn.Module):
    """What the 1-d and 2-d adder layers share: a 2-d geometry (the 1-d layer is a height-1 image), checks,
    init, padding modes. Siblings, not parent and child: ``isinstance(m, AdderConv2d)`` means a 4-d weight."""

    _conv_type: type[nn.Module] = nn.Conv2d
    norm_type: type[nn.Module] = nn.BatchNorm2d      # the BatchNorm the converter inserts after this layer

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | str = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = False,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_conv(in_channels, out_channels, groups, padding_mode)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _ints(kernel_size, 2, "kernel_size")
        self.stride = _ints(stride, 2, "stride")
        self.dilation = _ints(dilation, 2, "dilation")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"padding string must be 'same' or 'valid', got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError("padding='same' is not supported for strided adder layers (as in nn.Conv2d)")
            self.padding: tuple[int, int] | str = padding
        else:
            self.padding = _ints(padding, 2, "padding")
        _geometry(self.kernel_size, self.stride, self.padding, self.dilation)
        self.padding_mode = padding_mode
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The reference code's N(0, 1): BN follows, so the output scale does not matter, and weights on the
        # scale of the (normalised) inputs keep the adaptive-LR step (eta * sqrt(k) * lr) a small fraction
        # of ||W||. A conv-style 1/sqrt(fan_in) init makes each step move the weights by tens of percent.
        nn.init.normal_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @classmethod
    def from_conv(cls, conv: nn.Module) -> Self:
        """An adder layer with ``conv``'s geometry, weights (copied, not shared), bias, device and dtype."""
        return _from_conv(cls, conv, cls._conv_type)

    @classmethod
    def from_float(cls, module: nn.Module) -> Self:
        """The converter's one entry point (as torch.ao's ``from_float``): a user mapping names the class."""
        return cls.from_conv(module)

    def _explicit_padding(self) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) padding, resolving 'same' and 'valid'."""
        if self.padding == "valid":
            return (0, 0, 0, 0)
        if self.padding == "same":
            top, bottom = same_padding(self.kernel_size[0], self.dilation[0])
            left, right = same_padding(self.kernel_size[1], self.dilation[1])
            return (left, right, top, bottom)
        ph, pw = self.padding  # type: ignore[misc]
        return (pw, pw, ph, ph)

    def forward(self, x: Tensor) -> Tensor:
        padding = self.padding
        if self.padding_mode != "zeros":       # the functional pads with zeros; other modes are padded here
            x, padding = F.pad(x, self._explicit_padding(), mode=self.padding_mode), 0
        return adder_conv(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding not in ((0, 0), "valid"):
            s += f", padding={self.padding!r}" if isinstance(self.padding, str) else f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return s


class AdderConv2d(_AdderConv):
    """2-d adder layer: ``Y = -sum |X - W|`` over each receptive field (AdderNet, CVPR 2020).

    Arguments mean what they mean for :class:`torch.nn.Conv2d`. Follow it with BatchNorm: the outputs are
    all negative and large, and training stalls without normalisation.

    >>> layer = AdderConv2d(3, 8, 3, padding=1)
    >>> layer(torch.randn(1, 3, 16, 16)).shape
    torch.Size([1, 8, 16, 16])
    """


class AdderConv1d(_AdderConv):
    """1-d adder layer (runs the 2-d op on a height-1 image). Arguments as :class:`torch.nn.Conv1d`."""

    _conv_type = nn.Conv1d
    norm_type = nn.BatchNorm1d

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 stride: int | Sequence[int] = 1, padding: int | Sequence[int] | str = 0,
                 dilation: int | Sequence[int] = 1, groups: int = 1, bias: bool = False,
                 padding_mode: str = "zeros", device=None, dtype=None) -> None:
        one = lambda v: v if isinstance(v, str) else (1, _single(v))  # noqa: E731
        super().__init__(in_channels, out_channels, one(kernel_size), one(stride),
                         padding if isinstance(padding, str) else (0, _single(padding)), one(dilation),
                         groups, bias, padding_mode, device, dtype)
        # Store the weight as Conv1d does, (O, I/G, k): state dicts swap freely with nn.Conv1d's.
        self.weight = nn.Parameter(self.weight.data.squeeze(2))

    def forward(self, x: Tensor) -> Tensor:
        padding = self.padding if isinstance(self.padding, str) else self.padding[1]
        if self.padding_mode != "zeros":
            x, padding = F.pad(x, self._explicit_padding()[:2], mode=self.padding_mode), 0
        return adder_conv(x, self.weight, self.bias, self.stride[1], padding, self.dilation[1], self.groups)


class AdderConv3d(nn.Module):
    """3-d adder layer for video and volumetric nets. Arguments as :class:`torch.nn.Conv3d`; the op is exactly
    a sum of 2-d adder convolutions over the kernel's depth taps (:func:`adderconv.ops.adder_conv3d`).

    >>> AdderConv3d(3, 4, 3, padding=1)(torch.randn(1, 3, 4, 8, 8)).shape
    torch.Size([1, 4, 4, 8, 8])
    """

    norm_type = nn.BatchNorm3d

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 stride: int | Sequence[int] = 1, padding: int | Sequence[int] | str = 0,
                 dilation: int | Sequence[int] = 1, groups: int = 1, bias: bool = False,
                 padding_mode: str = "zeros", device=None, dtype=None) -> None:
        super().__init__()
        _check_conv(in_channels, out_channels, groups, padding_mode)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _ints(kernel_size, 3, "kernel_size")
        self.stride, self.dilation = _ints(stride, 3, "stride"), _ints(dilation, 3, "dilation")
        if isinstance(padding, str) and padding not in ("same", "valid"):
            raise ValueError(f"padding string must be 'same' or 'valid', got {padding!r}")
        if padding == "same" and self.stride != (1, 1, 1):
            raise ValueError("padding='same' is not supported for strided adder layers (as in nn.Conv3d)")
        self.padding = padding if isinstance(padding, str) else _ints(padding, 3, "padding")
        _geometry(self.kernel_size, self.stride, self.padding, self.dilation)
        self.padding_mode = padding_mode
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size, **factory))
        self.bias = nn.Parameter(torch.zeros(out_channels, **factory)) if bias else None
        nn.init.normal_(self.weight)   # as AdderConv2d (see there)

    @classmethod
    def from_conv(cls, conv: nn.Conv3d) -> "AdderConv3d":
        """An adder layer with ``conv``'s geometry, weights (copied), bias, device and dtype."""
        return _from_conv(cls, conv, nn.Conv3d)

    from_float = from_conv

    def forward(self, x: Tensor) -> Tensor:
        padding = self.padding
        if self.padding_mode != "zeros":
            pads = ([same_padding(k, d) for k, d in zip(self.kernel_size, self.dilation)] if padding == "same" else
                    [(0, 0)] * 3 if padding == "valid" else [(p, p) for p in padding])  # type: ignore[union-attr]
            x, padding = F.pad(x, [v for a, b in reversed(pads) for v in (a, b)], mode=self.padding_mode), 0
        return adder_conv(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}")


def _single(v: int | Sequence[int]) -> int:
    if isinstance(v, int):
        return v
    (item,) = tuple(v)
    return int(item)


class AdderLinear(nn.Module):
    """Fully connected adder layer: ``y[o] = -sum_i |x[i] - W[o, i]|`` (+ bias). Arguments as nn.Linear."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, device=None, dtype=None) -> None:
        super().__init__()
        _positive("in_features", in_features)
        _positive("out_features", out_features)
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(out_features, device=device, dtype=dtype)) if bias else None
        nn.init.normal_(self.weight)   # as AdderConv2d (see there)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    norm_type = nn.BatchNorm1d

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "AdderLinear":
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear expects an nn.Linear, got {type(linear).__name__}")
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(linear.weight)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    @classmethod
    def from_float(cls, module: nn.Module) -> "AdderLinear":
        return cls.from_linear(module)

    def forward(self, x: Tensor) -> Tensor:
        return adder_linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
