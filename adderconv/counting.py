"""The counting vocabulary: a tally of arithmetic operations by kind, per operator call, per layer, per model.

It lives on the ground floor (pure data, no torch) so the ops can register their counting handles next to their
definitions (:mod:`adderconv.op_registry`) without importing the analysis above them, as torch keeps its flop
registry beneath its ops; :mod:`adderconv.analysis.counts` re-exports these same objects.

Counts are facts about a model: per layer and per operator, a tally of arithmetic operations by kind.

Kinds are named exactly: ``mul`` and ``add`` (a subtraction is an ``add``), ``acc`` (an addition into an
accumulator: the accumulation of a multiply-accumulate, and a bias added to it), ``cmp`` (comparisons,
max/min, ReLU), ``div``, ``exp`` (exp, tanh, erf and other transcendental functions), ``log``, ``sqrt``.
A MAC is 1 ``mul`` + 1 ``acc``; an adder-layer MAC (|x - w|, then accumulate) is 1 ``add`` + 1 ``acc``.
``acc`` is its own kind because hardware accumulates wider than it multiplies (int8 operands, an int32
accumulator); the papers' "#Add" is ``add + acc`` (:func:`additions`).

MACs (the one figure fvcore, ptflops and torchinfo users look for; fvcore calls them "flops") are the products
(``mul``) or adder terms (|x - w|, an ``add``) that go into an accumulator (``acc``): a tally as a handle builds
it holds ``min(mul + add, acc)`` of them (:func:`macs_of`). A bias is an ``acc`` alone, a softmax's sums are ``add``
alone, BatchNorm's affine is ``mul`` + ``add`` with no ``acc``: none is a MAC. The rule is applied to each tally a
handle builds and the result travels with it through ``+`` and ``*`` (:attr:`Tally.macs`), never to a sum:
fused ops add terms whose extras would otherwise pair up (``nn.MultiheadAttention``'s fast path adds its
projections' biases (``acc``) to the softmax's ``mul``/``add``; an LSTM adds its gate biases to the cell's
products), and ``min`` over their sum would count those as MACs. So a handle of a fused op adds its parts as
tallies of their own (every handle here does; a test checks each multiply-accumulate handle).

>>> t = Tally(mul=3, acc=3) + Tally(add=2)
>>> t["add"], t["acc"], t["mul"], t["div"], additions(t), t.macs
(2, 3, 3, 0, 5, 3)
>>> t = Tally(mul=4, acc=6) + Tally(mul=5, add=5)    # 4 products, 2 biases; then elementwise work (fused)
>>> t.macs, macs_of(t)                                # per term, and what the rule would say of the sum
(4, 6)
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

__all__ = ["KINDS", "additions", "macs_of", "Tally", "OpCount", "LayerCounts", "ModelCounts", "ancestors",
           "roll_up"]

V = TypeVar("V", int, float, "Tally")

#: Known kinds, in display order; a handle may use only these.
KINDS: tuple[str, ...] = ("mul", "add", "acc", "cmp", "div", "exp", "log", "sqrt")


def additions(t: Mapping[str, int]) -> int:
    """Additions as the papers count them (AdderNet's #Add): the operand adds and the accumulations."""
    return t.get("add", 0) + t.get("acc", 0)


def macs_of(t: Mapping[str, int]) -> int:
    """MACs in one operator's terms: products or |x - w| terms accumulated, ``min(mul + add, acc)``."""
    return min(t.get("mul", 0) + t.get("add", 0), t.get("acc", 0))


class Tally(Mapping[str, int]):
    """An immutable count of operations by kind; missing kinds read as 0, zero entries are dropped.

    ``macs`` is carried beside the kinds (see the module): the rule applied where a tally is built from kinds,
    summed where tallies are added. It is not a kind: equality and iteration see the kinds only.
    """

    __slots__ = ("_d", "_macs")

    def __init__(self, items: Mapping[str, int] | None = None, **kinds: int) -> None:
        d: dict[str, int] = {}
        for k, v in {**(items or {}), **kinds}.items():
            if k not in KINDS:
                raise ValueError(f"unknown operation kind {k!r}; known: {', '.join(KINDS)}")
            if int(v) != v or v < 0:
                raise ValueError(f"count of {k!r} must be a non-negative integer, got {v!r}")
            if v:
                d[k] = d.get(k, 0) + int(v)
        self._d = d
        self._macs = macs_of(d)

    @property
    def macs(self) -> int:
        """Multiply-accumulates (or adder |x - w|-accumulates) in this tally."""
        return self._macs

    def _with_macs(self, macs: int) -> "Tally":
        self._macs = macs
        return self

    def __getitem__(self, kind: str) -> int:
        return self._d.get(kind, 0)

    def __iter__(self) -> Iterator[str]:
        return iter(k for k in KINDS if k in self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __add__(self, other: Mapping[str, int]) -> "Tally":
        return Tally({k: self[k] + other.get(k, 0) for k in set(self._d) | set(other)})._with_macs(
            self._macs + _macs(other))

    def __mul__(self, n: int) -> "Tally":
        return Tally({k: v * int(n) for k, v in self._d.items()})._with_macs(self._macs * int(n))

    __rmul__ = __mul__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self.items()) == {k: v for k, v in other.items() if v}

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._d.items())))

    def __repr__(self) -> str:
        return "Tally(" + ", ".join(f"{k}={v}" for k, v in self.items()) + ")"

    @staticmethod
    def sum(tallies: Iterable[Mapping[str, int]]) -> "Tally":
        out: dict[str, int] = {}
        macs = 0
        for t in tallies:
            for k, v in t.items():
                out[k] = out.get(k, 0) + v
            macs += _macs(t)
        return Tally(out)._with_macs(macs)


