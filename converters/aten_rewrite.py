"""ATen-level conversion: rewrite the conv/linear ops of a torch.export graph into adder ops.

This catches what module swap cannot: functional ``F.conv2d``/``F.conv1d`` calls (and convs inside
subclasses that override ``forward``). Padding modes need nothing special here: torch.export already shows a
reflect/replicate/circular-padded conv as ``aten.pad`` followed by a zero-padding conv. The same
:class:`Policy` decides; layers are named by their module path (functional calls by module path + node
name, type ``"functional"``), so include/exclude globs mean the same thing as for module swap.

The result is a ``torch.fx.GraphModule`` (``ExportedProgram.module()``) traced in eval mode: BatchNorm uses
running statistics, so fine-tune module-swapped models and use this path for inference and export.

>>> import torch, torch.nn.functional as F
>>> class Net(torch.nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.stem, self.w = torch.nn.Conv2d(3, 8, 3), torch.nn.Parameter(torch.randn(8, 8, 3, 3))
...     def forward(self, x):
...         return F.conv2d(self.stem(x), self.w).mean((2, 3))
>>> from adderconv.converters import conversion_report
>>> gm = convert_exported(Net(), (torch.randn(1, 3, 12, 12),), Policy(insert_bn=False, keep_last=False))
>>> [(r.name, r.type_name) for r in conversion_report(gm).converted]
[('conv2d_1', 'functional')]
"""
from __future__ import annotations

import types
from collections.abc import Sequence

import torch
from torch import fx, nn

from adderconv.errors import AdderconvError
from adderconv.functional import adder_conv, adder_linear
from adderconv.sr import PowerActivation

from .graph import CONVERTIBLE_CONV_OPS, build_graph, first_last, reaches_norm, trace
from .policy import LayerInfo, Policy, decide_all
from .report import REPORT_ATTR, ConversionReport, LayerRecord

__all__ = ["convert_exported"]

_aten = torch.ops.aten
_CONV = CONVERTIBLE_CONV_OPS
_CONV_ARGS = ("x", "weight", "bias", "stride", "padding", "dilation", "groups")


