"""``adderconv.quantize``: an integer (4 to 8 bit) copy of an adder network, calibrated on real batches.

Every :class:`~adderconv.AdderConv2d` (zero, symmetric padding) and :class:`~adderconv.AdderLinear` becomes a
:class:`~adderconv.quant.layers.QuantAdderConv2d` (``QuantAdderLinear``) on its own shared grid
(:mod:`.scheme`), the BatchNorm after it folded into its epilogue, uint8 codes handed on where the next
consumer is another quantised layer (:mod:`.plan`). Multiplicative layers (stem, classifier) stay float:
they are ~1-2% of ResNet-20's operations. The result takes and returns float tensors, runs in eval mode and
records its recipe (plain JSON data, see :mod:`.recipe`) so that a saved file is rebuilt by
:func:`adderconv.load_model`. ``bits`` (4..8) sets the code width: codes stay unsigned bytes on 0 .. 2^bits - 1,
so the same uint8 SAD kernels run every width. ``groups`` k > 1 gives each layer k grids shared by groups of its
output channels (:mod:`.scheme`); such a layer takes float input (quantised once per grid) and hands float on.

>>> import torch, adderconv
>>> net = adderconv.get_model("resnet20_adder").eval()
>>> q = adderconv.quantize(net, torch.randn(8, 3, 32, 32))
>>> q(torch.randn(2, 3, 32, 32)).shape
torch.Size([2, 10])
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import AdderconvError
from ..io import first_line
from ..layers import AdderConv1d, AdderConv2d, AdderLinear
from .fuse import fuse_residuals
from .layers import affine_of, fold_bn, from_adder, quantizable
from .plan import Plan, codes_for_readers, codes_to, plan
from .qat import FakeQuantAdder
from .scheme import METHODS, Grid, Observer, check_bits, choose_grid, group_grids, split_channels

__all__ = ["quantize", "QuantReport", "set_module", "calibration_batches", "build"]


@dataclass
class QuantReport:
    """What quantisation did: per-layer grids and folds, the calibration used, layers left float and why."""

    method: str
    percentile: float | None
    batches: int
    samples: int
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    bits: int = 8
    groups: int = 1

    def describe_calibration(self) -> str:
        how = f"{self.method} ({self.percentile:g}th percentile)" if self.method == "percentile" else self.method
        return f"{how} over {self.samples} samples in {self.batches} batches"

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "percentile": self.percentile, "batches": self.batches, "samples": self.samples,
                "bits": self.bits, "groups": self.groups, "layers": self.layers, "skipped": self.skipped,
                "notes": self.notes}


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def calibration_batches(calibration: Tensor | Iterable[Any], limit: int | None = None) -> Iterable[Tensor]:
    """Input batches from a tensor (one batch), or an iterable of tensors or (input, target) pairs."""
    if isinstance(calibration, Tensor):
        yield calibration
        return
    for i, item in enumerate(calibration):
        if limit is not None and i >= limit:
            return
        x = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(x, Tensor):
            raise AdderconvError(f"calibration data must be tensors or (input, target) pairs, got {type(x).__name__}")
        yield x


def _check_model(model: nn.Module) -> tuple[list[str], dict[str, str]]:
    adders = {n: m for n, m in model.named_modules() if isinstance(m, (AdderConv2d, AdderConv1d, AdderLinear))}
    if not adders:
        raise AdderconvError("the model has no adder layers to quantise (convert it first: adderconv convert)")
    skipped = {n: why for n, m in adders.items() if (why := quantizable(m))}
    layers = [n for n in adders if n not in skipped]
    if not layers:
        raise AdderconvError(f"none of the model's {len(adders)} adder layers can be quantised: "
                             f"{next(iter(skipped.values()))}")
    return layers, skipped


def _grid_groups(src: nn.Module, layers: list[str], groups: int) -> dict[str, int]:
    """How many grids each layer gets: ``groups``, or 1 for a layer with channel groups (a depthwise layer's
    output channels read different inputs); more grids than a layer's output channels is an error."""
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise AdderconvError(f"`groups` (grids per layer) must be a positive integer, got {groups!r}")
    out = {}
    for n in layers:
        m = src.get_submodule(n)
        channels = m.weight.shape[0]
        if groups > channels:
            raise AdderconvError(f"`groups` is {groups}, more than the {channels} output channels of layer {n!r}")
        out[n] = groups if getattr(m, "groups", 1) == 1 else 1
    return out


def _observe(src: nn.Module, layers: list[str], calibration: Tensor | Iterable[Any],
             max_batches: int | None) -> tuple[dict[str, Observer], int, int]:
    """Run the calibration batches through ``src``, observing each layer's input: (observers, batches, samples)."""
    observers = {n: Observer(seed=i) for i, n in enumerate(layers)}
    hooks = [src.get_submodule(n).register_forward_pre_hook(lambda m, args, o=observers[n]: o(args[0]))
             for n in layers]
    batches = samples = 0
    try:
        for x in calibration_batches(calibration, max_batches):
            try:
                src(x.to(torch.float32))
            except Exception as e:  # the model says what it expected; keep the first line
                raise AdderconvError(f"calibration batch of shape {tuple(x.shape)} does not fit the model: "
                                     f"{first_line(e)}") from None
            batches, samples = batches + 1, samples + int(x.shape[0]) if x.dim() else samples + 1
    finally:
        for h in hooks:
            h.remove()
    if batches == 0:
        raise AdderconvError("the calibration data is empty: quantisation needs at least one batch")
    return observers, batches, samples


#: a layer's grids: one, or one per group with each output channel's group
LayerGrids = tuple[Grid | list[Grid], Tensor | None]


