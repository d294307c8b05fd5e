"""Find a model's convertible layers and the facts the policy needs: execution order, first/last, BN after.

Three sources, best first: the torch.export graph (execution order, first/last by graph paths, BN reached on
every path, functional convolutions found); a hooked forward run when the model cannot be traced (execution
order, "next module called is a norm"); registration order when no example inputs are given.

>>> import torch
>>> m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Conv2d(8, 4, 1))
>>> found = discover(m, (torch.randn(1, 3, 8, 8),))
>>> [(i.name, i.is_first, i.is_last) for i in found.layers.values()], found.normalised
([('0', True, False), ('2', False, True)], {'0': True, '2': False})
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from adderconv.blocks import default_mapping, mapped_target
from adderconv.errors import AdderconvError
from adderconv.recipe import aliases

from .graph import MULTIPLICATIVE, first_last, model_graph, reaches_norm
from .policy import LayerInfo

__all__ = ["Discovery", "discover", "aliases"]

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@dataclass
class Discovery:
    layers: dict[str, LayerInfo] = field(default_factory=dict)        # canonical name -> description
    modules: dict[str, nn.Module] = field(default_factory=dict)       # canonical name -> module
    normalised: dict[str, bool] = field(default_factory=dict)         # output always meets a norm layer
    calls: dict[str, int] = field(default_factory=dict)
    functional: list[tuple[str, str]] = field(default_factory=list)   # (conv | linear, description)
    traced: bool = False
    warnings: list[str] = field(default_factory=list)


def _info(name: str, mod: nn.Module, index: int, first: bool, last: bool) -> LayerInfo:
    if isinstance(mod, nn.Linear):
        return LayerInfo(name, "linear", mod.in_features, mod.out_features, 1, (), index, first, last,
                         type(mod).__name__)
    return LayerInfo(name, "conv", mod.in_channels, mod.out_channels, mod.groups, tuple(mod.kernel_size), index,
                     first, last, type(mod).__name__)


def _registration_normalised(model: nn.Module) -> dict[int, bool]:
    """id(layer) -> whether the module registered right after it in the same parent is a norm layer."""
    out: dict[int, bool] = {}
    for parent in model.modules():
        kids = list(parent.children())
        for a, b in zip(kids, kids[1:] + [None]):
            out.setdefault(id(a), isinstance(b, _NORMS))
    return out


def discover(model: nn.Module, example_inputs: Sequence[object] | None = None,
             mapping: dict[type[nn.Module], type[nn.Module]] | None = None) -> Discovery:
    """Describe every module of an exactly mapped type (Conv1d, Conv2d, Linear by default) in ``model``."""
    mapping = mapping if mapping is not None else default_mapping()
    found = Discovery()
    by_id: dict[int, str] = {}
    for name, mod in model.named_modules():
        if name and mapped_target(mod, mapping) is not None:
            by_id[id(mod)] = name
            found.modules[name] = mod
    reg_norm = _registration_normalised(model)
    order: list[str] = []
    first: set[str] = set()
    last: set[str] = set()
    if example_inputs is not None:
        try:
            _from_graph(model, example_inputs, by_id, found, order, first, last)
            found.traced = True
        except AdderconvError as e:
            found.warnings.append(f"{e}; converting by module swap in hooked execution order, functional "
                                  f"convolutions (F.conv2d) cannot be detected and stay multiplicative")
            order.clear(), first.clear(), last.clear(), found.normalised.clear(), found.calls.clear()
            _from_hooks(model, example_inputs, by_id, found, order)
            if order:
                first, last = {order[0]}, {order[-1]}
    else:
        found.warnings.append("no example inputs: first/last layers follow registration order and functional "
                              "convolutions are not detected (give example inputs, e.g. an input shape, to trace "
                              "the model)")
        order = list(found.modules)
        if order:
            first, last = {order[0]}, {order[-1]}
    index = {n: i for i, n in enumerate(dict.fromkeys(order))}
    for name, mod in found.modules.items():
        found.layers[name] = _info(name, mod, index.get(name, -1), name in first, name in last)
        found.normalised.setdefault(name, reg_norm.get(id(mod), False))
        found.calls.setdefault(name, 0)
    return found


def _from_graph(model, example_inputs, by_id, found, order, first, last) -> None:
    g = model_graph(model, example_inputs)
    by_name = {name: mod for name, mod in model.named_modules(remove_duplicate=False)}
    graph_first, graph_last = first_last(g)
    for node, data in sorted(g.nodes(data=True), key=lambda nd: nd[1]["order"]):
        if data["kind"] not in MULTIPLICATIVE or data["kind"] == "adder":
            continue
        mod = by_name.get(data["module"])
        if isinstance(mod, nn.modules.conv._ConvTransposeNd):
            continue                      # listed as kept, with the reason, by the converter
        name = by_id.get(id(mod)) if mod is not None else None
        expected = "linear" if isinstance(mod, nn.Linear) else "conv"
        if name is None or data["kind"] != expected:
            where = data["module"] or "<root>"
            found.functional.append((data["kind"], f"{where}:{node} ({data['op']}, in "
                                                   f"{data['module_type'] or 'the model'})"))
            continue
        order.append(name)
        found.calls[name] = found.calls.get(name, 0) + 1
        if node in graph_first:
            first.add(name)
        if node in graph_last:
            last.add(name)
        found.normalised[name] = found.normalised.get(name, True) and reaches_norm(g, node)


def _from_hooks(model, example_inputs, by_id, found, order) -> None:
    calls: list[tuple[str, object]] = []
    handles = []
    for mod in model.modules():
        if id(mod) in by_id:
            name = by_id[id(mod)]
            handles.append(mod.register_forward_hook(lambda m, i, o, n=name: calls.append(("layer", n))))
        elif isinstance(mod, _NORMS):
            handles.append(mod.register_forward_hook(lambda m, i, o: calls.append(("norm", None))))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(*example_inputs)
    except Exception as e:  # the user's forward: report it as their mistake, in one line
        raise AdderconvError(f"the model failed on the example inputs ({type(e).__name__}: {e})") from e
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    for (kind, name), nxt in zip(calls, calls[1:] + [("end", None)]):
        if kind == "layer":
            order.append(name)
            found.calls[name] = found.calls.get(name, 0) + 1
            found.normalised[name] = found.normalised.get(name, True) and nxt[0] == "norm"
