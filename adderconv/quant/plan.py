"""Which BatchNorm folds into which adder layer, and which layers can hand uint8 codes to the next one.

Read from a torch.fx trace of the float model (adder layers kept as leaves): an adder whose only consumer is a
BatchNorm2d (BatchNorm1d after an AdderLinear) called nowhere else folds it; a layer whose (folded) output goes
only through a ReLU, or directly, into another quantised adder layer of its kind, which reads nothing else,
hands that layer uint8 codes on its grid. A layer whose (folded) output is added to another tensor (a ResNet
block's ``relu(out + identity)``, the ReLU optional) has ``residual``, and ``readers`` are the quantised layers
that read the sum directly (the next block's first layer and its downsample): they share one grid, on which
the residual layer can write the sum's codes (:mod:`.fuse`). The
trace is only read: the model keeps its own forward, with the adder layers and folded BatchNorms swapped. A
model torch.fx cannot trace keeps every BatchNorm float (said in the report).

>>> from adderconv import get_model
>>> p = plan(get_model("resnet20_adder"), ["layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1"])
>>> p.steps["layer1.0.conv1"]
Step(bn='layer1.0.bn1', next='layer1.0.conv2', relu=True, residual='', readers=(), only_readers=False)
>>> p.steps["layer1.0.conv2"].residual, p.steps["layer1.0.conv2"].readers
('add_relu', ('layer1.1.conv1',))
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..io import first_line
from ..layers import AdderConv1d, AdderConv2d, AdderLinear

__all__ = ["Step", "Plan", "plan", "codes_to", "codes_for_readers"]

_RELUS = (F.relu, torch.relu, torch.relu_)
_ADDS = (operator.add, torch.add)


@dataclass(frozen=True)
class Step:
    bn: str | None = None      # the BatchNorm2d folded into this layer's epilogue
    next: str | None = None    # the quantised layer this one hands uint8 codes to
    relu: bool = False         # a ReLU between them, folded into the clamp
    residual: str = ""         # "add" / "add_relu": the output is added to another tensor (then a ReLU)
    readers: tuple[str, ...] = ()   # the quantised layers that read that sum directly
    only_readers: bool = False      # and nothing else reads it


def codes_to(step: Step, grids: dict[str, int]) -> str | None:
    """The layer ``step`` hands uint8 codes to: its ``next``, unless that layer has several grids (``grids``: each
    layer's count), which quantises a float input once per grid."""
    return step.next if step.next and grids.get(step.next, 1) == 1 else None


def codes_for_readers(step: Step, fused: bool, grids: dict[str, int]) -> bool:
    """Whether a residual layer (its add ``fused``) also writes its sum's codes for its readers: they exist and
    each has one grid."""
    return fused and bool(step.readers) and all(grids.get(r, 1) == 1 for r in step.readers)


@dataclass
class Plan:
    steps: dict[str, Step]
    notes: list[str] = field(default_factory=list)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (AdderConv2d, AdderConv1d, AdderLinear)) or super().is_leaf_module(m, qualname)


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return type(modules.get(node.target)) is nn.ReLU
    if node.op == "call_function":
        return node.target in _RELUS and not node.kwargs
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _is_add(node: fx.Node, operand: fx.Node) -> bool:
    """``operand + other`` (either order) of two tensors, nothing else."""
    return (node.op == "call_function" and node.target in _ADDS and len(node.args) == 2 and not node.kwargs
            and operand in node.args and all(isinstance(a, fx.Node) for a in node.args)
            and node.args[0] is not node.args[1])


def plan(model: nn.Module, layers: list[str]) -> Plan:
    """The folds and uint8 hand-offs among ``layers`` (module names of quantisable adder layers)."""
    try:
        graph = _Tracer().trace(model)
    except Exception as e:  # data-dependent control flow, unsupported Python: no folding, still correct
        return Plan({n: Step() for n in layers}, [f"torch.fx could not trace the model ({first_line(e)}): every "
                                                  f"BatchNorm stays float after its adder layer"])
    modules = dict(model.named_modules())
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    wanted = set(layers)
    steps: dict[str, Step] = {}
    for node in graph.nodes:
        if node.op != "call_module" or node.target not in wanted or calls[node.target] != 1:
            continue
        cur, bn = node, None
        users = list(cur.users)
        bn_type = nn.BatchNorm1d if isinstance(modules[node.target], AdderLinear) else nn.BatchNorm2d
        if (len(users) == 1 and users[0].op == "call_module" and type(modules.get(users[0].target)) is bn_type
                and calls[users[0].target] == 1 and users[0].args[0] is cur):
            bn, cur = users[0].target, users[0]
        nxt, relu = None, False
        users = list(cur.users)
        if len(users) == 1 and _is_relu(users[0], modules) and users[0].args[0] is cur:
            relu, after = True, list(users[0].users)
            target = users[0]
        else:
            after, target = users, cur
        if (len(after) == 1 and after[0].op == "call_module" and after[0].target in wanted
                and type(modules[after[0].target]) is type(modules[node.target])
                and calls[after[0].target] == 1 and after[0].args and after[0].args[0] is target
                and len(after[0].args) == 1 and not after[0].kwargs):
            nxt = after[0].target
        else:
            relu = False   # the ReLU stays as it is: it acts on the float output
        residual, readers, only = "", (), False
        if nxt is None and len(users) == 1 and _is_add(users[0], cur):
            add = users[0]
            end, residual = add, "add"
            if len(add.users) == 1 and _is_relu(next(iter(add.users)), modules):
                end, residual = next(iter(add.users)), "add_relu"
            readers = tuple(u.target for u in end.users
                            if u.op == "call_module" and u.target in wanted and type(modules[u.target]) is AdderConv2d
                            and calls[u.target] == 1 and len(u.args) == 1 and u.args[0] is end and not u.kwargs)
            only = bool(readers) and len(readers) == len(end.users)
        steps[node.target] = Step(bn, nxt, relu, residual, readers, only)
    for n in layers:
        steps.setdefault(n, Step())
    return Plan(steps)
