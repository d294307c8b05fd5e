"""The TorchScript-tracer capture (``capture="jit"``): fvcore's scoped tracer, kept as a cross-check.

The model really runs once (with real tensors) under ``torch.jit.trace``; each traced node belongs to the
innermost module whose forward ran it. Nodes are matched to the same handles as the dispatch capture, by
their schema's argument names. Calls into scripted functions (``prim::CallFunction``) are inlined first,
so their ops are counted like any other (they used to vanish without a word). Work whose result the forward does
not return (a pooler whose output is dropped, a value stored on ``self``) would leave the trace as dead code: every
module's output and every tensor stored on a module during the call become extra outputs of the trace, so they
are counted. (Work that is neither, an intermediate dropped inside one forward, still leaves no trace.)

>>> import torch
>>> count_ops_jit(torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), (torch.randn(1, 3, 4, 4),), {}).total["mul"]
3456
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten

from . import handles as _handles  # noqa: F401  (fills the registry)
from .counts import ModelCounts
from .handles_detection import register_torchvision
from .registry import Handle, OpKey, apply_handle, lookup
from .tracking import memory_hooks, new_layers, parameter_owners

__all__ = ["count_ops_jit"]


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
    with warnings.catch_warnings(), _keep_side_results(model):
        warnings.simplefilter("ignore")
        graph = _get_scoped_trace_graph(model, inputs, aliases)
    torch._C._jit_pass_inline(graph)          # scripted functions' bodies in place of prim::CallFunction
    return graph


def _tensors(value: Any) -> list[Tensor]:
    return [t for t in tree_flatten(value)[0] if isinstance(t, Tensor)]


@contextlib.contextmanager
def _keep_side_results(model: nn.Module) -> Iterator[None]:
    """Make what the forward computes but does not return an output of the trace, so that the tracer's dead-code
    pass keeps its ops: every module's output (a pooler whose result is dropped) and every tensor stored on a
    module during the call (``self.cache = x @ w``). A hook's return value replaces the root's output.
    (Observing with a torch-function mode instead would change the model: fast paths such as
    ``nn.MultiheadAttention``'s are skipped while one is active.)"""
    mods = list(model.modules())
    before = {(id(m), k): id(v) for m in mods for k, v in vars(m).items() if isinstance(v, Tensor)}
    kept: dict[int, Tensor] = {}

    def keep(_m: nn.Module, _a: Any, out: Any) -> None:
        kept.update((id(t), t) for t in _tensors(out))

    def extend(_m: nn.Module, _a: Any, out: Any) -> Any:
        stored = [v for m in mods for k, v in vars(m).items()
                  if isinstance(v, Tensor) and before.get((id(m), k)) != id(v)]
        kept.update((id(t), t) for t in stored)
        return out, tuple(kept.values())

    hooks = [m.register_forward_hook(keep) for m in mods[1:]] + [model.register_forward_hook(extend)]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


_SIZE_SOURCES = ("aten::size", "aten::numel", "aten::dim", "prim::NumToTensor")


def _from_sizes(node: torch._C.Node, sized: set) -> bool:
    """Whether a node computes on the model's sizes only (``(C // heads) ** -0.5`` in a traced forward): its
    inputs are sizes, constants, or values computed from them. The dispatch capture sees Python numbers there."""
    if node.kind() in _SIZE_SOURCES:
        return True
    ins = list(node.inputs())
    return bool(ins) and any(v.unique() in sized for v in ins) and all(
        v.unique() in sized or v.node().kind() == "prim::Constant" or not isinstance(v.type(), torch._C.TensorType)
        and v.node().kind() != "prim::ListConstruct" for v in ins)


def _op(kind: str, node: torch._C.Node) -> tuple[OpKey | None, list[str]]:
    """The op packet of a node and its schema's argument names (empty when the schema is unknown)."""
    ns, _, name = kind.partition("::")
    try:
        packet = getattr(getattr(torch.ops, ns), name)
    except (AttributeError, RuntimeError):
        return None, []
    try:
        schema = torch._C.parse_schema(node.schema())
    except RuntimeError:                      # "(no schema)"
        return packet, []
    overload = schema.overload_name or "default"
    op = getattr(packet, overload, packet)
    return op, [a.name for a in schema.arguments]


def count_ops_jit(model: nn.Module, inputs: tuple, overrides: dict) -> ModelCounts:
    """Count ``model(*inputs)`` from its TorchScript trace (see the module)."""
    register_torchvision()
    layers, linear = new_layers(model)
    with memory_hooks(model, layers):
        graph = _trace(model, inputs)
    used: dict[str, None] = {}
    ignored: dict[str, int] = {}
    sized: set[int] = set()
    for node in graph.nodes():
        kind = node.kind()
        if _from_sizes(node, sized):
            sized.update(v.unique() for v in node.outputs())
            if not kind.startswith("prim::") and kind not in ("aten::size", "aten::numel", "aten::dim"):
                key = f"{kind} (on sizes)"                   # arithmetic on traced sizes, not on data
                ignored[key] = ignored.get(key, 0) + 1
            elif not kind.startswith("prim::"):
                ignored[kind] = ignored.get(kind, 0) + 1
            continue
        if kind == "prim::PythonOp":
            kind += "." + node.pyname()
        elif kind.startswith("prim::"):
            continue                                    # TorchScript bookkeeping (constants, lists, tuples)
        layer = layers.get(node.scopeName().split("/")[-1]) or layers[""]
        used.setdefault(layer.name)
        op, names = _op(kind, node) if not kind.startswith("prim::") else (None, [])
        handle = lookup(op, overrides) if op is not None else None
        named, outs = {}, []
        if isinstance(handle, Handle):
            named = dict(zip(names, (_value(v) for v in node.inputs())))
            outs = [_value(v) for v in node.outputs()]
            first = next(iter(node.outputs()), None)
            if first is not None and outs[0] is None and isinstance(first.type(), torch._C.TensorType):
                key = f"{kind} (shapes unknown to the tracer, e.g. inside a scripted function)"
                layer.unsupported[key] = layer.unsupported.get(key, 0) + 1
                continue
        apply_handle(layer, kind, handle, outs, named, ignored, linear=layer.name in linear)
    # Layers that only ran zero-arithmetic ops (Flatten, Dropout, Identity) are left out: views move no data.
    kept = [layers[n] for n in used if layers[n].ops or layers[n].unsupported]
    owners, trainable = parameter_owners(model)
    return ModelCounts(layers=kept, ignored=dict(sorted(ignored.items())), frontend="pytorch", capture="jit",
                       parameters=owners, trainable=trainable)
