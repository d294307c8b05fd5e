"""The quantised adder layer: integer codes (4 to 8 bits, held in bytes) on one grid, int32 SAD sums, the following
BatchNorm folded in.

``QuantAdderConv2d`` replaces an :class:`~adderconv.AdderConv2d` (zero padding, symmetric). It takes float
NCHW (or, from a chained quantised layer before it, uint8 channels-last codes already on its grid) and returns
either float ``a[o] * S + b[o]`` (dequantisation, the adder's bias and the folded BatchNorm in one affine;
channels-last strided NCHW) or, when the next consumer is another quantised adder layer, uint8 codes on that
layer's grid, with a ReLU between them folded into the clamp (``relu`` then quantise = clamp at its zero
point). Everything it needs to run is in its buffers and in plain ints from the recipe.

At N < 8 bits the codes are clamped to ``2^N - 1`` after the uint8 kernels (which clamp at 255): the same SAD
kernels serve every width, one extra clamp where a layer writes codes. With ``grid_groups`` k > 1 the output
channels are split into k groups, each with its own grid (scale and zero point): the float input is quantised
once per group, each group's channels run the same SAD kernel on their own codes, and the outputs are gathered
back into channel order (:mod:`.scheme` explains why one grid per group, never per channel pair).

>>> from adderconv import AdderConv2d
>>> from adderconv.quant.scheme import Grid
>>> layer = QuantAdderConv2d.from_adder(AdderConv2d(8, 4, 3, padding=1), Grid(0.05, 128))
>>> layer(torch.randn(1, 8, 6, 6)).shape
torch.Size([1, 4, 6, 6])
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import AdderconvError
from ..layers import AdderConv2d, AdderLinear
from .op import adder_conv2d_int8, adder_conv2d_int8_residual, quantize_uint8
from .scheme import Grid, check_bits

__all__ = ["QuantAdderConv2d", "QuantAdderLinear", "quantizable", "affine_of", "weight_codes", "fold_bn", "from_adder",
           "RESIDUAL", "check_parameters"]

RESIDUAL = ("", "add", "add_relu")   # what a layer's epilogue does with a residual: nothing, add it, add + ReLU
_CODES = "_adderconv_codes"          # a float output's attribute: its codes on the next layers' grid (see forward)


def _describe(t: Tensor) -> str:
    bad = t[~torch.isfinite(t)] if t.dtype.is_floating_point else t
    return repr(bad.flatten()[0].item() if bad.numel() else t.flatten()[0].item())


def check_parameters(where: str, weight: Tensor | None, input_scale: Tensor | None, out_scale: Tensor | None,
                     out_shift: Tensor | None, codes_scale: Tensor | None, taps: int, qmax: int = 255,
                     grids: int = 1, channel_group: Tensor | None = None) -> None:
    """A quantised layer's values (as stored: float32 scales, integer codes), each None where absent:

    - weight codes integers in [0, ``qmax``] (int32 300 would be stored as 44; a 4-bit layer's codes stop at 15);
    - grid scales (``input_scale``: ``grids`` of them, ``codes_scale``: one) finite, at least float32's smallest
      normal and at most float32's max / 255 (0, -1, NaN, inf and 1e300 are not; the codes must span a finite range);
    - ``channel_group``: each output channel's grid, integers in [0, ``grids``), every grid used;
    - the epilogue ``out_scale * S + out_shift`` finite for every sum S in [0, qmax * taps] (NaN, inf refused).

    Raises :class:`AdderconvError` naming ``where`` and the value."""
    f32 = torch.finfo(torch.float32)
    if weight is not None and weight.numel() and (int(weight.min()) < 0 or int(weight.max()) > qmax):
        bad = weight[(weight < 0) | (weight > qmax)].flatten()[0].item()
        raise AdderconvError(f"{where}: weight codes must be in [0, {qmax}], got {bad} (a tampered or damaged file)")
    for name, t, n in (("input_scale", input_scale, grids), ("codes_scale", codes_scale, 1)):
        if t is None:
            continue
        v = t.double().flatten()
        if t.numel() != n or not bool(((v >= f32.tiny) & (v <= f32.max / 255)).all()):
            raise AdderconvError(f"{where}: {name} must be {n} float32 in [{f32.tiny:.3g}, {f32.max / 255:.3g}] (a "
                                 f"grid of 255 finite steps), got {_describe(t) if t.numel() else 'nothing'}"
                                 + (f" ({t.numel()} values)" if t.numel() != n else ""))
    if channel_group is not None:
        if (channel_group.dtype != torch.int64 or not channel_group.numel() or int(channel_group.min()) < 0
                or int(channel_group.max()) >= grids or int(channel_group.unique().numel()) != grids):
            raise AdderconvError(f"{where}: channel_group must give each output channel one of {grids} grids, "
                                 f"each used, got {channel_group.dtype} {channel_group.flatten()[:8].tolist()}")
    for name, t in (("out_scale", out_scale), ("out_shift", out_shift)):
        if t is not None and not bool(torch.isfinite(t).all()):
            raise AdderconvError(f"{where}: {name} must be finite, got {_describe(t)} (a tampered or damaged file)")
    if out_scale is not None and out_shift is not None and out_scale.shape == out_shift.shape:
        reach = out_scale.double().abs() * (float(qmax) * taps) + out_shift.double().abs()
        if out_scale.numel() and float(reach.max()) >= f32.max:
            raise AdderconvError(f"{where}: the epilogue out_scale * S + out_shift overflows float32 for sums up to "
                                 f"{qmax * taps} (out_scale up to {float(out_scale.abs().max()):.3g})")


def _check_loaded(module: QuantAdderConv2d, state: dict, prefix: str, *_) -> None:
    """Every value a file gives a layer, as it will be stored, before it lands (a tampered file names the layer
    and the value, in one line); see :func:`check_parameters`."""
    where = prefix.rstrip(".") or type(module).__name__

    def get(name: str) -> Tensor | None:
        t = state.get(prefix + name)
        return t.to(torch.float32) if t is not None and t.dtype.is_floating_point else t

    weight = state.get(prefix + "weight")
    if weight is not None and (weight.dtype.is_floating_point or weight.dtype.is_complex or weight.dtype == torch.bool):
        raise AdderconvError(f"{where}: weight codes must be integers in [0, {module.qmax}], got {weight.dtype}")
    check_parameters(where, weight, get("input_scale"), get("out_scale"), get("out_shift"),
                     get("codes_scale") if module.codes_zero_point >= 0 else None, module.weight[0].numel(),
                     module.qmax, module.grid_groups, state.get(prefix + "channel_group"))


def _eager(t: Tensor) -> bool:
    """A plain tensor outside any trace (fake, functional and compiled tensors see the unfused ops)."""
    return type(t) is Tensor and not torch.compiler.is_compiling()


def quantizable(module: nn.Module) -> str | None:
    """None if ``module`` can become a :class:`QuantAdderConv2d`, else why not."""
    if type(module) is AdderLinear:
        return None
    if type(module) is not AdderConv2d:
        return f"{type(module).__name__} stays float (AdderConv2d and AdderLinear layers are quantised)"
    if module.padding_mode != "zeros":
        return f"padding_mode={module.padding_mode!r} stays float (the grid pads with zeros only)"
    left, right, top, bottom = module._explicit_padding()
    if left != right or top != bottom:
        return "asymmetric padding stays float"
    return None


def _per_channel(grids: Grid | Sequence[Grid], group_of: Tensor | None, channels: int) -> list[Grid]:
    """Each output channel's grid: one ``grid`` for all, or ``grids[group_of[o]]``."""
    if isinstance(grids, Grid):
        return [grids] * channels
    if group_of is None or group_of.numel() != channels:
        raise AdderconvError(f"{len(grids)} grids need the grid of each of the {channels} output channels")
    return [grids[int(g)] for g in group_of]


def affine_of(adder: AdderConv2d | AdderLinear, grid: Grid | Sequence[Grid],
              group_of: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(a, b) in float64 with ``adder(x) = a * S + b`` per output channel, S = sum |q(x) - q(w)|, on one ``grid``
    or on ``grid[group_of[o]]`` for channel o.

    Weights outside the grid's range are clipped to it by their codes; for inputs inside the range that adds
    ``C_o = sum_j dist(w_oj, [lo, hi])`` to every sum exactly (:mod:`.scheme`), so ``b = -C_o (+ bias)``."""
    w = adder.weight.detach().double().flatten(1)
    per = _per_channel(grid, group_of, w.shape[0])
    lo = torch.tensor([g.bounds[0] for g in per], dtype=torch.float64)[:, None]
    hi = torch.tensor([g.bounds[1] for g in per], dtype=torch.float64)[:, None]
    outside = (w - hi).clamp(min=0) + (lo - w).clamp(min=0)
    a = -torch.tensor([g.scale for g in per], dtype=torch.float64)
    b = -outside.sum(1)
    return a, b if adder.bias is None else b + adder.bias.detach().double()


def weight_codes(adder: AdderConv2d | AdderLinear, grid: Grid | Sequence[Grid],
                 group_of: Tensor | None = None) -> Tensor:
    """The weight's codes, each output channel's on its grid (clipped to it: :func:`affine_of` folds the rest)."""
    w = adder.weight.detach().cpu()
    per = _per_channel(grid, group_of, w.shape[0])
    if isinstance(grid, Grid):
        return grid.codes(w)
    return torch.stack([g.codes(w[o]) for o, g in enumerate(per)])


def fold_bn(a: Tensor, b: Tensor, bn: nn.BatchNorm2d | nn.BatchNorm1d) -> tuple[Tensor, Tensor]:
    """Compose the eval-mode BatchNorm after ``a * S + b`` (legal here: BN is affine in the adder's output)."""
    if bn.running_mean is None or bn.running_var is None:
        raise AdderconvError("a BatchNorm without running statistics cannot be folded")
    k = torch.ones_like(a) if bn.weight is None else bn.weight.detach().double()
    k = k / torch.sqrt(bn.running_var.detach().double() + bn.eps)
    beta = torch.zeros_like(a) if bn.bias is None else bn.bias.detach().double()
    return a * k, (b - bn.running_mean.detach().double()) * k + beta


class QuantAdderConv2d(nn.Module):
    """An integer adder layer (eval only). Buffers: ``weight`` (uint8 codes), ``input_scale`` (the grid's scale;
    one per grid with ``grid_groups`` > 1), ``channel_group`` (each output channel's grid, only with
    ``grid_groups`` > 1), ``out_scale``/``out_shift`` (the fused epilogue), ``codes_scale`` (with
    :meth:`set_codes`). Plain values: ``bits``, ``zero_point`` (``zero_points``: one per grid), ``out_mode``,
    ``out_lo``, ``residual`` (set by :mod:`.fuse`), ``codes_zero_point``. It declares ``energy_precision``
    ``"int<bits>"``, the width the energy analysis prices its operations at.

    A layer with several grids takes float input only (each grid quantises it) and never fuses a residual.

    A residual layer (``residual`` "add" or "add_relu", float output) is called as ``layer(x, identity)`` and
    returns ``[relu](a * S + b + identity)``: the same float32 operations, in the same order, as the unfused
    ``relu(layer(x) + identity)``, so the result is bit-identical. With :meth:`set_codes` it also writes that
    output's uint8 codes on the grid of the layers that read it (exactly what their quantiser would give) and
    hangs them on the float output with its version; such a reader takes them instead of quantising again.
    When only such readers read the sum (``codes_only``), it returns the codes alone, as a chained layer does.
    Under a trace (torch.export, fake tensors) the layer runs the unfused ops, so an export sees those."""

    energy_precision = "int8"   # what the energy analysis prices this layer's operations at (per instance: bits)

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int], stride: tuple[int, int],
                 padding: tuple[int, int], dilation: tuple[int, int], groups: int, zero_point: int | Sequence[int],
                 out_mode: str = "float", out_lo: int = 0, bits: int = 8) -> None:
        super().__init__()
        if out_mode not in ("float", "uint8"):
            raise AdderconvError(f"out_mode must be 'float' or 'uint8', got {out_mode!r}")
        self.bits = check_bits(bits)
        zero_points = [int(z) for z in zero_point] if isinstance(zero_point, Sequence) else [int(zero_point)]
        if not zero_points or not (all(0 <= z <= self.qmax for z in zero_points) and 0 <= int(out_lo) <= self.qmax):
            raise AdderconvError(f"zero points and output floor must be in [0, {self.qmax}] ({bits} bits), got "
                                 f"{zero_points}, {out_lo}")
        if len(zero_points) > 1 and (groups != 1 or len(zero_points) > out_channels):
            raise AdderconvError(f"{len(zero_points)} grids need a layer of at least as many output channels and no "
                                 f"channel groups, got {out_channels} channels, groups={groups}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self.zero_points, self.zero_point = tuple(zero_points), zero_points[0]
        self.grid_groups = len(zero_points)
        self.out_mode, self.out_lo = out_mode, int(out_lo)
        self.energy_precision = f"int{self.bits}"
        self.register_buffer("weight", torch.zeros(out_channels, in_channels // groups, *kernel_size,
                                                   dtype=torch.uint8))
        k = self.grid_groups
        self.register_buffer("input_scale", torch.ones((k,) if k > 1 else (), dtype=torch.float32))
        if k > 1:
            self.register_buffer("channel_group", torch.arange(out_channels, dtype=torch.int64) * k // out_channels)
        self.register_buffer("out_scale", torch.zeros(out_channels, dtype=torch.float32))
        self.register_buffer("out_shift", torch.zeros(out_channels, dtype=torch.float32))
        self.residual, self.codes_zero_point, self.codes_only = "", -1, False
        self._scale = 1.0   # input_scale as a Python float: forward never reads a tensor's value
        self._codes_scale = 0.0
        self._parts: list[tuple] = []   # with several grids: per grid (scale, zero point, weight, epilogue)
        self.register_load_state_dict_pre_hook(_check_loaded)
        self.register_load_state_dict_post_hook(lambda module, _: module._refresh())

    @property
    def qmax(self) -> int:
        """The largest code, 2^bits - 1."""
        return (1 << self.bits) - 1

    def check(self, where: str = "") -> None:
        """Raise :class:`AdderconvError` unless every stored value is valid (see :func:`check_parameters`)."""
        check_parameters(where or type(self).__name__, self.weight, self.input_scale, self.out_scale, self.out_shift,
                         self.codes_scale if self.codes_zero_point >= 0 else None, self.weight[0].numel(),
                         self.qmax, self.grid_groups, getattr(self, "channel_group", None))

    def _refresh(self) -> None:
        self._scale = float(self.input_scale.flatten()[0])
        self._codes_scale = float(self.codes_scale) if self.codes_zero_point >= 0 else 0.0
        if self.grid_groups > 1:   # each grid's channels, contiguous (the kernel's packed-weight cache keeps them)
            order = torch.argsort(self.channel_group, stable=True)
            self._inverse = torch.argsort(order)
            self._parts = []
            for g in range(self.grid_groups):
                idx = order[self.channel_group[order] == g]
                self._parts.append((float(self.input_scale[g]), self.zero_points[g], self.weight[idx].contiguous(),
                                    self.out_scale[idx].contiguous(), self.out_shift[idx].contiguous()))

    def _clamp(self, q: Tensor) -> Tensor:
        """Codes from the uint8 kernels (clamped at 255) on this width's grid: ``min(q, 2^bits - 1)``."""
        if self.bits == 8:
            return q
        return q.clamp_max_(self.qmax) if _eager(q) else q.clamp_max(self.qmax)

    def set_residual(self, kind: str) -> None:
        """Fuse a residual add ("add") and a ReLU after it ("add_relu") into the float epilogue ("": none)."""
        if kind not in RESIDUAL or (kind and self.out_mode != "float"):
            raise AdderconvError(f"a residual epilogue is one of {RESIDUAL} on a float-output layer, got {kind!r} "
                                 f"on out={self.out_mode}")
        self.residual = kind

    def set_codes(self, zero_point: int, grid: Grid | None = None, only: bool = False) -> None:
        """Also emit the output's codes on the readers' grid (its scale from ``grid``, or from a loaded file);
        ``only``: return just the codes (uint8 channels-last, as a chained layer does) when nothing else reads
        the float sum."""
        if not self.residual or not 0 <= int(zero_point) <= self.qmax:
            raise AdderconvError(f"codes are emitted by a residual layer on a zero point in [0, {self.qmax}], got "
                                 f"{zero_point!r} on residual={self.residual!r}")
        if "codes_scale" not in self._buffers:
            self.register_buffer("codes_scale", torch.ones((), dtype=torch.float32))
        self.codes_zero_point, self.codes_only = int(zero_point), bool(only)
        if grid is not None:
            self.codes_scale.fill_(grid.scale)
        self._refresh()

    @classmethod
    def from_adder(cls, adder: AdderConv2d, grid: Grid | Sequence[Grid],
                   group_of: Tensor | None = None) -> QuantAdderConv2d:
        """The layer with ``adder``'s geometry and weights on ``grid`` (or output channel o on
        ``grid[group_of[o]]``), float output, nothing folded yet."""
        why = quantizable(adder)
        if why:
            raise AdderconvError(f"cannot quantise this layer: {why}")
        left, _, top, _ = adder._explicit_padding()
        grids = [grid] if isinstance(grid, Grid) else list(grid)
        layer = cls(adder.in_channels, adder.out_channels, adder.kernel_size, adder.stride, (top, left),
                    adder.dilation, adder.groups, [g.zero_point for g in grids], bits=grids[0].bits)
        layer._fill(adder, grid, group_of)
        return layer

    def _fill(self, adder: nn.Module, grid: Grid | Sequence[Grid], group_of: Tensor | None) -> None:
        grids = [grid] if isinstance(grid, Grid) else list(grid)
        if any(g.bits != self.bits for g in grids):
            raise AdderconvError(f"a {self.bits}-bit layer needs {self.bits}-bit grids, got {[g.bits for g in grids]}")
        self.weight.copy_(weight_codes(adder, grid, group_of).reshape(self.weight.shape))
        self.input_scale.copy_(torch.tensor([g.scale for g in grids], dtype=torch.float32).reshape(
            self.input_scale.shape))
        if self.grid_groups > 1:
            self.channel_group.copy_(group_of)
        self.set_epilogue(*affine_of(adder, grid, group_of))
        self.check()

    @property
    def grid(self) -> Grid:
        """The input's grid (the first grid's, with several)."""
        return Grid(self._scale if self._parts else float(self.input_scale.flatten()[0]), self.zero_point, self.bits)

    @property
    def grids(self) -> list[Grid]:
        """Every grid, in the order ``channel_group`` numbers them."""
        return [Grid(float(s), z, self.bits) for s, z in zip(self.input_scale.flatten().tolist(), self.zero_points)]

    def set_epilogue(self, a: Tensor, b: Tensor, next_grid: Grid | None = None, relu: bool = False) -> None:
        """Float output ``a * S + b``; with ``next_grid``, uint8 codes on it (and ``relu`` folded into the clamp)."""
        if next_grid is None:
            self.out_mode, self.out_lo = "float", 0
        else:
            a, b = a / next_grid.scale, b / next_grid.scale + next_grid.zero_point
            self.out_mode, self.out_lo = "uint8", next_grid.zero_point if relu else 0
        self.out_scale.copy_(a.to(torch.float32))
        self.out_shift.copy_(b.to(torch.float32))
        check_parameters(type(self).__name__, None, None, self.out_scale, self.out_shift, None, self.weight[0].numel(),
                         self.qmax)
        self._refresh()

    def quantize_input(self, x: Tensor) -> Tensor:
        """float NCHW -> uint8 channels-last codes on this layer's grid (a uint8 input is taken as such)."""
        if x.dtype == torch.uint8:
            return x
        hit = getattr(x, _CODES, None)
        if hit is not None and hit[0] == (self._scale, self.zero_point) and hit[1] == x._version:
            return hit[2]
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise AdderconvError(f"{type(self).__name__} expects (N, {self.in_channels}, H, W), "
                                 f"got {tuple(x.shape)}")
        return self._clamp(quantize_uint8(x, self._scale, self.zero_point))

    def _grouped(self, x: Tensor) -> Tensor:
        """Several grids: float NCHW ``x`` quantised once per grid, each grid's channels through the SAD kernel on
        its codes, gathered back into channel order (channels-last, as the kernel's output)."""
        if x.dtype == torch.uint8:
            raise AdderconvError(f"{type(self).__name__} with {self.grid_groups} grids quantises a float input once "
                                 f"per grid; it cannot take codes")
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise AdderconvError(f"{type(self).__name__} expects (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        outs = [adder_conv2d_int8(self._clamp(quantize_uint8(x, scale, zp)), w, zp, self.stride, self.padding,
                                  self.dilation, self.groups, a, b, self.out_mode, self.out_lo)
                for scale, zp, w, a, b in self._parts]
        return torch.cat(outs, dim=3).index_select(3, self._inverse)

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        if self.grid_groups > 1:
            y = self._grouped(x)
        else:
            q = self.quantize_input(x)
            if residual is not None or self.residual:
                return self._residual_forward(q, residual)
            y = adder_conv2d_int8(q, self.weight, self.zero_point, self.stride, self.padding, self.dilation,
                                  self.groups, self.out_scale, self.out_shift, self.out_mode, self.out_lo)
        return y.permute(0, 3, 1, 2) if self.out_mode == "float" else self._clamp(y)

    def _residual_forward(self, q: Tensor, residual: Tensor | None) -> Tensor:
        if residual is None or not self.residual:
            raise AdderconvError(f"{type(self).__name__}: a residual is passed to a layer whose epilogue adds one "
                                 f"(residual={self.residual!r}, got {'none' if residual is None else 'one'})")
        relu = self.residual == "add_relu"
        if not (_eager(q) and _eager(residual)):   # traced: the unfused ops, the same float32 arithmetic
            y = adder_conv2d_int8(q, self.weight, self.zero_point, self.stride, self.padding, self.dilation,
                                  self.groups, self.out_scale, self.out_shift, "float").permute(0, 3, 1, 2)
            y = y + residual
            y = torch.relu(y) if relu else y
            return self._clamp(quantize_uint8(y, self._codes_scale, self.codes_zero_point)) if self.codes_only else y
        y, codes = adder_conv2d_int8_residual(q, self.weight, self.zero_point, self.stride, self.padding,
                                              self.dilation, self.groups, scale=self.out_scale,
                                              shift=self.out_shift, residual=residual.permute(0, 2, 3, 1),
                                              relu=relu, codes_scale=self._codes_scale,
                                              codes_zero_point=max(self.codes_zero_point, 0),
                                              codes_only=self.codes_only)
        if self.codes_zero_point >= 0:
            codes = self._clamp(codes)
        if self.codes_only:
            return codes
        out = y.permute(0, 3, 1, 2)
        if self.codes_zero_point >= 0:
            setattr(out, _CODES, ((self._codes_scale, self.codes_zero_point), out._version, codes))
        return out

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                + (f"zero_point={self.zero_point}" if self.grid_groups == 1 else f"zero_points={self.zero_points}")
                + (f", bits={self.bits}" if self.bits != 8 else "")
                + f", out={self.out_mode}" + (f", lo={self.out_lo}" if self.out_lo else "")
                + (f", residual={self.residual}" if self.residual else "")
                + (f", codes_zero_point={self.codes_zero_point}" if self.codes_zero_point >= 0 else "")
                + (", codes_only=True" if self.codes_only else ""))



class QuantAdderLinear(QuantAdderConv2d):
    """An integer :class:`~adderconv.AdderLinear`: the same op as a 1x1 layer on (N, 1, 1, F) codes; takes float
    (N, F) (or uint8 codes from a chained layer) and returns float (N, O) or uint8 codes (N, 1, 1, O)."""

    def __init__(self, in_features: int, out_features: int, zero_point: int | Sequence[int], out_mode: str = "float",
                 out_lo: int = 0, bits: int = 8) -> None:
        super().__init__(in_features, out_features, (1, 1), (1, 1), (0, 0), (1, 1), 1, zero_point, out_mode, out_lo,
                         bits)

    @classmethod
    def from_adder(cls, adder: AdderLinear, grid: Grid | Sequence[Grid],   # type: ignore[override]
                   group_of: Tensor | None = None) -> QuantAdderLinear:
        grids = [grid] if isinstance(grid, Grid) else list(grid)
        layer = cls(adder.in_features, adder.out_features, [g.zero_point for g in grids], bits=grids[0].bits)
        layer._fill(adder, grid, group_of)
        return layer

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype != torch.uint8 and (x.dim() != 2 or x.shape[1] != self.in_channels):
            raise AdderconvError(f"{type(self).__name__} expects (N, {self.in_channels}), got {tuple(x.shape)}")
        if self.grid_groups > 1:
            y = self._grouped(x[:, :, None, None])
        else:
            if x.dtype != torch.uint8:
                x = self._clamp(quantize_uint8(x[:, :, None, None], self._scale, self.zero_point))
            y = adder_conv2d_int8(x, self.weight, self.zero_point, 1, 0, 1, 1, self.out_scale, self.out_shift,
                                  self.out_mode, self.out_lo)
        return y.reshape(y.shape[0], self.out_channels) if self.out_mode == "float" else self._clamp(y)


def from_adder(adder: nn.Module, grid: Grid | Sequence[Grid], group_of: Tensor | None = None) -> QuantAdderConv2d:
    """The quantised twin of an :class:`~adderconv.AdderConv2d` or :class:`~adderconv.AdderLinear`, on one ``grid``
    or with output channel o on ``grid[group_of[o]]``."""
    if type(adder) is AdderLinear:
        return QuantAdderLinear.from_adder(adder, grid, group_of)
    return QuantAdderConv2d.from_adder(adder, grid, group_of)
