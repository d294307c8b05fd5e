"""Fuse residual adds into the quantised layer before them: ``relu(layer(x) + identity)`` -> ``layer(x, identity)``.

A graph pass over a quantised model (layers with one grid: one with several keeps its add and ReLU).
Every module that holds quantised layers is traced with torch.fx
(quantised layers kept as leaves), innermost first; where a float-output :class:`QuantAdderConv2d`, called once,
feeds only an add of two tensors, and that add feeds
only a ReLU or nothing else in particular, the chain becomes one call of the layer with the other operand,
whose epilogue adds it (and applies the ReLU): the same float32 operations in the same order, so the result
is bit-identical and two passes over the output (add, ReLU) are gone. Folded BatchNorms (``nn.Identity``)
leave the graph, and a ReLU on uint8 codes (the codes are
already clamped at the zero point) is dropped. A module with a rewrite is replaced by its ``fx.GraphModule``
(same submodule names, so the state dict is unchanged); a module torch.fx cannot trace is left as it is.

The pass is deterministic in the model's structure and the layers' output kinds, so loading a saved file
runs it again and checks it finds what the recipe recorded. The quantised layers read and add channels-last
tensors; a tensor that a fused layer adds and that is not channels-last (a float stem's output) is made so once
in the graph, ahead of all its readers, instead of once by each (a copy either way, so exact).

>>> import torch, adderconv
>>> q = adderconv.quantize(adderconv.get_model("resnet20_adder").eval(), torch.randn(4, 3, 32, 32))
>>> q.layer1[0].conv2.residual
'add_relu'
"""
from __future__ import annotations

import torch
from torch import fx, nn

from ..layers import AdderConv1d, AdderConv2d, AdderLinear
from .layers import QuantAdderConv2d
from .plan import _is_add, _is_relu

__all__ = ["fuse_residuals"]


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (isinstance(m, (QuantAdderConv2d, AdderConv2d, AdderConv1d, AdderLinear))
                or super().is_leaf_module(m, qualname))


def _quant(node: fx.Node, modules: dict[str, nn.Module]) -> QuantAdderConv2d | None:
    m = modules.get(node.target) if node.op == "call_module" else None
    return m if isinstance(m, QuantAdderConv2d) else None


def _rewrite(graph: fx.Graph, modules: dict[str, nn.Module], prefix: str) -> dict[str, str]:
    """Rewrite ``graph`` in place; returns {full layer name: residual kind} of the layers fused."""
    for n in list(graph.nodes):   # a folded BatchNorm (nn.Identity) is no op at all
        if n.op == "call_module" and type(modules.get(n.target)) is nn.Identity and len(n.args) == 1:
            n.replace_all_uses_with(n.args[0])
            graph.erase_node(n)
    calls: dict[str, int] = {}
    for n in graph.nodes:
        if n.op == "call_module":
            calls[n.target] = calls.get(n.target, 0) + 1
    fused: dict[str, str] = {}
    for node in list(graph.nodes):
        layer = _quant(node, modules)
        if (layer is None or type(layer) is not QuantAdderConv2d or layer.out_mode != "float" or layer.residual
                or layer.grid_groups != 1 or calls[node.target] != 1 or len(node.args) != 1 or node.kwargs):
            continue
        cur = node
        if len(cur.users) != 1 or not _is_add(add := next(iter(cur.users)), cur):
            continue
        other = add.args[1] if add.args[0] is cur else add.args[0]
        end, kind = add, "add"
        if len(add.users) == 1 and _is_relu(r := next(iter(add.users)), modules) and r.args[0] is add:
            end, kind = r, "add_relu"
        with graph.inserting_before(add):
            call = graph.call_module(node.target, (node.args[0], other))
        end.replace_all_uses_with(call)
        for n in ([end] if end is not add else []) + [add, node]:
            graph.erase_node(n)
        layer.set_residual(kind)
        fused[prefix + node.target] = kind
        if other.op == "placeholder" and len(other.users) > 1:   # the block's input, read elsewhere too
            with graph.inserting_after(other):
                cl = graph.call_method("contiguous", (other,), {"memory_format": torch.channels_last})
            other.replace_all_uses_with(cl, delete_user_cb=lambda u, cl=cl: u is not cl)
    for node in list(graph.nodes):   # a ReLU on codes is the identity (uint8 codes are never negative)
        if (_is_relu(node, modules) and isinstance(node.args[0], fx.Node)
                and (src := _quant(node.args[0], modules)) is not None and src.out_mode == "uint8"):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    return fused


def fuse_residuals(model: nn.Module) -> tuple[nn.Module, dict[str, str]]:
    """``(model, {layer: "add" | "add_relu"})``: the fused model (changed in place, modules inside it become
    ``fx.GraphModule``; the root too when the pattern is in its own forward) and what was fused."""
    fused: dict[str, str] = {}
    for name, module in reversed(list(model.named_modules())):
        if isinstance(module, QuantAdderConv2d) or not any(
                isinstance(m, QuantAdderConv2d) for m in module.modules() if m is not module):
            continue
        try:
            graph = _Tracer().trace(module)
        except Exception:  # data-dependent control flow etc.: this module keeps its forward
            continue
        done = _rewrite(graph, dict(module.named_modules()), f"{name}." if name else "")
        if not done:
            continue
        graph.lint()
        gm = fx.GraphModule(module, graph, class_name=type(module).__name__)
        fused.update(done)
        if not name:
            gm.train(module.training)
            return gm, fused
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, gm.train(module.training))
    return model, fused

