"""Machine views of a report: versioned, byte-for-byte deterministic JSON, and Markdown for PR comments.

>>> from .api import analyze
>>> text = to_json(analyze("lenet5_bn"))
>>> data = json.loads(text)
>>> data["schema"], data["params"] == data["modules"][0]["params"], data["modules"][0]["name"]
('adderconv.energy/4', True, '')
"""
from __future__ import annotations

import json
from typing import Any

from adderconv.errors import AdderconvError
from adderconv.untrusted import code, markdown

from .counts import KINDS
from .energy import EnergyReport
from .gate import GateResult
from .mermaid import energy_chart, what_grew
from .render import fmt_area, fmt_count, fmt_energy, fmt_params
from .schema import SCHEMA, SCHEMAS

__all__ = ["SCHEMA", "SCHEMAS", "to_dict", "to_json", "to_markdown"]


def _pj(x: float) -> float:
    return float(f"{x:.6f}")   # fixed precision: float noise never changes the bytes


def _flow_layers(res) -> list[dict[str, Any]]:
    return [{"name": ld.name, "op": ld.op, "macs": ld.macs, "compute_pj": _pj(ld.compute_pj),
             "engine_compute_pj": _pj(ld.engine_compute_pj),
             "memory_pj": {lv: _pj(v) for lv, v in ld.memory_pj.items()},
             "latency_cycles": float(ld.latency_cycles), "utilization": round(float(ld.utilization), 6)}
            for ld in res.layers]


def _flow_totals(r: EnergyReport, res) -> dict[str, Any]:
    return {"compute_pj": _pj(res.compute_pj), "memory_pj": {lv: _pj(v) for lv, v in res.memory_pj.items()},
            "data_movement_pj": _pj(res.memory_total_pj), "total_pj": _pj(r.total_with(res)),
            "latency_cycles": float(res.latency_cycles)}


def _dataflow(r: EnergyReport) -> dict[str, Any] | None:
    flow = r.dataflow
    if flow is None:
        return None
    same = flow.same_area
    return {"engine": "zigzag", "accelerator": flow.accelerator, "operand_bits": flow.operand_bits,
            "accumulator_bits": flow.accumulator_bits, **_flow_totals(r, flow.result),
            "layers": _flow_layers(flow.result), "notes": list(flow.notes),
            "same_area": None if same is None else {"array_scale": round(flow.array_scale, 6), **_flow_totals(r, same)}}


