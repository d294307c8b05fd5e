"""Views of a conversion for people: the layer table and the before/after savings (rich; HTML on request).

Compute code never prints: :mod:`.command` orchestrates, these only format what the report and the analysis say.
"""
from __future__ import annotations

import torch
from rich.console import Console
from rich.table import Table

from adderconv.io import write_text
from adderconv.untrusted import console as esc

from .report import REPORT_ATTR, ConversionReport, conversion_report, kept_energy_hint

__all__ = ["render_conversion", "render_savings"]


def render_conversion(report: ConversionReport, console: Console) -> None:
    """A rich table: each multiplicative layer, what it became and why."""
    t = Table(title=f"converted {len(report.converted)} of {len(report.layers)} multiplicative layers"
                    + ("" if report.traced else " (not traced)"))
    for col in ("layer", "type", "now", "notes"):
        t.add_column(col)
    for r in report.layers:
        extra = [s for s, on in (("+BN", r.bn_inserted), ("+shortcut", r.shortcut), ("+power", r.power)) if on]
        if r.aliases:
            extra.append(f"shared with {', '.join(r.aliases)}")
        t.add_row(esc(r.name), esc(r.type_name), esc(r.new_type or "-"), esc(" ".join([r.reason, *extra])))
    console.print(t)   # layer names and types can come from a file (a trusted pickle's modules): never markup
    for w in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {esc(w)}", highlight=False)


def render_savings(before, after, shape, precision: str, console: Console, *, html: str | None = None) -> None:
    """Before/after multiplications, additions and energy, from the analysis package (and as HTML to ``html``)."""
    import dataclasses

    from adderconv.analysis import analyze, render_comparison
    reports = [dataclasses.replace(analyze(m, shape, precision=precision), model=label)
               for m, label in ((before, "original"), (after, "converted"))]
    where = f" (input {'x'.join(map(str, shape))})" if shape else ""
    render_comparison(*reports, console, title=f"before vs after conversion{where}")
    if isinstance(after, torch.nn.Module) and hasattr(after, REPORT_ATTR):
        report = conversion_report(after)
        energy = {}
        for le in reports[1].layers:
            energy[le.name] = energy.get(le.name, 0.0) + le.energy_pj
        if hint := kept_energy_hint(report, energy):
            console.print(f"note: {esc(hint)}", highlight=False)
    if html:
        from adderconv.analysis.html_report import to_html
        write_text(html, to_html(reports[1], compare=reports[0], title=f"before vs after conversion{where}"))
        console.print(f"wrote {esc(html)} (before/after energy report)")
