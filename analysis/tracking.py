"""Which layer an op belongs to: module hooks in forward, gradient hooks in backward, recorded module paths
in exported programs; and the per-layer facts the memory model needs (weights, activations read/written).

The rule: in forward, an op belongs to the innermost module whose ``forward`` is running; in backward, to the
module whose forward created the autograd node being run (``torch._C._current_autograd_node()``), whatever its
position in its container (a Sequential's last child keeps its own backward). Nodes are claimed as they appear:
when a module is entered, the nodes behind its inputs not yet claimed go to the caller; when it returns, the nodes
behind its outputs not yet claimed go to it. Where two gradients of one tensor meet (a residual block's input),
the engine adds them while running the node whose gradient arrives second, and the sum belongs to that node's
layer. Modules without a name in the model's tree (built inside ``forward``) belong to their caller.

>>> import torch
>>> layers, linear = new_layers(torch.nn.Sequential(torch.nn.Linear(2, 2)))
>>> sorted(layers), sorted(linear)
(['', '0'], ['0'])
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils._pytree import tree_flatten

from .counts import LayerCounts

__all__ = ["new_layers", "LayerTracker", "memory_hooks", "declared_precision", "parameter_owners"]


def declared_precision(mod: Any) -> str | None:
    """A module's own ``energy_precision`` (e.g. ``"int8"`` on a quantised layer), else None."""
    p = getattr(mod, "energy_precision", None)
    return p if isinstance(p, str) else None


def parameter_owners(model: nn.Module) -> tuple[dict[str, int], int]:
    """(module path -> elements of the parameters it owns, trainable elements): every parameter once, at the
    first path that names it (``named_parameters``' own rule), so a shared one counts once; buffers are not
    parameters. Every module that owns one is listed, whether or not it runs.

    >>> lin = torch.nn.Linear(2, 3)
    >>> parameter_owners(torch.nn.Sequential(lin, torch.nn.ReLU(), lin))     # one Linear, called twice
    ({'0': 9}, 9)
    """
    owners: dict[str, int] = {}
    trainable = 0
    for pname, p in model.named_parameters():
        owner = pname.rpartition(".")[0]
        owners[owner] = owners.get(owner, 0) + p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return owners, trainable


def new_layers(model: nn.Module, program: bool = False) -> tuple[dict[str, LayerCounts], set[str]]:
    """Empty counts per module path (the root is ""), and the paths that are ``nn.Linear`` layers."""
    layers: dict[str, LayerCounts] = {}
    linear: set[str] = set()
    if not program:
        for name, mod in model.named_modules():
            layers[name] = LayerCounts(name=name, type=type(mod).__name__,
                                       weights=sum(p.numel() for p in mod.parameters(recurse=False)),
                                       precision=declared_precision(mod))
            if isinstance(mod, nn.Linear):
                linear.add(name)
        return layers, linear
    owners = parameter_owners(model)[0]
    layers[""] = LayerCounts(name="", type=type(model).__name__, weights=owners.get("", 0))
    for node in model.graph.nodes:
        for path, type_name in (node.meta.get("nn_module_stack") or {}).values():
            if path not in layers:
                layers[path] = LayerCounts(name=path, type=str(type_name).rpartition(".")[2],
                                           weights=owners.get(path, 0))
            if str(type_name).endswith(".Linear"):
                linear.add(path)
    return layers, linear


class LayerTracker:
    """Context manager: ``current()`` is (the LayerCounts of the running layer, "forward" or "backward")."""

    def __init__(self, model: nn.Module, layers: dict[str, LayerCounts], program: bool = False) -> None:
        self.layers = layers
        self.names = {id(m): n for n, m in reversed(list(model.named_modules(remove_duplicate=False)))}
        self.program = program
        self.fw: list[str | None] = []
        self.owner: dict[Any, str] = {}          # autograd node -> the layer whose forward created it
        self.order: dict[str, None] = {}        # layers in first-use order
        self._hooks: list[Any] = []

    def _forward_layer(self) -> str:
        return next((n for n in reversed(self.fw) if n is not None), "")

    def current(self) -> tuple[LayerCounts, str]:
        backward = torch._C._current_graph_task_id() != -1
        if backward:
            node = torch._C._current_autograd_node()
            name = self.owner.get(node, "") if node is not None else ""
        else:
            name = self._forward_layer()
        self.order.setdefault(name)
        return self.layers[name], "backward" if backward else "forward"

    def claim(self, name: str, values: Any) -> None:
        """Give layer ``name`` the autograd nodes behind ``values`` that no layer has claimed yet."""
        if not torch.is_grad_enabled():
            return
        todo = [t.grad_fn for t in tree_flatten(values)[0] if isinstance(t, Tensor) and t.grad_fn is not None]
        owner = self.owner
        while todo:
            node = todo.pop()
            if node in owner:
                continue
            owner[node] = name
            todo.extend(n for n, _ in node.next_functions if n is not None and n not in owner)

    def _pre(self, mod: nn.Module, args: Any) -> None:
        self.claim(self._forward_layer(), args)        # what the caller computed before this call is the caller's
        self.fw.append(self.names.get(id(mod)))

    def _post(self, mod: nn.Module, args: Any, out: Any) -> None:
        self.claim(self._forward_layer(), out)
        if self.fw:
            self.fw.pop()

    def interpreter(self, gm: Any):
        """A callable running an exported program's graph, each node in the layer its module stack records."""
        tracker = self

        class _Run(torch.fx.Interpreter):
            def run_node(self, n):
                stack = n.meta.get("nn_module_stack") or {}
                path = list(stack.values())[-1][0] if stack else ""
                tracker.fw.append(path if path in tracker.layers else "")
                try:
                    out = super().run_node(n)
                    tracker.claim(tracker.fw[-1], out)
                    return out
                finally:
                    tracker.fw.pop()

        return lambda *args: _Run(gm).run(*args)

    def __enter__(self) -> "LayerTracker":
        if not self.program:
            self._hooks += [register_module_forward_pre_hook(self._pre), register_module_forward_hook(self._post)]
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        self.owner.clear()                      # the nodes keep the graph (and its saved tensors) alive


def _numel(obj: Any) -> int:
    return sum(math.prod(int(d) for d in t.shape) for t in tree_flatten(obj)[0] if isinstance(t, Tensor))


@contextlib.contextmanager
def memory_hooks(model: nn.Module, layers: dict[str, LayerCounts]) -> Iterator[None]:
    """Forward hooks on leaf modules recording the elements read and written (for the memory model)."""
    def hook(name: str):
        def record(_m: nn.Module, args: tuple, out: Any) -> None:
            layer = layers[name]
            layer.act_in += _numel(args)
            layer.act_out += _numel(out)
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if n in layers and not any(m.children())]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
