"""Machine views of a report: versioned, byte-for-byte deterministic JSON, and Markdown for PR comments.

>>> from .api import analyze
>>> text = to_json(analyze("lenet5_bn"))
>>> json.loads(text)["schema"]
'adderconv.energy/2'
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from adderconv.errors import AdderconvError

from .counts import KINDS
from .energy import EnergyReport
from .render import fmt_count, fmt_energy

if TYPE_CHECKING:                       # gate imports this module (SCHEMA)
    from .gate import GateResult

__all__ = ["SCHEMA", "SCHEMAS", "to_dict", "to_json", "to_markdown"]

#: /2 adds how the ops were captured, training steps (phases per layer and in total, the optimizer) and where
#: each layer's precision came from; the gate reads /1 and /2.
SCHEMA = "adderconv.energy/2"
SCHEMAS = ("adderconv.energy/1", SCHEMA)


def _pj(x: float) -> float:
    return float(f"{x:.6f}")   # fixed precision: float noise never changes the bytes


def to_dict(r: EnergyReport) -> dict[str, Any]:
    """The report as plain data (schema ``adderconv.energy/2``)."""
    def kinds(t) -> dict[str, int]:
        return {k: t[k] for k in KINDS}

    return {
        "schema": SCHEMA,
        "model": r.model,
        "input_shape": list(r.input_shape) if r.input_shape else None,
        "frontend": r.frontend,
        "precision": r.precision,
        "table": r.table,
        "memory": r.memory,
        "totals": {**kinds(r.totals.counts), "energy_pj": _pj(r.totals.energy_pj),
                   "memory_pj": _pj(r.totals.memory_pj), "unpriced": dict(r.totals.unpriced)},
        "by_kind": {k: {"count": n, "energy_pj": _pj(pj)} for k, (n, pj) in r.by_kind.items()},
        "by_class": {c: kinds(t) for c, t in r.by_category.items()},
        "layers": [{"name": le.name, "type": le.type, "precision": le.precision, **kinds(le.counts),
                    "energy_pj": _pj(le.energy_pj), "memory_pj": _pj(le.memory_pj),
                    "unsupported": dict(sorted(le.unsupported.items())), "precision_from": le.precision_from,
                    **({"phases": {ph: kinds(t) for ph, t in le.phases.items()}} if r.training else {})}
                   for le in r.layers],
        "capture": r.capture,
        "training": r.training,
        "optimizer": r.optimizer,
        "by_phase": {ph: kinds(t) for ph, t in r.by_phase.items()},
        "unsupported": dict(r.unsupported),
        "ignored": dict(r.ignored),
        "conventions": list(r.conventions),
        "estimated_prices": list(r.estimates),
        "source_notes": list(r.source_notes),
    }


def to_json(r: EnergyReport) -> str:
    """Deterministic JSON; a non-finite number (NaN, Infinity: invalid JSON no gate can compare) is refused."""
    try:
        return json.dumps(to_dict(r), sort_keys=True, indent=2, ensure_ascii=True, allow_nan=False) + "\n"
    except ValueError:
        raise AdderconvError(f"report for {r.model}: a non-finite number (NaN or infinity) in the energies; "
                             f"check the price list and --energy-scale") from None


def to_markdown(r: EnergyReport, *, compare: EnergyReport | None = None, top: int = 10,
                baseline: dict[str, Any] | None = None, gate: GateResult | None = None) -> str:
    """A compact Markdown report (totals, optional comparison, a Mermaid chart, top layers, notes) for a PR
    comment; with ``gate`` (the check against ``baseline``) a "what grew" section comes first."""
    from .mermaid import energy_chart, what_grew
    shape = "x".join(map(str, r.input_shape)) if r.input_shape else "from file"
    out = [f"### Energy: `{r.model}` ({shape}, {r.precision}, {r.table})", "",
           "| kind | count | energy |", "|---|---:|---:|"]
    for kind, (n, pj) in r.by_kind.items():
        out.append(f"| {kind} | {fmt_count(n)} | {'unpriced' if kind in r.totals.unpriced else fmt_energy(pj)} |")
    out.append(f"| **compute** | | **{fmt_energy(r.totals.energy_pj)}** |")
    if r.memory:
        out.append(f"| memory ({r.memory}) | | {fmt_energy(r.totals.memory_pj)} |")
    if compare is not None:
        out += ["", f"| | `{compare.model}` | `{r.model}` | ratio |", "|---|---:|---:|---:|"]
        rows = [(k, compare.totals.counts[k], r.totals.counts[k]) for k in KINDS
                if compare.totals.counts[k] or r.totals.counts[k]]
        for k, a, b in rows:
            out.append(f"| {k} | {fmt_count(a)} | {fmt_count(b)} | {b / a:.3f}x |" if a else
                       f"| {k} | 0 | {fmt_count(b)} | new |")
        a, b = compare.totals.energy_pj, r.totals.energy_pj
        out.append(f"| energy | {fmt_energy(a)} | {fmt_energy(b)} | {b / a:.3f}x |" if a else
                   f"| energy | 0 | {fmt_energy(b)} | new |")
    chart = energy_chart(r, compare=compare, baseline=baseline)
    out += ["", chart.rstrip("\n")] if chart else []
    layers = sorted(r.layers, key=lambda le: -le.energy_pj)[:top]
    out += ["", "| layer | type | mul | add | energy |", "|---|---|---:|---:|---:|"]
    out += [f"| `{le.name or '(model)'}` | {le.type} | {fmt_count(le.mul)} | {fmt_count(le.add)} | "
            f"{fmt_energy(le.energy_pj)} |" for le in layers]
    out += ["", *(f"- {c}" for c in r.conventions)]
    if r.unsupported:
        out.append("- **not counted (no handle):** " + ", ".join(f"`{k}` x{n}" for k, n in r.unsupported.items()))
    return (what_grew(gate) + "\n" if gate is not None else "") + "\n".join(out) + "\n"
