"""Energy is a price list applied to counts: compute energy per layer, optional memory energy, totals, and
the silicon area of each layer's processing element.

Compute energy = sum over kinds of count x price(precision, kind), where an accumulation (``acc``) is priced
at the layer's *accumulator* precision and every other kind at its *operand* precision. The ``hardware``
convention (the default) accumulates as datapaths do (:data:`ACCUMULATOR`: int8/int16 into int32, fp16/bf16
into fp32); the ``papers`` convention prices everything at the operand precision, as AdderNet and the energy
papers do. Kinds the table does not price (e.g. ``exp``) are reported as unpriced, never silently priced at
zero. Memory energy (optional, reported separately) is the quick estimate: every leaf layer reads its weights
and its input activations once and writes its outputs once, at one memory level, packed into words of the
table's width (no reuse, no hierarchy; ``--engine zigzag`` models that).

>>> from .counts import LayerCounts, ModelCounts, OpCount, Tally
>>> op = OpCount("aten::_convolution", "conv", Tally(mul=10, acc=10))
>>> counts = ModelCounts([LayerCounts("conv", "Conv2d", [op])])
>>> price(counts, precision="fp32").totals.energy_pj          # 10 x 3.7 + 10 x 0.9
46.0
>>> r = price(counts, precision="int8")                         # 10 x 0.2 + 10 x 0.1 (int32 accumulator)
>>> round(r.totals.energy_pj, 6), r.layers[0].accumulator, r.layers[0].unit, r.layers[0].unit_um2
(3.0, 'int32', 'MAC', 419.0)
>>> round(price(counts, precision="int8", pricing="papers").totals.energy_pj, 6)   # 10 x 0.2 + 10 x 0.03
2.3
"""
from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from adderconv.counting import roll_up
from adderconv.errors import AdderconvError

from .counts import KINDS, LayerCounts, ModelCounts, Tally, additions
from .tables import BYTES_PER_ELEMENT, PRECISIONS, PriceTable, load_table

__all__ = ["LayerEnergy", "ModuleEnergy", "Totals", "Unit", "EnergyReport", "price", "accumulator_for", "check_widths",
           "CONVENTIONS", "PRICINGS", "ENGINES", "ACCUMULATOR"]

#: How accumulations are priced: ``hardware`` at the accumulator's width, ``papers`` at the operand's.
PRICINGS: tuple[str, ...] = ("hardware", "papers")

#: What models data movement: ``arithmetic`` (compute, plus the one-level memory estimate on request) or
#: ``zigzag`` (ZigZag's mapping search through the accelerator's memory hierarchy, see :mod:`.dataflow`).
ENGINES: tuple[str, ...] = ("arithmetic", "zigzag")

#: The accumulator a datapath uses for each operand precision (int8 MACs sum into int32: a 3x3x64 adder
#: layer sums 576 terms of up to 255, 18 bits; narrower codes (int4..int7) keep the int32 accumulator; tensor
#: cores accumulate fp16/bf16 products in fp32).
ACCUMULATOR: dict[str, str] = {**{f"int{n}": "int32" for n in range(4, 8)}, "int8": "int32", "int16": "int32",
                               "int32": "int32", "fp16": "fp32", "bf16": "fp32", "fp32": "fp32"}

CONVENTIONS: tuple[str, ...] = (
    "conv/linear/matmul: one multiply-accumulate = 1 mul + 1 acc (the accumulation); a bias is 1 acc per output",
    "adder layer: |x - w| = 1 add, then 1 acc per MAC, 0 mul (AdderNet's 2 add: its #Add is add + acc)",
    "BatchNorm (eval) is counted, not assumed folded: 1 mul + 1 add per element (after an adder layer it "
    "cannot be folded)",
    "ReLU/max-pool are comparisons (cmp), priced as an add; transcendental functions are their own kinds",
    "views, copies, concatenation, dropout (eval) and abs/neg are not arithmetic and are not counted",
)


class _MulAdd:
    """``.mul`` and ``.add`` read from ``.counts``: the two figures every report leads with; ``.add`` counts
    additions as the papers do (``add + acc``)."""

    counts: Tally

    @property
    def mul(self) -> int:
        return self.counts["mul"]

    @property
    def add(self) -> int:
        return additions(self.counts)


