"""The model graph: a networkx MultiDiGraph built from a torch.export trace, one node per op.

Each node carries ``op`` (the ATen op), ``kind`` (conv / linear / adder / norm / input / output / other),
``module`` and ``module_type`` (the innermost nn.Module that ran it, "" for the root), ``shape`` and
``dtype`` of its output, and the counts ``mul`` and ``add`` (additions including accumulations, as every
report's add) from the analysis handles, the same counting as ``energy`` (a conv MAC = 1 mul + 1 add, an adder
step = 2 add, an eval BatchNorm 1 mul + 1 add per element); ``counted`` is False where no handle could read the
node. Edges run from producer to consumer, keyed by argument position (an op may read the same tensor twice,
hence the multigraph). Parameters and buffers are not nodes.

The converter uses it for first/last detection (a layer is *first* when no multiplicative op precedes it on
any path, *last* when none follows it) and to find adder layers whose output is never normalised.

>>> import torch
>>> g = model_graph(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()), (torch.randn(1, 3, 8, 8),))
>>> [d["kind"] for _, d in g.nodes(data=True)]
['input', 'conv', 'other', 'output']
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import networkx as nx
import torch
from torch import nn

from adderconv.analysis.handles import conv_macs
from adderconv.errors import AdderconvError

__all__ = ["trace", "build_graph", "model_graph", "op_kind", "first_last", "reaches_norm", "write_graphml"]

_aten = torch.ops.aten
# The one table of convolution ops: what the converter can rewrite (the ATen rewrite reads it) and the
# transposed ones it keeps (their MACs are still counted, by the analysis handles' formula).
CONVERTIBLE_CONV_OPS = frozenset({_aten.conv1d.default, _aten.conv2d.default, _aten.conv3d.default,
                                  _aten.conv1d.padding, _aten.conv2d.padding, _aten.conv3d.padding,
                                  _aten.convolution.default})
TRANSPOSED_CONV_OPS = frozenset({_aten.conv_transpose1d.default, _aten.conv_transpose2d.input,
                                 _aten.conv_transpose3d.input})
CONV_OPS = CONVERTIBLE_CONV_OPS | TRANSPOSED_CONV_OPS
LINEAR_OPS = {_aten.linear.default}
NORM_OPS = {_aten.batch_norm.default, _aten.group_norm.default, _aten.layer_norm.default,
            _aten.instance_norm.default, _aten._native_batch_norm_legit_functional.default,
            _aten._native_batch_norm_legit_no_training.default, _aten.native_batch_norm.default}
MULTIPLICATIVE = ("conv", "linear", "adder")


def op_kind(target: object) -> str:
    if target in CONV_OPS:
        return "conv"
    if target in LINEAR_OPS:
        return "linear"
    if target in NORM_OPS:
        return "norm"
    if "adderconv" in str(target) and "adder_conv2d" in str(target) and "grad" not in str(target):
        return "adder"
    return "other"


def trace(model: nn.Module, example_inputs: Sequence[object], dynamic_batch: bool = False
          ) -> torch.export.ExportedProgram:
    """torch.export (non-strict) of ``model`` in eval mode; the model's mode is restored afterwards.

    ``dynamic_batch``: keep dim 0 of tensor inputs symbolic (a batch of 1 is traced as 2, since torch.export
    specialises sizes 0 and 1).
    """
    args, dynamic = tuple(example_inputs), None
    if dynamic_batch:
        args = tuple(torch.cat([a, a]) if isinstance(a, torch.Tensor) and a.dim() and a.shape[0] == 1 else a
                     for a in args)
        dynamic = tuple({0: torch.export.Dim.AUTO} if isinstance(a, torch.Tensor) and a.dim() else None
                        for a in args)
    was_training = model.training
    model.eval()
    try:
        return torch.export.export(model, args, dynamic_shapes=dynamic, strict=False)
    finally:
        model.train(was_training)


def _shape(val: object) -> tuple[int, ...] | None:
    if isinstance(val, torch.Tensor):
        try:
            return tuple(int(s) for s in val.shape)
        except TypeError:   # symbolic sizes
            return None
    return None


def _counts(kind: str, node: torch.fx.Node) -> tuple[int, int] | None:
    """(mul, add) of a conv / linear / adder node from the shapes in its metadata, by the analysis handles'
    MAC formula (one MAC = 1 mul + 1 add; one adder step = 2 add)."""
    out = _shape(node.meta.get("val"))
    x, weight = (node.args + (None, None))[:2]
    xs = _shape(x.meta.get("val")) if isinstance(x, torch.fx.Node) else None
    w = _shape(weight.meta.get("val")) if isinstance(weight, torch.fx.Node) else None
    if out is None or w is None or xs is None:
        return None
    if kind == "linear":
        macs = math.prod(out) * w[1]
    else:
        transposed = node.target in TRANSPOSED_CONV_OPS or (
            node.target is _aten.convolution.default and len(node.args) > 6 and bool(node.args[6]))
        macs = conv_macs(xs, w, out, transposed)
    return (0, 2 * macs) if kind == "adder" else (macs, macs)


def _tally(node: torch.fx.Node) -> tuple[int, int] | None:
    """(mul, add incl. accumulations) of one op node by its analysis handle, as a capture counts the call;
    (0, 0) for an op the analysis ignores (views, copies); None where no handle could read it."""
    from adderconv.analysis.capture import bind
    from adderconv.analysis.counts import additions
    from adderconv.analysis.registry import Handle, lookup

    handle = lookup(node.target)
    if isinstance(handle, str):
        return (0, 0)
    if not isinstance(handle, Handle) or not hasattr(node.target, "_schema"):
        return None
    val = lambda a: a.meta.get("val")  # noqa: E731  (a node's value: a fake tensor, or a shape's int)
    try:
        args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), val)
        out = node.meta.get("val")
        outs = [_shape(o) for o in (out if isinstance(out, (tuple, list)) else (out,))]
        if any(o is None for o in outs):
            return None
        tally = handle(outs, bind(node.target._schema, args, kwargs))
    except (ValueError, TypeError, IndexError, KeyError):   # symbolic sizes, shapes a handle cannot read
        return None
    return tally["mul"], additions(tally)


def build_graph(ep: torch.export.ExportedProgram) -> nx.MultiDiGraph:
    """The MultiDiGraph of an exported program (see the module docstring for the attributes)."""
    user_inputs = set(ep.graph_signature.user_inputs)
    g = nx.MultiDiGraph()
    for node in ep.graph.nodes:
        if node.op == "placeholder" and node.name not in user_inputs:
            continue   # parameters, buffers and constants
        if node.op == "placeholder":
            kind = "input"
        elif node.op == "output":
            kind = "output"
        else:
            kind = op_kind(node.target)
        stack = list((node.meta.get("nn_module_stack") or {}).values())
        module, module_type = stack[-1] if stack else ("", "")
        val = node.meta.get("val")
        attrs = {"op": str(node.target) if node.op == "call_function" else node.op, "kind": kind,
                 "module": str(module), "module_type": str(module_type).rsplit(".", 1)[-1],
                 "shape": str(list(_shape(val) or ())), "dtype": str(getattr(val, "dtype", "")), "order": len(g)}
        counts = _tally(node) if node.op == "call_function" else (0, 0)
        if counts is None and kind in MULTIPLICATIVE:
            counts = _counts(kind, node)          # a shape no handle reads: the MAC formula still does
        attrs["counted"] = counts is not None
        attrs["mul"], attrs["add"] = counts or (0, 0)
        g.add_node(node.name, **attrs)
        for pos, arg in enumerate(node.all_input_nodes):
            if arg.name in g:
                g.add_edge(arg.name, node.name, key=pos)
    return g


def model_graph(model: nn.Module, example_inputs: Sequence[object]) -> nx.MultiDiGraph:
    """Trace ``model`` on ``example_inputs`` and return its graph; an untraceable model raises AdderconvError."""
    try:
        ep = trace(model, example_inputs)
    except Exception as e:  # torch.export raises many types; the user needs the first line
        raise AdderconvError(f"cannot trace the model with torch.export ({type(e).__name__}: "
                             f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})") from e
    return build_graph(ep)


def first_last(g: nx.MultiDiGraph) -> tuple[set[str], set[str]]:
    """Names of multiplicative nodes with no multiplicative op before (first) / after (last) them."""
    order = list(nx.topological_sort(g))
    before: dict[str, bool] = {}
    for n in order:
        before[n] = any(before[p] or g.nodes[p]["kind"] in MULTIPLICATIVE for p in g.predecessors(n))
    after: dict[str, bool] = {}
    for n in reversed(order):
        after[n] = any(after[s] or g.nodes[s]["kind"] in MULTIPLICATIVE for s in g.successors(n))
    mult = [n for n in order if g.nodes[n]["kind"] in MULTIPLICATIVE]
    return {n for n in mult if not before[n]}, {n for n in mult if not after[n]}


def reaches_norm(g: nx.MultiDiGraph, node: str) -> bool:
    """True when every path from ``node``'s output meets a normalisation before another layer or the output."""
    memo: dict[str, bool] = {}

    def ok(n: str) -> bool:   # iterative enough: graphs are DAGs, memoised, depth bounded by the model
        if n in memo:
            return memo[n]
        kind = g.nodes[n]["kind"]
        if kind == "norm":
            res = True
        elif kind in MULTIPLICATIVE or kind == "output":
            res = False
        else:
            res = all(ok(s) for s in g.successors(n))
        memo[n] = res
        return res

    succ = list(g.successors(node))
    return bool(succ) and all(ok(s) for s in succ)


def write_graphml(g: nx.MultiDiGraph, path: str) -> None:
    """Write ``g`` as GraphML (all attributes are plain strings, ints and bools)."""
    nx.write_graphml(g, path)
