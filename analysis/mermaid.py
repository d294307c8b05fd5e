"""Markdown pieces GitHub renders natively: a Mermaid ``xychart-beta`` of the top layers, and "what grew".

Views only. The chart shows compute energy of the ``top`` layers (most energy first, drawn in execution
order). Against another model (``--compare``) or a baseline JSON (``--baseline``) the bars are the model
before and the line the model now, on one axis; Mermaid's xychart has no legend, so the title says which is
which (checked with Mermaid 11 in headless Chromium: these blocks parse and render). The "what grew"
section formats a :class:`~.gate.GateResult`: every total with its change, then the layers whose energy
grew beyond the limit.

>>> from .api import analyze
>>> print(energy_chart(analyze("lenet5_bn"), top=2))
```mermaid
xychart-beta horizontal
    title "Compute energy per layer (uJ), top 2 layers of lenet5_bn"
    x-axis ["0", "4"]
    y-axis "uJ" 0 --> 1.2
    bar [0.541, 1.104]
```
<BLANKLINE>
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from adderconv import untrusted

from .energy import EnergyReport
from .gate import GateResult
from .layer_views import align, energy_unit, layer_label
from .render import fmt_count, fmt_energy

__all__ = ["xychart", "energy_chart", "what_grew"]


def _quote(text: str) -> str:
    """A quoted label; layer and model names come from files (adderconv.untrusted: no line breaks, directives)."""
    return untrusted.mermaid(text)


def _number(v: float) -> str:
    if not math.isfinite(v):
        raise ValueError(f"a chart value must be finite, got {v!r}")
    text = f"{v:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def xychart(title: str, labels: Sequence[str], series: Sequence[tuple[str, Sequence[float]]],
            y_title: str = "", y_max: float | None = None) -> str:
    """A fenced ``mermaid`` block, drawn horizontally (long layer names stay readable): one categorical
    x-axis, ``series`` as ``("bar" | "line", values)``; with ``y_max`` the value axis runs from 0 to it
    (Mermaid's own range starts at the smallest value)."""
    for kind, values in series:
        if kind not in ("bar", "line") or len(values) != len(labels):
            raise ValueError(f"a series is ('bar' | 'line', one value per label), got {kind!r} with "
                             f"{len(values)} values for {len(labels)} labels")
    lines = ["```mermaid", "xychart-beta horizontal", f"    title {_quote(title)}",
             "    x-axis [" + ", ".join(_quote(x) for x in labels) + "]"]
    if y_title or y_max is not None:
        span = f" 0 --> {_number(y_max)}" if y_max is not None else ""
        lines.append(f"    y-axis {_quote(y_title)}{span}")
    lines += [f"    {kind} [" + ", ".join(_number(v) for v in values) + "]" for kind, values in series]
    return "\n".join(lines + ["```"]) + "\n"


def _ceiling(v: float) -> float:
    """A round axis end a little above ``v``: 10.85 -> 12, 0.54 -> 0.6."""
    if v <= 0:
        return 1.0
    step = 10 ** math.floor(math.log10(v)) / 5
    return math.ceil(v * 1.05 / step) * step


def _top(rows: list[tuple[str, float, float | None]], top: int) -> list[tuple[str, float, float | None]]:
    """The ``top`` rows by their larger energy, kept in execution order."""
    ranked = sorted(range(len(rows)), key=lambda i: -max(rows[i][1], rows[i][2] or 0.0))
    keep = {i for i in ranked[:top] if max(rows[i][1], rows[i][2] or 0.0) > 0}
    return [row for i, row in enumerate(rows) if i in keep]


def energy_chart(report: EnergyReport, *, compare: EnergyReport | None = None,
                 baseline: Mapping[str, Any] | None = None, top: int = 8) -> str:
    """Compute energy of the top layers; before (bars) vs now (line) with ``compare`` or a ``baseline`` dict.

    Returns an empty string when no layer has energy (nothing to draw).
    """
    rows: list[tuple[str, float, float | None]]
    if compare is not None:
        before_name = compare.model
        rows = [(layer_label(now or was), now.energy_pj if now else 0.0, was.energy_pj if was else 0.0)
                for now, was in align(report.layers, compare.layers)]
    elif baseline is not None:
        before_name = "baseline"
        base = {le.get("name", ""): float(le.get("energy_pj", 0.0)) for le in baseline.get("layers", [])}
        rows = [(layer_label(le), le.energy_pj, base.get(le.name, 0.0)) for le in report.layers]
    else:
        rows = [(layer_label(le), le.energy_pj, None) for le in report.layers]
    rows = _top(rows, top)
    if not rows:
        return ""
    div, unit = energy_unit(max(max(now, was or 0.0) for _, now, was in rows))
    labels = [name for name, _, _ in rows]
    y_max = _ceiling(max(max(now, was or 0.0) for _, now, was in rows) / div)
    if compare is None and baseline is None:
        return xychart(f"Compute energy per layer ({unit}), top {len(rows)} layers of {report.model}", labels,
                       [("bar", [now / div for _, now, _ in rows])], unit, y_max)
    title = (f"Compute energy per layer ({unit}), top {len(rows)}: bars {before_name}, line {report.model}")
    return xychart(title, labels, [("bar", [(was or 0.0) / div for _, _, was in rows]),
                                   ("line", [now / div for _, now, _ in rows])], unit, y_max)


def _fmt(metric: str, v: float) -> str:
    return fmt_energy(v) if metric.endswith("_pj") else fmt_count(v)


def _change(baseline: float, current: float) -> str:
    return f"{(current - baseline) / baseline:+.2%}" if baseline else ("new" if current else "-")


def what_grew(result: GateResult, *, layers: int = 10) -> str:
    """The "what grew" section for the top of a PR comment: the verdict, the totals, the grown layers."""
    limit = f"+{result.max_increase:.2%}"
    if result.ok:
        verdict = f"**No regression**: every total is within {limit} of the baseline."
    else:
        grew = ", ".join(f"{untrusted.code(r.metric)} {_change(r.baseline, r.current)}" for r in result.regressions)
        verdict = f"**Regression**: {grew} (limit {limit})."
    out = ["### What grew against the baseline", "", verdict, "",
           "| | total | baseline | now | change |", "|---|---|---:|---:|---:|"]
    bad = set(map(id, result.regressions))
    out += [f"| {'**grew**' if id(r) in bad else 'ok'} | {untrusted.code(r.metric)} | {_fmt(r.metric, r.baseline)} | "
            f"{_fmt(r.metric, r.current)} | {_change(r.baseline, r.current)} |" for r in result.rows]
    if result.grown_layers:
        shown = result.grown_layers[:layers]
        out += ["", f"Layers whose energy grew beyond {limit} ({len(result.grown_layers)}, largest growth first"
                    + (f", {len(shown)} shown" if len(shown) < len(result.grown_layers) else "") + "):", "",
                "| layer | baseline | now | change |", "|---|---:|---:|---:|"]
        out += [f"| {untrusted.code(r.scope)} | {fmt_energy(r.baseline)} | {fmt_energy(r.current)} | "
                f"{_change(r.baseline, r.current)} |" for r in shown]
    else:
        out += ["", f"No layer's energy grew beyond {limit}."]
    return "\n".join(out) + "\n"