@dataclass(frozen=True)
class LayerEnergy(_MulAdd):
    name: str
    type: str
    precision: str
    counts: Tally
    energy_pj: float                       # compute energy
    memory_pj: float = 0.0
    unsupported: Mapping[str, int] = field(default_factory=dict)
    precision_from: str = "global"         # "global", "pattern" (--layer-precision) or "declared" (the layer's own)
    phases: Mapping[str, Tally] = field(default_factory=dict)   # forward / backward / optimizer (training)
    accumulator: str = ""                  # the precision its accumulations (acc) are priced at
    unit: str = ""                         # its processing element: "MAC", "SAD" (adder) or "" (no accumulations)
    unit_um2: float | None = None          # that element's area (operand operator + accumulator adder); None: unknown


@dataclass(frozen=True)
class ModuleEnergy(_MulAdd):
    """One module path of the model's tree with everything below it summed (fvcore's ``by_module`` roll-up):
    counts, MACs, parameter elements and compute energy. ``type`` is the module's class where it ran ops of its
    own (a container above the layers has ""); ``depth`` is 0 for the whole model (``""``), 1 for its children."""

    name: str
    type: str
    depth: int
    counts: Tally
    macs: int
    params: int
    energy_pj: float


@dataclass(frozen=True)
class Unit:
    """One kind of processing element a model's datapath needs: a MAC (multiplier + accumulator adder) or a SAD
    unit (subtractor with absolute value + accumulator adder), at its widths, and the work it does."""

    unit: str
    precision: str
    accumulator: str
    um2: float | None
    macs: int                              # accumulations it performs (forward)
    layers: int

    @property
    def label(self) -> str:
        return f"{self.unit} {self.precision}/{self.accumulator}"


@dataclass(frozen=True)
class Totals(_MulAdd):
    counts: Tally
    energy_pj: float
    memory_pj: float = 0.0
    unpriced: Mapping[str, int] = field(default_factory=dict)   # kind -> count with no price


@dataclass(frozen=True)
class EnergyReport:
    """Counts, energy and the options that produced them; renderers in :mod:`.render` only format it."""

    model: str
    input_shape: tuple[int, ...] | None
    precision: str
    table: str
    memory: str | None
    layers: list[LayerEnergy]
    totals: Totals
    by_kind: dict[str, tuple[int, float]]          # kind -> (count, energy_pj)
    by_category: dict[str, Tally]
    unsupported: dict[str, int]
    ignored: dict[str, int]
    estimates: list[str]                            # sources of estimated prices that were used
    frontend: str = "pytorch"
    conventions: tuple[str, ...] = CONVENTIONS
    capture: str = "dispatch"
    training: bool = False
    optimizer: str | None = None
    by_phase: dict[str, Tally] = field(default_factory=dict)
    source_notes: tuple[str, ...] = ()             # what loading the model said (random weights, a remapped file)
    pricing: str = "hardware"                      # see PRICINGS
    accumulator: str | None = None                 # an explicit accumulator for every layer (None: ACCUMULATOR)
    units: tuple[Unit, ...] = ()                   # the processing elements, most work first
    engine: str = "arithmetic"                     # see ENGINES
    dataflow: Any = None                           # with engine "zigzag": a dataflow.Dataflow
    modules: tuple[ModuleEnergy, ...] = ()         # the module tree, depth first, the whole model ("") first
    trainable_params: int | None = None            # parameter elements that require a gradient (None: unknown)

    @property
    def params(self) -> int:
        """Parameter elements of the model, each parameter once (buffers are not parameters)."""
        return self.modules[0].params if self.modules else 0

    @property
    def macs(self) -> int:
        """Multiply-accumulates, adder |x - w|-accumulates included (fvcore's "flops"; see
        :mod:`adderconv.counting`), of every op counted."""
        return self.modules[0].macs if self.modules else 0

    def module(self, name: str) -> ModuleEnergy:
        """The roll-up of module path ``name`` (``""``: the whole model)."""
        for m in self.modules:
            if m.name == name:
                return m
        raise KeyError(f"no module named {name!r}")

    @property
    def main_unit(self) -> Unit | None:
        """The processing element doing most of the accumulations (the datapath's area argument)."""
        return self.units[0] if self.units else None

    @property
    def main_accumulator(self) -> str:
        """The accumulator of the main unit (the precision itself when nothing accumulates)."""
        return self.main_unit.accumulator if self.main_unit else self.precision

    def total_with(self, movement: Any) -> float:
        """Compute energy of every layer plus a dataflow result's data movement of the mapped layers (pJ)."""
        return self.totals.energy_pj + movement.memory_total_pj

    @property
    def dataflow_total_pj(self) -> float | None:
        """With the zigzag engine: compute plus data movement (pJ); None with the arithmetic engine."""
        return None if self.dataflow is None else self.total_with(self.dataflow.result)

    @property
    def widths(self) -> str:
        """The operand/accumulator widths the report used, in words (every report states them)."""
        pairs = sorted({(le.precision, le.accumulator) for le in self.layers if le.accumulator})
        if self.pricing == "papers":
            return "papers' convention: every operation at its operand precision (" + \
                ", ".join(p for p, _ in pairs) + ")"
        return "operands / accumulator: " + ", ".join(f"{p} / {a}" for p, a in pairs)

    @property
    def declared(self) -> list[str]:
        """Layers priced at the precision they declare (``energy_precision``), not the global one."""
        return [le.name for le in self.layers if le.precision_from == "declared"]

    def share(self, layer: LayerEnergy) -> float:
        """The layer's fraction of the total compute energy."""
        return layer.energy_pj / self.totals.energy_pj if self.totals.energy_pj else 0.0