def _conv_args(node: fx.Node) -> dict | None:
    """The F.conv-style arguments of a conv node, or None for a transposed convolution."""
    args = dict(zip(_CONV_ARGS, node.args), **node.kwargs)
    if node.target is _aten.convolution.default:
        (x, w, b, stride, padding, dilation, transposed, _, groups) = node.args[:9]
        if transposed:
            return None
        args = dict(x=x, weight=w, bias=b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return args


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    val = node.meta.get("val")
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


def convert_exported(model: nn.Module, example_inputs: Sequence[object], policy: Policy | None = None
                     ) -> fx.GraphModule:
    """Trace ``model`` with torch.export and rewrite the chosen conv/linear ops; returns the module, which
    carries its report as :func:`convert`'s result does (``conversion_report(gm)``)."""
    policy = policy or Policy()
    ep = trace(model, example_inputs, dynamic_batch=True)
    g = build_graph(ep)
    first, last = first_last(g)
    gm = ep.module()
    # a shared module appears under whichever name it was called by: name it by its first registered name
    canonical = {id(m): n for n, m in reversed(list(model.named_modules(remove_duplicate=False)))}
    by_path = dict(model.named_modules(remove_duplicate=False))
    infos: dict[str, LayerInfo] = {}
    sites: dict[str, list[fx.Node]] = {}
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.name not in g:
            continue
        is_conv = node.target in _CONV and _conv_args(node) is not None
        if not (is_conv or node.target is _aten.linear.default):
            continue
        data = g.nodes[node.name]
        functional = data["module_type"] not in ("Conv1d", "Conv2d", "Linear")
        if functional:
            name = f"{data['module']}.{node.name}" if data["module"] else node.name
        else:
            name = canonical.get(id(by_path.get(data["module"])), data["module"])
        w = _shape(node.args[1])
        groups = (_conv_args(node) or {}).get("groups", 1) if is_conv else 1
        prev = infos.get(name)
        infos[name] = LayerInfo(
            name, "conv" if is_conv else "linear", w[1] * groups, w[0], groups, tuple(w[2:]) if is_conv else (),
            prev.index if prev else len(infos), (prev.is_first if prev else False) or node.name in first,
            (prev.is_last if prev else False) or node.name in last, "functional" if functional else data["module_type"])
        sites.setdefault(name, []).append(node)
    decisions = decide_all(list(infos.values()), policy)
    report = ConversionReport(traced=True, policy_json=policy.to_json(),
                              warnings=["ATen rewrite: the result is an eval-mode graph; the model's own "
                                        "BatchNorm ops keep their statistics, inserted BatchNorm layers are "
                                        "modules that recalibrate_bn re-estimates"])
    for name, info in infos.items():
        d = decisions[name]
        record = LayerRecord(name, info.type_name, d.convert, d.reason, index=info.index, calls=len(sites[name]))
        if d.convert:
            record.new_type = "adder_conv2d"
            for k, node in enumerate(sites[name]):
                bn, shortcut = _rewrite(gm, node, policy, not reaches_norm(g, node.name), f"{name}_{k}")
                record.bn_inserted |= bn
                record.shortcut |= shortcut
                record.power = policy.power
        report.layers.append(record)
    gm.graph.lint()
    gm.recompile()
    _eval_only(gm)
    setattr(gm, REPORT_ATTR, report)
    return gm


def _eval_mode(self: fx.GraphModule, mode: bool = True) -> fx.GraphModule:
    if mode:
        raise AdderconvError("this graph was traced in eval mode and cannot train (BatchNorm and dropout are "
                             "fixed): fine-tune the module-swapped model (strategy 'swap') instead")
    return nn.Module.train(self, False)


def _eval(self: fx.GraphModule) -> fx.GraphModule:
    return _eval_mode(self, False)


def _eval_only(gm: fx.GraphModule) -> None:
    """ExportedProgram.module() refuses both train() and eval(); allow eval(), which is what it is."""
    gm.train = types.MethodType(_eval_mode, gm)  # type: ignore[method-assign]
    gm.eval = types.MethodType(_eval, gm)  # type: ignore[method-assign]
    nn.Module.train(gm, False)


def _rewrite(gm: fx.GraphModule, node: fx.Node, policy: Policy, needs_bn: bool, tag: str) -> tuple[bool, bool]:
    """Replace one conv/linear node by the adder op (+ BN / shortcut / power); returns (bn, shortcut)."""
    x_in = node.args[0]
    out_shape, in_shape = _shape(node), _shape(x_in)
    factory = {"device": node.meta["val"].device, "dtype": node.meta["val"].dtype}
    channels = out_shape[1] if node.target in _CONV else out_shape[-1]
    safe = "".join(c if c.isalnum() else "_" for c in tag)
    with gm.graph.inserting_after(node):
        if node.target in _CONV:
            new = gm.graph.call_function(adder_conv, kwargs=_conv_args(node))
        else:
            new = gm.graph.call_function(adder_linear, tuple(node.args), dict(node.kwargs))
    new.meta = dict(node.meta)
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
    last = new
    bn = policy.insert_bn and needs_bn
    if bn:
        norm = (nn.BatchNorm2d if len(out_shape) == 4 else nn.BatchNorm1d)(channels, **factory).eval()
        last = _append_module(gm, last, f"adder_bn_{safe}", norm)
    shortcut = policy.shortcut and in_shape == out_shape
    if shortcut:
        with gm.graph.inserting_after(last):
            added = gm.graph.call_function(torch.add, (last, x_in))
        _reroute(last, added)
        last = added
    if policy.power:
        _append_module(gm, last, f"adder_power_{safe}", PowerActivation(channels).to(**factory))
    return bn, shortcut


def _reroute(old: fx.Node, new: fx.Node) -> None:
    """Point every user of ``old`` except ``new`` itself at ``new``."""
    old.replace_all_uses_with(new, delete_user_cb=lambda user: user is not new)


def _append_module(gm: fx.GraphModule, after: fx.Node, name: str, module: nn.Module) -> fx.Node:
    gm.add_submodule(name, module)
    with gm.graph.inserting_after(after):
        call = gm.graph.call_module(name, (after,))
    _reroute(after, call)
    return call
