"""Energy is a price list applied to counts: compute energy per layer, optional memory energy, totals.

Compute energy = sum over kinds of count x price(precision, kind). Kinds the table does not price (e.g.
``exp``) are reported as unpriced, never silently priced at zero. Memory energy (optional, reported
separately) follows a simple stated model: every leaf layer reads its weights and its input activations
once and writes its outputs once, at the chosen memory level, packed into words of the table's width.

>>> from .counts import LayerCounts, ModelCounts, OpCount, Tally
>>> op = OpCount("aten::_convolution", "conv", Tally(mul=10, add=10))
>>> counts = ModelCounts([LayerCounts("conv", "Conv2d", [op])])
>>> price(counts, precision="fp32").totals.energy_pj
46.0
"""
from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field

from adderconv.errors import AdderconvError

from .counts import KINDS, ModelCounts, Tally
from .tables import BYTES_PER_ELEMENT, PRECISIONS, PriceTable, load_table

__all__ = ["LayerEnergy", "Totals", "EnergyReport", "price", "CONVENTIONS"]

CONVENTIONS: tuple[str, ...] = (
    "conv/linear/matmul: one multiply-accumulate = 1 mul + 1 add; a bias is 1 add per output",
    "adder layer: |x - w| and the accumulation = 2 add per MAC, 0 mul (AdderNet's convention)",
    "BatchNorm (eval) is counted, not assumed folded: 1 mul + 1 add per element (after an adder layer it "
    "cannot be folded)",
    "ReLU/max-pool are comparisons (cmp), priced as an add; transcendental functions are their own kinds",
    "views, copies, concatenation, dropout (eval) and abs/neg are not arithmetic and are not counted",
)


class _MulAdd:
    """``.mul`` and ``.add`` read from ``.counts`` (the two kinds every report leads with)."""

    counts: Tally

    @property
    def mul(self) -> int:
        return self.counts["mul"]

    @property
    def add(self) -> int:
        return self.counts["add"]


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


def price(counts: ModelCounts, *, precision: str = "fp32", table: PriceTable | None = None,
          layer_precision: Mapping[str, str] | None = None, memory: str | None = None,
          model: str = "model", input_shape: tuple[int, ...] | None = None) -> EnergyReport:
    """Turn counts into an :class:`EnergyReport` at ``precision`` (per-layer overrides by glob pattern)."""
    table = table or load_table()
    declared = {lc.name: lc.precision for lc in counts.layers if lc.precision is not None}
    for p in {precision, *(layer_precision or {}).values(), *declared.values()}:
        if p not in PRECISIONS:
            who = [n for n, d in declared.items() if d == p]
            raise AdderconvError(f"unknown precision {p!r}{f' (declared by layer {who[0]!r})' if who else ''}; "
                                 f"choose one of {', '.join(PRECISIONS)}")
        table.entry(p, "add")                       # a precision the table lacks fails here, clearly
    mem_pj = table.memory_price(memory) if memory else 0.0
    layers, by_kind, unpriced, estimates = [], {}, {}, set()
    matched: set[str] = set()
    for lc in counts.layers:
        p, source, pattern = _layer_precision(lc.name, lc.precision, precision, layer_precision)
        if pattern is not None:
            matched.add(pattern)
        tally, energy = lc.tally, 0.0
        for kind, n in tally.items():
            e = table.entry(p, kind)
            if e is None:
                unpriced[kind] = unpriced.get(kind, 0) + n
                continue
            if e.estimate:
                estimates.add(f"{p} {kind}: {e.source}")
            pj = n * e.pj * table.scale
            energy += pj
            c, s = by_kind.get(kind, (0, 0.0))
            by_kind[kind] = (c + n, s + pj)
        words = (lc.weights + lc.act_in + lc.act_out) * BYTES_PER_ELEMENT[p] * 8 / table.word_bits
        layers.append(LayerEnergy(lc.name, lc.type, p, tally, energy, words * mem_pj, dict(lc.unsupported),
                                  source, lc.by_phase() if counts.training else {}))
    unmatched = [pat for pat in (layer_precision or {}) if pat not in matched]
    if unmatched:   # a typo would price every layer at the global precision without a word: refuse
        names = ", ".join(repr(lc.name) for lc in counts.layers[:5] if lc.name)
        raise AdderconvError(f"layer-precision pattern {unmatched[0]!r} matches no layer (layers are named like "
                             f"{names}{', ...' if len(counts.layers) > 5 else ''})")
    for kind in unpriced:
        by_kind.setdefault(kind, (unpriced[kind], 0.0))
    totals = Totals(counts.total, sum(le.energy_pj for le in layers), sum(le.memory_pj for le in layers),
                    dict(sorted(unpriced.items())))
    order = {k: i for i, k in enumerate(KINDS)}
    return EnergyReport(model=model, input_shape=input_shape, precision=precision, table=table.name,
                        memory=memory, layers=layers, totals=totals,
                        by_kind=dict(sorted(by_kind.items(), key=lambda kv: order[kv[0]])),
                        by_category=counts.by_category(), unsupported=counts.unsupported,
                        ignored=dict(counts.ignored), estimates=sorted(estimates), frontend=counts.frontend,
                        capture=counts.capture, training=counts.training, optimizer=counts.optimizer,
                        by_phase=counts.by_phase() if counts.training else {})