def _layer_precision(name: str, declared: str | None, default: str,
                     per_layer: Mapping[str, str] | None) -> tuple[str, str, str | None]:
    """(precision, where it came from, the pattern that matched): an explicit pattern wins, then what the
    layer declares, then the global precision."""
    for pattern, p in (per_layer or {}).items():
        if fnmatch.fnmatchcase(name, pattern):
            return p, "pattern", pattern
    if declared is not None:
        return declared, "declared", None
    return default, "global", None


def accumulator_for(precision: str, *, pricing: str = "hardware", accumulator: str | None = None) -> str:
    """The precision accumulations are priced at for operands of ``precision``.

    >>> accumulator_for("int8"), accumulator_for("bf16"), accumulator_for("int8", pricing="papers")
    ('int32', 'fp32', 'int8')
    """
    if pricing not in PRICINGS:
        raise AdderconvError(f"unknown pricing convention {pricing!r}; choose one of {', '.join(PRICINGS)}")
    if pricing == "papers":
        if accumulator is not None:
            raise AdderconvError("the papers' convention prices accumulations at the operand precision; "
                                 "an explicit accumulator contradicts it")
        return precision
    if accumulator is not None:
        if accumulator not in PRECISIONS:
            raise AdderconvError(f"unknown accumulator precision {accumulator!r}; choose one of "
                                 f"{', '.join(PRECISIONS)}")
        return accumulator
    return ACCUMULATOR[precision]


def check_widths(table: PriceTable, precision: str, *, pricing: str = "hardware",
                 accumulator: str | None = None) -> str:
    """The accumulator of ``precision`` operands, once the price list is known to price both widths."""
    table.entry(precision, "add")                   # a precision the table lacks fails here, clearly
    acc = accumulator_for(precision, pricing=pricing, accumulator=accumulator)
    if acc not in table.compute:
        raise AdderconvError(f"price list {table.name!r} has no precision {acc!r}, the accumulator of {precision} "
                             f"operands; add it, or choose another accumulator or the papers' pricing")
    return acc


def _unit(lc: LayerCounts) -> tuple[str, int]:
    """The layer's processing element and its forward accumulations: a SAD unit for adder ops, a MAC otherwise."""
    sad = sum(o.tally["acc"] for o in lc.ops if o.phase == "forward" and o.category == "adder")
    mac = sum(o.tally["acc"] for o in lc.ops if o.phase == "forward" and o.category != "adder")
    if not (sad or mac):
        return "", 0
    return ("SAD", sad) if sad >= mac else ("MAC", mac)


def _unit_area(table: PriceTable, unit: str, p: str, acc: str, estimates: set[str]) -> float | None:
    """Operand operator (a multiplier; for SAD a subtractor, its absolute value a sign flip not priced, as in
    the energy) plus the accumulator's adder."""
    parts = [(p, "mul" if unit == "MAC" else "add"), (acc, "add")]
    entries = [table.area(q, k) for q, k in parts]
    if any(e is None for e in entries):
        return None
    for (q, k), e in zip(parts, entries):
        if e.estimate:
            estimates.add(f"{q} {k} area: {e.source}")
    return sum(e.value for e in entries)


def _modules(counts: ModelCounts, layers: list[LayerEnergy]) -> tuple[ModuleEnergy, ...]:
    """The module tree of the counts with each module's energy: one roll-up of the layers' energies, in the same
    order (the layers, then modules that own parameters only) as the counts' own views."""
    tallies, macs, params = counts.by_module(), counts.macs_by_module(), counts.params_by_module()
    energy = roll_up([*((le.name, le.energy_pj) for le in layers), *((p, 0.0) for p in counts.parameters)], 0.0)
    types = {lc.name: lc.type for lc in counts.layers}
    return tuple(ModuleEnergy(name, types.get(name, ""), name.count(".") + 1 if name else 0, tallies[name],
                              macs[name], params[name], energy[name]) for name in tallies)