@torch.no_grad()
def quantize(model: nn.Module, calibration: Tensor | Iterable[Any] | None, *, bits: int = 8, groups: int = 1,
             method: str = "percentile", percentile: float = 99.99, max_batches: int | None = None) -> nn.Module:
    """A quantised, eval-mode copy of ``model`` (which is not changed); see the module docstring.

    ``calibration``: a batch, or an iterable of batches or (input, target) pairs, run through the float model
    to choose each layer's grid by ``method`` (``minmax``, ``percentile`` or ``mse``; see :mod:`.scheme`).
    ``bits``: the code width, 4..8. ``groups``: grids per layer (output channels grouped by weight range).
    A model from :func:`adderconv.quant.qat.prepare_qat` keeps the grids it trained on (``calibration`` unused;
    ``bits`` and ``groups`` must be the ones it was prepared with).
    """
    check_bits(bits)
    if method not in METHODS:
        raise AdderconvError(f"calibration method must be one of {', '.join(METHODS)}, got {method!r}")
    if any(isinstance(m, FakeQuantAdder) for m in model.modules()):
        return _from_qat(model, bits, groups)
    if calibration is None:
        raise AdderconvError("quantisation needs calibration data (a batch or an iterable of batches)")
    src = copy.deepcopy(model).cpu().float().eval()
    layers, skipped = _check_model(src)
    ngrids = _grid_groups(src, layers, groups)
    observers, batches, samples = _observe(src, layers, calibration, max_batches)
    grids = {n: choose_grid(observers[n], method, percentile, bits) for n in layers}
    structure = plan(src, layers)
    for step in structure.steps.values():   # the layers reading one sum saw the same values: one grid for all
        for r in step.readers[1:]:
            grids[r] = grids[step.readers[0]]
    chosen: dict[str, LayerGrids] = {}
    for n in layers:
        adder = src.get_submodule(n)
        group_of = split_channels(adder.weight, ngrids[n]) if ngrids[n] > 1 else None
        chosen[n] = (grids[n], None) if group_of is None else \
            (group_grids(observers[n], adder, group_of, grids[n]), group_of)
    report = QuantReport(method, percentile if method == "percentile" else None, batches, samples,
                         skipped=skipped, notes=list(structure.notes), bits=bits, groups=groups)
    if any(ngrids[n] < groups for n in layers):
        report.notes.append(f"layers with channel groups keep one grid: "
                            f"{', '.join(n for n in layers if ngrids[n] < groups)}")
    return build(src, structure, chosen, report, observers)


def _from_qat(model: nn.Module, bits: int, groups: int) -> nn.Module:
    """The quantised model of a QAT model: its trained adders on the grids they trained through."""
    src = copy.deepcopy(model).cpu().float().eval()
    wrapped = {n: m for n, m in src.named_modules() if isinstance(m, FakeQuantAdder)}
    for n, m in wrapped.items():
        if (m.bits, m.groups) != (bits, groups):
            raise AdderconvError(f"layer {n!r} was prepared for quantisation-aware training at bits={m.bits}, "
                                 f"groups={m.groups}; quantise it with those, got bits={bits}, groups={groups}")
        set_module(src, n, m.adder)
    chosen: dict[str, LayerGrids] = {n: (list(m.grids), m.channel_group.clone()) if len(m.grids) > 1
                                     else (m.grids[0], None) for n, m in wrapped.items()}
    _, skipped = _check_model(src)
    structure = plan(src, list(wrapped))
    report = QuantReport("qat", None, 0, 0, skipped=skipped, notes=list(structure.notes), bits=bits, groups=groups)
    return build(src, structure, chosen, report)


def build(src: nn.Module, structure: Plan, chosen: dict[str, LayerGrids], report: QuantReport,
          observers: dict[str, Observer] | None = None) -> nn.Module:
    """The quantised model of the float eval-mode ``src`` (copied) with each layer's ``chosen`` grids: BatchNorms
    folded, codes handed on and residuals fused as ``structure`` (:func:`.plan`) allows."""
    ngrids = {n: 1 if g is None else int(g.max()) + 1 for n, (_, g) in chosen.items()}
    first = {n: own if g is None else own[0] for n, (own, g) in chosen.items()}
    out = copy.deepcopy(src)
    for n, (own, group_of) in chosen.items():
        step, adder = structure.steps[n], src.get_submodule(n)
        layer = from_adder(adder, own, group_of)
        a, b = affine_of(adder, own, group_of)
        if step.bn:
            a, b = fold_bn(a, b, src.get_submodule(step.bn))
            set_module(out, step.bn, nn.Identity())
        codes_next = codes_to(step, ngrids)
        layer.set_epilogue(a, b, first[codes_next] if codes_next else None, step.relu and codes_next is not None)
        set_module(out, n, layer)
        report.layers[n] = {"scale": first[n].scale, "zero_point": first[n].zero_point, "bn": step.bn,
                            "next": codes_next, "relu": step.relu and codes_next is not None,
                            "weight_range": [float(adder.weight.min()), float(adder.weight.max())]}
        if observers is not None:
            report.layers[n]["input_range"] = [observers[n].lo, observers[n].hi]
        if group_of is not None:
            report.layers[n]["grids"] = [[g.scale, g.zero_point] for g in own]
            report.layers[n]["group_sizes"] = torch.bincount(group_of, minlength=ngrids[n]).tolist()
    out, fused = fuse_residuals(out)
    for n, kind in fused.items():
        report.layers[n]["residual"] = kind
        readers = structure.steps[n].readers
        if codes_for_readers(structure.steps[n], True, ngrids):
            only = structure.steps[n].only_readers
            out.get_submodule(n).set_codes(first[readers[0]].zero_point, first[readers[0]], only)
            report.layers[n]["codes_for"] = list(readers)
            report.layers[n]["codes_only"] = only
    out.eval()
    out.adderconv_quant = report
    return out
