"""View helpers shared by the chart renderers (HTML, Mermaid): layers aligned by name, energy split by kind.

Nothing here counts or prices. The split of one layer's energy by kind is read off the report: each kind's
unit energy is the report's own ``by_kind`` energy divided by its count, and a layer's segments are then
scaled so they add up to exactly the layer's ``energy_pj``. With one precision for the whole model that
split is exact; with per-layer precisions it is the report-wide average per kind (bar heights stay exact).

>>> from .api import analyze
>>> r = analyze("lenet5_bn")
>>> split = kind_split(r, r.layers[0])
>>> round(sum(split.values()), 6) == round(r.layers[0].energy_pj, 6)
True
>>> [a.name for a, b in align(r.layers[:2], r.layers[:2])]
['0', '1']
"""
from __future__ import annotations

import difflib
from collections.abc import Sequence

from .energy import EnergyReport, LayerEnergy

__all__ = ["GROUPS", "align", "kind_split", "class_split", "mixed_precision", "energy_unit", "layer_label"]

#: How charts group kinds: multiplications, operand additions, accumulations (priced at the accumulator's width),
#: comparisons, and the rest together.
GROUPS: tuple[str, ...] = ("mul", "add", "acc", "cmp", "other")


def layer_label(layer: LayerEnergy) -> str:
    """The name a view shows for a layer (the whole model's own ops have the empty name)."""
    return layer.name or "(model)"


def align(a: Sequence[LayerEnergy], b: Sequence[LayerEnergy]) -> list[tuple[LayerEnergy | None, LayerEnergy | None]]:
    """Pair two layer lists by name, keeping execution order; a layer only one side has pairs with None.

    The merge follows the longest common subsequence of names (difflib), so a layer inserted by conversion
    (e.g. a BatchNorm after an adder layer) lands where it runs, not at the end.
    """
    names_a, names_b = [le.name for le in a], [le.name for le in b]
    out: list[tuple[LayerEnergy | None, LayerEnergy | None]] = []
    matcher = difflib.SequenceMatcher(None, names_a, names_b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            out += [(a[i], b[j]) for i, j in zip(range(i1, i2), range(j1, j2))]
        else:
            out += [(a[i], None) for i in range(i1, i2)]
            out += [(None, b[j]) for j in range(j1, j2)]
    return out


def _unit_energy(report: EnergyReport) -> dict[str, float]:
    return {k: (pj / n if n else 0.0) for k, (n, pj) in report.by_kind.items()}


def kind_split(report: EnergyReport, layer: LayerEnergy) -> dict[str, float]:
    """The layer's compute energy (pJ) split into :data:`GROUPS`; the values add up to ``layer.energy_pj``."""
    unit = _unit_energy(report)
    raw = {g: 0.0 for g in GROUPS}
    for kind, n in layer.counts.items():
        raw[kind if kind in GROUPS else "other"] += n * unit.get(kind, 0.0)
    total = sum(raw.values())
    if not total:
        return {g: 0.0 for g in GROUPS}
    scale = layer.energy_pj / total
    return {g: v * scale for g, v in raw.items()}


def class_split(report: EnergyReport) -> dict[str, dict[str, float]]:
    """Compute energy (pJ) by operator class (``conv``, ``adder``, ``norm``, ...), each split into :data:`GROUPS`.

    Read off ``by_category`` counts at each kind's energy per operation (see the module docstring): exact at
    one precision; the classes always add up to the report's total compute energy.
    """
    unit = _unit_energy(report)
    out: dict[str, dict[str, float]] = {}
    for cat, tally in report.by_category.items():
        acc = out.setdefault(cat, {g: 0.0 for g in GROUPS})
        for kind, n in tally.items():
            acc[kind if kind in GROUPS else "other"] += n * unit.get(kind, 0.0)
    return out


def mixed_precision(report: EnergyReport) -> bool:
    """True when layers run at different precisions (the per-kind split is then an average, see above)."""
    return len({le.precision for le in report.layers}) > 1


def energy_unit(max_pj: float) -> tuple[float, str]:
    """A divisor and unit name that keep ``max_pj`` between 1 and 1000: 2.5e6 -> (1e6, 'uJ')."""
    for div, unit in ((1e12, "J"), (1e9, "mJ"), (1e6, "uJ"), (1e3, "nJ")):
        if abs(max_pj) >= div:
            return div, unit
    return 1.0, "pJ"
