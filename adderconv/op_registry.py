"""The handle registry: which function counts which operator, keyed by the operator object itself.

On the ground floor beside the ops (torch and :mod:`adderconv.counting` only): an op registers its handle next to
its definition without importing the analysis; every capture of :mod:`adderconv.analysis` reads this one registry
(:mod:`adderconv.analysis.registry` re-exports these same objects) and gives each call its fate with
:func:`apply_handle`.

A handle is a pure function ``fn(outs, **named)``: ``outs`` is the list of the op's outputs and the named
arguments are the op's own schema arguments, both seen as plain values (a tensor is its shape, a tuple of
ints; a list of tensors a list of shapes; scalars, lists and None are themselves). A handle declares the
arguments it reads by name, like a function of the schema; registration checks every name against the op's
schema, so a typo (in the op or in an argument) is an error at import, never a handle that silently never
matches. Every op has one of three fates: a handle, a written reason to ignore it, or unsupported.

Custom ops register next to their own definition, e.g. ``adderconv/ops.py``:

>>> import torch
>>> from adderconv.counting import Tally
>>> lib = torch.library.Library("registry_doc", "DEF")
>>> _ = lib.define("scale(Tensor x, float k) -> Tensor")
>>> @register(torch.ops.registry_doc.scale, category="elementwise")
... def _scale(outs, x):
...     return Tally(mul=math.prod(x))
>>> HANDLES[torch.ops.registry_doc.scale].fn([(2, 3)], x=(2, 3))
Tally(mul=6)
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Union

import torch
from torch._ops import OpOverload, OpOverloadPacket

from .counting import LayerCounts, OpCount, Tally

__all__ = ["Handle", "HANDLES", "IGNORED", "OpKey", "register", "ignore", "resolve", "make_handle",
           "lookup", "apply_handle", "op_name", "overrides_from", "numel"]

OpKey = Union[OpOverload, OpOverloadPacket]
HandleFn = Callable[..., Tally]


@dataclass(frozen=True)
class Handle:
    """``fn`` counts ``op``; ``reads`` are the schema arguments it takes by name."""

    op: OpKey
    category: str
    fn: HandleFn
    reads: tuple[str, ...]
    defaults: frozenset[str]          # arguments with a default in ``fn`` (may be absent from an overload)

    def __call__(self, outs: list, named: Mapping[str, Any]) -> Tally:
        missing = [n for n in self.reads if n not in named and n not in self.defaults]
        if missing:
            raise ValueError(f"this overload has no argument {', '.join(missing)}")
        return self.fn(outs, **{n: named[n] for n in self.reads if n in named})


#: op object (an overload packet: every overload, or one overload) -> its handle.
HANDLES: dict[OpKey, Handle] = {}
#: ops deliberately not counted -> the reason.
IGNORED: dict[OpKey, str] = {}


def resolve(op: OpKey | str) -> OpKey:
    """An op object from itself or its name (``'aten::mm'``, ``'aten::add.Tensor'``); unknown names raise."""
    if isinstance(op, (OpOverload, OpOverloadPacket)):
        return op
    if not isinstance(op, str) or "::" not in op:
        raise ValueError(f"expected an operator (torch.ops.<ns>.<name>) or its name 'ns::name', got {op!r}")
    ns, _, rest = op.partition("::")
    name, _, overload = rest.partition(".")
    try:
        packet = getattr(getattr(torch.ops, ns), name)
        return getattr(packet, overload) if overload else packet
    except (AttributeError, RuntimeError):
        raise ValueError(f"no operator named {op!r} is registered with torch (a typo, or its library is not "
                         f"imported yet)") from None


def _schemas(op: OpKey) -> list[Any]:
    if isinstance(op, OpOverload):
        return [op._schema]
    return [getattr(op, o)._schema for o in op.overloads()]


def op_name(op: OpKey) -> str:
    """``aten::convolution`` for a packet or any of its overloads (the name reports use)."""
    packet = op.overloadpacket if isinstance(op, OpOverload) else op
    return packet._qualified_op_name


def make_handle(op: OpKey | str, fn: HandleFn, category: str) -> Handle:
    """Check ``fn``'s argument names against ``op``'s schema and build the handle (no registration)."""
    key = resolve(op)
    params = list(inspect.signature(fn).parameters.values())
    if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        raise ValueError(f"handle {getattr(fn, '__name__', fn)!r} for {op_name(key)}: the first parameter "
                         f"receives the outputs (e.g. 'outs')")
    known = {a.name for s in _schemas(key) for a in s.arguments}
    reads, defaults = [], set()
    for p in params[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ValueError(f"handle {fn.__name__!r} for {op_name(key)}: name the arguments it reads "
                             f"(no *args/**kwargs)")
        if p.name not in known:
            raise ValueError(f"handle {fn.__name__!r} for {op_name(key)} reads {p.name!r}, which the op's "
                             f"schema does not have; it has: {', '.join(sorted(known))}")
        reads.append(p.name)
        if p.default is not p.empty:
            defaults.add(p.name)
    return Handle(key, category, fn, tuple(reads), frozenset(defaults))


def _check_free(key: OpKey) -> None:
    if key in HANDLES or key in IGNORED:
        raise ValueError(f"operator {op_name(key)!r} already has a handle or is ignored")


def register(*ops: OpKey | str, category: str) -> Callable[[HandleFn], HandleFn]:
    """Decorator: count ``ops`` with the function; registering an op twice is an error.

    ``ops`` are op objects (``torch.ops.aten.mm`` for every overload, ``torch.ops.aten.add.Tensor`` for
    one) or their names. The public way to count a custom op, once, for every capture.
    """
    if not ops:
        raise ValueError("register() needs at least one operator")

    def wrap(fn: HandleFn) -> HandleFn:
        handles = [make_handle(op, fn, category) for op in ops]
        for h in handles:
            _check_free(h.op)
        for h in handles:
            HANDLES[h.op] = h
        return fn
    return wrap


def ignore(ops: Iterable[OpKey | str], reason: str) -> None:
    """Mark ops as deliberately not counted, with the reason shown in reports."""
    if not reason.strip():
        raise ValueError("an ignored op needs a reason")
    for op in ops:
        key = resolve(op)
        _check_free(key)
        IGNORED[key] = reason


def lookup(func: OpKey, overrides: Mapping[OpKey, Handle] | None = None) -> Handle | str | None:
    """The handle for ``func`` (per-call overrides first, overload before packet), its ignore reason, or None.

    ``func`` is an overload, or a packet where a capture knows no overload (a traced node without a schema)."""
    packet = func.overloadpacket if isinstance(func, OpOverload) else func
    for table in (overrides or {}, HANDLES):
        h = table.get(func) or table.get(packet)
        if h is not None:
            return h
    return IGNORED.get(func) or IGNORED.get(packet)


def apply_handle(layer: LayerCounts, name: str, handle: Handle | str | None, outs: list,
                 named: Mapping[str, Any], ignored: dict[str, int], *, phase: str = "forward",
                 linear: bool = False) -> None:
    """Give one call of op ``name`` its fate, the same for every capture: counted into ``layer`` by its handle,
    ignored (its calls counted in ``ignored``), or unsupported in ``layer`` (no handle, or a handle that cannot
    read these shapes: listed with its reason, never guessed). ``handle`` is what :func:`lookup` returned;
    ``linear`` says ``layer`` is an ``nn.Linear``, whose matmuls are counted as ``linear``.

    >>> from adderconv.counting import LayerCounts
    >>> layer, ignored = LayerCounts("fc", "Linear"), {}
    >>> apply_handle(layer, "aten::view", "a view", [], {}, ignored)
    >>> apply_handle(layer, "my::op", None, [], {}, ignored)
    >>> ignored, layer.unsupported
    ({'aten::view': 1}, {'my::op': 1})
    """
    if handle is None:
        layer.unsupported[name] = layer.unsupported.get(name, 0) + 1
        return
    if isinstance(handle, str):
        ignored[name] = ignored.get(name, 0) + 1
        return
    try:
        tally = handle(outs, named)
    except (ValueError, TypeError, IndexError, KeyError) as e:   # shapes it cannot read: say so, never guess
        key = f"{name} ({e})"
        layer.unsupported[key] = layer.unsupported.get(key, 0) + 1
        return
    category = "linear" if handle.category == "matmul" and linear else handle.category
    layer.ops.append(OpCount(name, category, tally, phase))


def overrides_from(handles: Mapping[Any, Any] | None) -> dict[OpKey, Handle]:
    """Per-call ``{op: fn}`` (or ``{op: Handle}``) into handles, checked like registrations, never stored."""
    out: dict[OpKey, Handle] = {}
    for op, fn in (handles or {}).items():
        if isinstance(fn, Handle):
            out[resolve(op)] = fn
            continue
        if not callable(fn):
            raise ValueError(f"handles[{op!r}] must be a function (outs, **named args) -> Tally, got {fn!r}")
        key = resolve(op)
        base = HANDLES.get(key) or (HANDLES.get(key.overloadpacket) if isinstance(key, OpOverload) else None)
        out[key] = make_handle(key, fn, getattr(fn, "category", base.category if base else "custom"))
    return out


def numel(shape: Any) -> int:
    """Elements of a tensor shape (used by handles)."""
    return math.prod(shape)