def _macs(t: Mapping[str, int]) -> int:
    return t.macs if isinstance(t, Tally) else macs_of(t)


def ancestors(path: str) -> list[str]:
    """A module path and every module above it, the whole model (``""``) first.

    >>> ancestors("layer1.0.conv1")
    ['', 'layer1', 'layer1.0', 'layer1.0.conv1']
    """
    parts = path.split(".") if path else []
    return [""] + [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def roll_up(values: Iterable[tuple[str, V]], zero: V) -> dict[str, V]:
    """Each path's value summed into itself and every module above it, as fvcore's ``by_module``: the keys are
    every given path and its ancestors, in tree order (depth first, children in the order first given).

    >>> roll_up([("a.x", 1), ("b", 2), ("a.y", 3)], 0)
    {'': 6, 'a': 4, 'a.x': 1, 'a.y': 3, 'b': 2}
    """
    sums: dict[str, V] = {}
    children: dict[str, list[str]] = {}
    for path, value in values:
        chain = ancestors(path)
        for parent, child in zip(chain, chain[1:]):
            kids = children.setdefault(parent, [])
            if child not in sums and child not in kids:
                kids.append(child)
        for p in chain:
            sums[p] = sums.get(p, zero) + value
    out: dict[str, V] = {}
    todo = [""] if sums else []
    while todo:                                   # depth first, children in first-given order
        path = todo.pop()
        out[path] = sums[path]
        todo.extend(reversed(children.get(path, [])))
    return out


@dataclass(frozen=True)
class OpCount:
    """One counted operator call: ``op`` (e.g. ``aten::convolution``), its class (``conv``, ``adder``, ...),
    and the phase of a training step it belongs to (``forward``, ``backward`` or ``optimizer``)."""

    op: str
    category: str
    tally: Tally
    phase: str = "forward"

    @property
    def macs(self) -> int:
        return self.tally.macs


@dataclass
class LayerCounts:
    """Everything counted inside one module (its own ops, not its children's), keyed by module path.

    ``weights``/``act_in``/``act_out`` are element counts for the memory model (parameters held by the
    module, tensor elements entering and leaving its calls); 0 where unknown. ``weights`` is what the module
    reads, not a parameter count: a shared parameter is in every module that holds it, an ONNX node's
    initializers include BatchNorm's running statistics (see :attr:`ModelCounts.parameters`). ``precision`` is
    the one the module declares for itself (``energy_precision = "int8"`` on its class), None when it declares none.
    """

    name: str
    type: str
    ops: list[OpCount] = field(default_factory=list)
    unsupported: dict[str, int] = field(default_factory=dict)
    weights: int = 0
    act_in: int = 0
    act_out: int = 0
    precision: str | None = None

    @property
    def tally(self) -> Tally:
        return Tally.sum(o.tally for o in self.ops)

    @property
    def macs(self) -> int:
        """MACs of the module's own ops, each op's by its own terms (see the module)."""
        return sum(o.macs for o in self.ops)

    def by_phase(self) -> dict[str, Tally]:
        out: dict[str, Tally] = {}
        for o in self.ops:
            out[o.phase] = out.get(o.phase, Tally()) + o.tally
        return out

    def by_category(self) -> dict[str, Tally]:
        out: dict[str, Tally] = {}
        for o in self.ops:
            out[o.category] = out.get(o.category, Tally()) + o.tally
        return out


@dataclass
class ModelCounts:
    """The facts for a whole model: layers in execution order plus views over them.

    ``ignored`` maps ops deliberately not counted (views, copies, shape arithmetic) to how often they ran;
    ``unsupported`` lists ops that had no handle (never dropped silently). ``capture`` says how the ops
    were seen (``dispatch``, ``real``, ``jit``, ``onnx``); ``training`` whether backward (and an optimizer
    update) are included.

    ``parameters`` maps each module path that owns parameters to their elements, every parameter once (a shared
    one at the first path that names it, as ``model.named_parameters()`` does; buffers are not parameters), so
    its values add up to ``sum(p.numel() for p in model.parameters())``; a module that ran no op keeps its
    entry. ``trainable`` is the part that requires a gradient (None where unknown: an ONNX file).

    >>> conv = LayerCounts("b.conv", "Conv2d", [OpCount("aten::convolution", "conv", Tally(mul=8, acc=10))])
    >>> norm = LayerCounts("b.bn", "BatchNorm2d", [OpCount("aten::batch_norm", "norm", Tally(mul=2, add=2))])
    >>> counts = ModelCounts([conv, norm], parameters={"b.conv": 36, "b.bn": 4})
    >>> counts.macs, counts.params, counts.by_module()["b"], counts.macs_by_module()["b"]
    (8, 40, Tally(mul=10, add=2, acc=10), 8)
    """

    layers: list[LayerCounts]
    ignored: dict[str, int] = field(default_factory=dict)
    frontend: str = "pytorch"
    capture: str = "dispatch"
    training: bool = False
    optimizer: str | None = None
    parameters: dict[str, int] = field(default_factory=dict)
    trainable: int | None = None

    @property
    def macs(self) -> int:
        """MACs of every op (forward, and backward in a training count), each op's by its own terms."""
        return sum(layer.macs for layer in self.layers)

    @property
    def params(self) -> int:
        """Parameter elements of the model, each parameter once."""
        return sum(self.parameters.values())

    def _roll_up(self, of_layer, zero: V, of_params=None) -> dict[str, V]:
        """One walk for every per-module view: the layers' values, then modules that own parameters only."""
        pairs = [(layer.name, of_layer(layer)) for layer in self.layers]
        pairs += [(path, of_params(n) if of_params else zero) for path, n in self.parameters.items()]
        return roll_up(pairs, zero)

    def by_module(self) -> dict[str, Tally]:
        """Tally per module path, each the sum of its subtree, like fvcore's ``by_module()``: ``""`` is the whole
        model, and every module above a layer has its entry (``layer1``, ``layer1.0``, ``layer1.0.conv1``)."""
        return self._roll_up(lambda layer: layer.tally, Tally())

    def macs_by_module(self) -> dict[str, int]:
        """MACs per module path, each the sum of its subtree (the keys of :meth:`by_module`)."""
        return self._roll_up(lambda layer: layer.macs, 0)

    def params_by_module(self) -> dict[str, int]:
        """Parameter elements per module path, each the sum of its subtree (the keys of :meth:`by_module`)."""
        return self._roll_up(lambda layer: 0, 0, lambda n: n)

    def by_phase(self) -> dict[str, Tally]:
        """Tally per phase of a training step (only ``forward`` for inference counts)."""
        out: dict[str, Tally] = {}
        for layer in self.layers:
            for ph, t in layer.by_phase().items():
                out[ph] = out.get(ph, Tally()) + t
        return out

    @property
    def total(self) -> Tally:
        return Tally.sum(layer.tally for layer in self.layers)

    @property
    def unsupported(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for layer in self.layers:
            for op, n in layer.unsupported.items():
                out[op] = out.get(op, 0) + n
        return dict(sorted(out.items()))

    def by_operator(self) -> dict[str, Tally]:
        """Tally per operator name (``aten::_convolution``, ``adderconv::adder_conv2d``, ``Conv``...)."""
        out: dict[str, Tally] = {}
        for layer in self.layers:
            for o in layer.ops:
                out[o.op] = out.get(o.op, Tally()) + o.tally
        return dict(sorted(out.items()))

    def by_category(self) -> dict[str, Tally]:
        """Tally per operator class (``conv``, ``adder``, ``linear``, ``norm``, ``elementwise``...)."""
        out: dict[str, Tally] = {}
        for layer in self.layers:
            for cat, t in layer.by_category().items():
                out[cat] = out.get(cat, Tally()) + t
        return dict(sorted(out.items()))

    def layer(self, name: str) -> LayerCounts:
        """The counts of the module ``name``'s own ops; a module above layers has its sums in :meth:`by_module`."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        if any(layer.name.startswith(f"{name}.") for layer in self.layers):
            raise KeyError(f"{name!r} is a module above the layers that ran ops (its own ops: none); its totals are "
                           f"by_module()[{name!r}], macs_by_module()[{name!r}]")
        raise KeyError(f"no layer named {name!r}")