def to_dict(r: EnergyReport) -> dict[str, Any]:
    """The report as plain data (schema ``adderconv.energy/4``)."""
    def kinds(t) -> dict[str, int]:
        return {k: t[k] for k in KINDS}

    return {
        "schema": SCHEMA,
        "model": r.model,
        "input_shape": list(r.input_shape) if r.input_shape else None,
        "frontend": r.frontend,
        "precision": r.precision,
        "pricing": r.pricing,
        "accumulator": r.accumulator,
        "widths": r.widths,
        "table": r.table,
        "memory": r.memory,
        "engine": r.engine,
        "accelerator": r.dataflow.accelerator if r.dataflow is not None else None,
        "totals": {**kinds(r.totals.counts), "energy_pj": _pj(r.totals.energy_pj),
                   "memory_pj": _pj(r.totals.memory_pj), "unpriced": dict(r.totals.unpriced)},
        "by_kind": {k: {"count": n, "energy_pj": _pj(pj)} for k, (n, pj) in r.by_kind.items()},
        "by_class": {c: kinds(t) for c, t in r.by_category.items()},
        "layers": [{"name": le.name, "type": le.type, "precision": le.precision, **kinds(le.counts),
                    "energy_pj": _pj(le.energy_pj), "memory_pj": _pj(le.memory_pj),
                    "unsupported": dict(sorted(le.unsupported.items())), "precision_from": le.precision_from,
                    "accumulator": le.accumulator, "unit": le.unit or None, "unit_um2": le.unit_um2,
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
        "units": [{"unit": u.unit, "precision": u.precision, "accumulator": u.accumulator, "um2": u.um2,
                   "macs": u.macs, "layers": u.layers} for u in r.units],
        "dataflow": _dataflow(r),
        "params": r.params,
        "trainable_params": r.trainable_params,
        "macs": r.macs,
        "modules": [{"name": m.name, "type": m.type, "depth": m.depth, **kinds(m.counts), "macs": m.macs,
                     "params": m.params, "energy_pj": _pj(m.energy_pj)} for m in r.modules],
    }


def to_json(r: EnergyReport) -> str:
    """Deterministic JSON; a non-finite number (NaN, Infinity: invalid JSON no gate can compare) is refused."""
    try:
        return json.dumps(to_dict(r), sort_keys=True, indent=2, ensure_ascii=True, allow_nan=False) + "\n"
    except ValueError:
        raise AdderconvError(f"report for {r.model}: a non-finite number (NaN or infinity) in the energies; "
                             f"check the price list and `energy_scale`") from None


#: How deep the Markdown module table goes (a PR comment stays short; the JSON and HTML hold every module).
MARKDOWN_DEPTH = 2


def _modules_markdown(r: EnergyReport) -> list[str]:
    rows = [m for m in r.modules if m.depth <= MARKDOWN_DEPTH]
    if not rows:
        return []
    return ["", f"| module (depth <= {MARKDOWN_DEPTH}, sums of everything below) | params | MACs | mul / add | "
                "energy |", "|---|---:|---:|---:|---:|",
            *(f"| {'&nbsp;&nbsp;' * m.depth}{code(m.name or '(model)')} | {m.params:,} | {fmt_count(m.macs)} | "
              f"{fmt_count(m.mul)} / {fmt_count(m.add)} | {fmt_energy(m.energy_pj)} |" for m in rows)]


def to_markdown(r: EnergyReport, *, compare: EnergyReport | None = None, top: int = 10,
                baseline: dict[str, Any] | None = None, gate: GateResult | None = None) -> str:
    """A compact Markdown report (totals, optional comparison, a Mermaid chart, top layers, the module tree to
    :data:`MARKDOWN_DEPTH`, notes) for a PR comment; with ``gate`` (the check against ``baseline``) a "what grew"
    section comes first."""
    shape = "x".join(map(str, r.input_shape)) if r.input_shape else "from file"
    out = [f"### Energy: {code(r.model)} ({shape}, {r.precision}, {markdown(r.table)})", "",
           f"_{r.widths}; engine {r.engine}_", "", f"{fmt_params(r)}, {fmt_count(r.macs)} MACs", "",
           "| kind | count | energy |", "|---|---:|---:|"]
    for kind, (n, pj) in r.by_kind.items():
        out.append(f"| {kind} | {fmt_count(n)} | {'unpriced' if kind in r.totals.unpriced else fmt_energy(pj)} |")
    out.append(f"| **compute** | | **{fmt_energy(r.totals.energy_pj)}** |")
    if r.memory:
        out.append(f"| memory ({r.memory}) | | {fmt_energy(r.totals.memory_pj)} |")
    if compare is not None:
        out += ["", f"| | {code(compare.model)} | {code(r.model)} | ratio |", "|---|---:|---:|---:|"]
        rows = [(k, compare.totals.counts[k], r.totals.counts[k]) for k in KINDS
                if compare.totals.counts[k] or r.totals.counts[k]]
        for k, a, b in rows:
            out.append(f"| {k} | {fmt_count(a)} | {fmt_count(b)} | {b / a:.3f}x |" if a else
                       f"| {k} | 0 | {fmt_count(b)} | new |")
        pairs = [("energy", compare.totals.energy_pj, r.totals.energy_pj, fmt_energy)]
        if compare.dataflow is not None and r.dataflow is not None:
            pairs += [(f"total energy ({r.dataflow.accelerator})", compare.dataflow_total_pj, r.dataflow_total_pj,
                       fmt_energy),
                      ("latency (cycles)", compare.dataflow.result.latency_cycles, r.dataflow.result.latency_cycles,
                       fmt_count)]
        if compare.main_unit and r.main_unit and compare.main_unit.um2 and r.main_unit.um2:
            pairs.append(("PE area", compare.main_unit.um2, r.main_unit.um2, fmt_area))
        pairs += [("MACs", compare.macs, r.macs, fmt_count), ("parameters", compare.params, r.params, fmt_count)]
        for label, a, b, fmt in pairs:
            out.append(f"| {label} | {fmt(a)} | {fmt(b)} | {b / a:.3f}x |" if a else
                       f"| {label} | 0 | {fmt(b)} | new |")
    chart = energy_chart(r, compare=compare, baseline=baseline)
    out += ["", chart.rstrip("\n")] if chart else []
    layers = sorted(r.layers, key=lambda le: -le.energy_pj)[:top]
    out += ["", "| layer | type | mul | add | energy |", "|---|---|---:|---:|---:|"]
    out += [f"| {code(le.name or '(model)')} | {markdown(le.type)} | {fmt_count(le.mul)} | {fmt_count(le.add)} | "
            f"{fmt_energy(le.energy_pj)} |" for le in layers]
    out += _modules_markdown(r)
    if r.dataflow is not None:
        res = r.dataflow.result
        levels = list(res.memory_pj)
        out += ["", f"Dataflow on {code(r.dataflow.accelerator)} (ZigZag): compute {fmt_energy(r.totals.energy_pj)}, "
                    f"data movement {fmt_energy(res.memory_total_pj)}, total "
                    f"**{fmt_energy(r.dataflow_total_pj)}**, {fmt_count(res.latency_cycles)} cycles", "",
                "| level | energy |", "|---|---:|",
                *(f"| {markdown(lv)} | {fmt_energy(res.memory_pj[lv])} |" for lv in levels)]
    out += ["", *(f"- {c}" for c in r.conventions)]
    if r.unsupported:
        out.append("- **not counted (no handle):** " + ", ".join(f"{code(k)} x{n}" for k, n in r.unsupported.items()))
    return (what_grew(gate) + "\n" if gate is not None else "") + "\n".join(out) + "\n"
