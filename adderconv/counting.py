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

>>> t = Tally(mul=3, acc=3) + Tally(add=2)
>>> t["add"], t["acc"], t["mul"], t["div"], additions(t)
(2, 3, 3, 0, 5)
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

__all__ = ["KINDS", "additions", "Tally", "OpCount", "LayerCounts", "ModelCounts"]

#: Known kinds, in display order; a handle may use only these.
KINDS: tuple[str, ...] = ("mul", "add", "acc", "cmp", "div", "exp", "log", "sqrt")


def additions(t: Mapping[str, int]) -> int:
    """Additions as the papers count them (AdderNet's #Add): the operand adds and the accumulations."""
    return t.get("add", 0) + t.get("acc", 0)


class Tally(Mapping[str, int]):
    """An immutable count of operations by kind; missing kinds read as 0, zero entries are dropped."""

    __slots__ = ("_d",)

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

    def __getitem__(self, kind: str) -> int:
        return self._d.get(kind, 0)

    def __iter__(self) -> Iterator[str]:
        return iter(k for k in KINDS if k in self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __add__(self, other: Mapping[str, int]) -> "Tally":
        return Tally({k: self[k] + other.get(k, 0) for k in set(self._d) | set(other)})

    def __mul__(self, n: int) -> "Tally":
        return Tally({k: v * int(n) for k, v in self._d.items()})

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
        for t in tallies:
            for k, v in t.items():
                out[k] = out.get(k, 0) + v
        return Tally(out)


@dataclass(frozen=True)
class OpCount:
    """One counted operator call: ``op`` (e.g. ``aten::convolution``), its class (``conv``, ``adder``, ...),
    and the phase of a training step it belongs to (``forward``, ``backward`` or ``optimizer``)."""

    op: str
    category: str
    tally: Tally
    phase: str = "forward"


@dataclass
class LayerCounts:
    """Everything counted inside one module (its own ops, not its children's), keyed by module path.

    ``weights``/``act_in``/``act_out`` are element counts for the memory model (parameters held by the
    module, tensor elements entering and leaving its calls); 0 where unknown. ``precision`` is the one the
    module declares for itself (``energy_precision = "int8"`` on its class), None when it declares none.
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
    """

    layers: list[LayerCounts]
    ignored: dict[str, int] = field(default_factory=dict)
    frontend: str = "pytorch"
    capture: str = "dispatch"
    training: bool = False
    optimizer: str | None = None

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
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r}")
