"""The PyTorch front end: trace a model with fvcore's scoped TorchScript tracer and count every op.

Each traced node belongs to the innermost module whose forward ran it (its "layer", by module path); a
residual ``out + identity`` written in a block's forward belongs to the block. Capture is kept apart from
the handles (:mod:`.handles` sees shapes only), so a dispatch-mode capture can replace this one.

>>> import torch
>>> counts = count_ops(torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.randn(1, 3, 4, 4))
>>> counts.total["mul"]
3456
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from .counts import LayerCounts, ModelCounts, OpCount
from .handles import HANDLES, IGNORED

__all__ = ["count_ops"]


def _value(v: torch._C.Value) -> Any:
    """A traced value as a handle sees it: a shape for tensors, the constant for scalars, else None."""
    node = v.node()
    if node.kind() == "prim::ListConstruct":
        return [_value(x) for x in node.inputs()]
    t = v.type()
    if isinstance(t, torch._C.TensorType):
        sizes = t.sizes()
        return tuple(sizes) if sizes is not None else None
    if node.kind() == "prim::Constant":
        return v.toIValue()
    return None


def _trace(model: nn.Module, inputs: tuple) -> torch._C.Graph:
    with warnings.catch_warnings():   # fvcore's import touches torch.jit.script, deprecated in torch 2.13
        warnings.simplefilter("ignore")
        from fvcore.nn.jit_analysis import _get_scoped_trace_graph  # fvcore's tracer: scopes = module paths

    aliases: dict[Any, str] = {}
    for name, mod in model.named_modules(remove_duplicate=False):
        aliases.setdefault(mod, name)
    aliases.update({name: name for name in list(aliases.values())})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _get_scoped_trace_graph(model, inputs, aliases)


def _memory_hooks(model: nn.Module, layers: dict[str, LayerCounts]) -> list:
    """Forward hooks on leaf modules recording the elements read and written (for the memory model)."""
    def numel(obj: Any) -> int:
        if isinstance(obj, Tensor):
            return math.prod(int(d) for d in obj.shape)    # plain ints: records nothing in the trace
        if isinstance(obj, (tuple, list)):
            return sum(numel(o) for o in obj)
        if isinstance(obj, dict):
            return sum(numel(o) for o in obj.values())
        return 0

    def hook(name: str):
        def record(_m: nn.Module, args: tuple, out: Any) -> None:
            layer = layers[name]
            layer.act_in += numel(args)
            layer.act_out += numel(out)
        return record

    return [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if not any(m.children())]


def count_ops(model: nn.Module, inputs: Tensor | tuple) -> ModelCounts:
    """Count every operator ``model(*inputs)`` runs, per layer (module path) and per operator.

    The model runs once, as it is (call ``model.eval()`` first for inference counts). Ops without a
    handle are listed in ``unsupported`` with their number of calls; zero-arithmetic ops in ``ignored``.
    """
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    layers: dict[str, LayerCounts] = {}
    for name, mod in model.named_modules():
        layers[name] = LayerCounts(name=name, type=type(mod).__name__,
                                   weights=sum(p.numel() for p in mod.parameters(recurse=False)))
    hooks = _memory_hooks(model, layers)
    try:
        graph = _trace(model, inputs)
    finally:
        for h in hooks:
            h.remove()
    used: dict[str, None] = {}                         # layers in first-execution order
    ignored: dict[str, int] = {}
    for node in graph.nodes():
        kind = node.kind()
        if kind == "prim::PythonOp":
            kind += "." + node.pyname()
        elif kind.startswith("prim::"):
            continue                                    # TorchScript bookkeeping (constants, lists, tuples)
        scope = node.scopeName().split("/")[-1]
        layer = layers.get(scope) or layers[""]
        used.setdefault(layer.name)
        handle = HANDLES.get(kind)
        if handle is None:
            if kind in IGNORED:
                ignored[kind] = ignored.get(kind, 0) + 1
            else:
                layer.unsupported[kind] = layer.unsupported.get(kind, 0) + 1
            continue
        ins = [_value(v) for v in node.inputs()]
        outs = [_value(v) for v in node.outputs()]
        try:
            tally = handle.fn(ins, outs)
        except (ValueError, TypeError, IndexError) as e:   # shapes the handle cannot read: say so, never guess
            key = f"{kind} ({e})"
            layer.unsupported[key] = layer.unsupported.get(key, 0) + 1
            continue
        layer.ops.append(OpCount(kind, handle.category, tally))
    # Layers that only ran zero-arithmetic ops (Flatten, Dropout, Identity) are left out: views move no data.
    kept = [layers[n] for n in used if layers[n].ops or layers[n].unsupported]
    return ModelCounts(layers=kept, ignored=dict(sorted(ignored.items())), frontend="pytorch")