def price(counts: ModelCounts, *, precision: str = "fp32", table: PriceTable | None = None,
          layer_precision: Mapping[str, str] | None = None, memory: str | None = None,
          model: str = "model", input_shape: tuple[int, ...] | None = None, pricing: str = "hardware",
          accumulator: str | None = None) -> EnergyReport:
    """Turn counts into an :class:`EnergyReport` at operand ``precision`` (per-layer overrides by glob pattern),
    accumulations at each layer's accumulator (``pricing``, ``accumulator``: see :func:`accumulator_for`)."""
    table = table or load_table()
    declared = {lc.name: lc.precision for lc in counts.layers if lc.precision is not None}
    for p in {precision, *(layer_precision or {}).values(), *declared.values()}:
        if p not in PRECISIONS:
            who = [n for n, d in declared.items() if d == p]
            raise AdderconvError(f"unknown precision {p!r}{f' (declared by layer {who[0]!r})' if who else ''}; "
                                 f"choose one of {', '.join(PRECISIONS)}")
        check_widths(table, p, pricing=pricing, accumulator=accumulator)
    mem_pj = table.memory_price(memory) if memory else 0.0
    layers, by_kind, unpriced, estimates = [], {}, {}, set()
    matched: set[str] = set()
    units: dict[tuple[str, str, str], list] = {}
    for lc in counts.layers:
        p, source, pattern = _layer_precision(lc.name, lc.precision, precision, layer_precision)
        if pattern is not None:
            matched.add(pattern)
        acc = accumulator_for(p, pricing=pricing, accumulator=accumulator)
        tally, energy = lc.tally, 0.0
        for kind, n in tally.items():
            at = acc if kind == "acc" else p
            e = table.entry(at, kind)
            if e is None:
                unpriced[kind] = unpriced.get(kind, 0) + n
                continue
            if e.estimate:
                estimates.add(f"{at} {kind}: {e.source}")
            pj = n * e.pj * table.scale
            energy += pj
            c, s = by_kind.get(kind, (0, 0.0))
            by_kind[kind] = (c + n, s + pj)
        words = (lc.weights + lc.act_in + lc.act_out) * BYTES_PER_ELEMENT[p] * 8 / table.word_bits
        unit, macs = _unit(lc)
        um2 = _unit_area(table, unit, p, acc, estimates) if unit else None
        if unit:
            u = units.setdefault((unit, p, acc), [um2, 0, 0])
            u[1], u[2] = u[1] + macs, u[2] + 1
        layers.append(LayerEnergy(lc.name, lc.type, p, tally, energy, words * mem_pj, dict(lc.unsupported),
                                  source, lc.by_phase() if counts.training else {}, acc, unit, um2))
    unmatched = [pat for pat in (layer_precision or {}) if pat not in matched]
    if unmatched:   # a typo would price every layer at the global precision without a word: refuse
        names = ", ".join(repr(lc.name) for lc in counts.layers[:5] if lc.name)
        raise AdderconvError(f"layer-precision pattern {unmatched[0]!r} matches no layer (layers are named like "
                             f"{names}{', ...' if len(counts.layers) > 5 else ''})")
    for kind in unpriced:
        by_kind.setdefault(kind, (unpriced[kind], 0.0))
    totals = Totals(counts.total, sum(le.energy_pj for le in layers), sum(le.memory_pj for le in layers),
                    dict(sorted(unpriced.items())))
    modules = _modules(counts, layers)
    order = {k: i for i, k in enumerate(KINDS)}
    return EnergyReport(model=model, input_shape=input_shape, precision=precision, table=table.name,
                        memory=memory, layers=layers, totals=totals,
                        by_kind=dict(sorted(by_kind.items(), key=lambda kv: order[kv[0]])),
                        by_category=counts.by_category(), unsupported=counts.unsupported,
                        ignored=dict(counts.ignored), estimates=sorted(estimates), frontend=counts.frontend,
                        capture=counts.capture, training=counts.training, optimizer=counts.optimizer,
                        by_phase=counts.by_phase() if counts.training else {}, pricing=pricing,
                        accumulator=accumulator, modules=modules, trainable_params=counts.trainable,
                        units=tuple(sorted((Unit(k[0], k[1], k[2], *v) for k, v in units.items()),
                                           key=lambda u: (-u.macs, u.label))))
