"""The energy report as one self-contained HTML file: totals, charts, what was not counted, every layer.

A view: it formats an :class:`~.energy.EnergyReport` (and optionally the model it is compared with) and
computes nothing new. The file needs no network to be read: the charts are inline SVG (matplotlib, the
``report`` extra), the style sheet and the small table-sorting script are inline, and no element points
at a URL. What was not counted (unsupported operators, unpriced kinds) and what is ignored by design sit
at the top, above the charts. The layer table reads fine without script; with it, a click on a column
header sorts by that column.

>>> from .api import analyze
>>> page = to_html(analyze("lenet5_bn_adder"), compare=analyze("lenet5_bn"))
>>> page.startswith("<!DOCTYPE html>") and "lenet5_bn_adder, compared with lenet5_bn" in page
True
"""
from __future__ import annotations

import html
from collections.abc import Sequence

from adderconv import __version__

from .counts import KINDS, additions
from .energy import EnergyReport, LayerEnergy
from .figures import class_chart, layer_chart, memory_chart, require_matplotlib
from .layer_views import align, class_split, layer_label, mixed_precision
from .render import fmt_area, fmt_count, fmt_energy, trainable_note

__all__ = ["to_html"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2733;margin:0;background:#f5f6f8}
main{max-width:1320px;margin:0 auto;padding:18px 24px 40px}
h1{font-size:22px;margin:4px 0 2px}h2{font-size:16px;margin:22px 0 8px}
.sub{color:#5b6775;margin-bottom:12px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:10px 0}
.card{background:#fff;border:1px solid #dde2e8;border-radius:8px;padding:10px 16px;min-width:150px}
.card b{display:block;font-size:22px}.card span{color:#5b6775;font-size:12px}
.note{border-radius:8px;padding:8px 14px;margin:6px 0;border:1px solid}
.warn{background:#fff4e0;border-color:#f0b35a}.ok{background:#eaf6ee;border-color:#8cc7a0}
.info{background:#eef3f8;border-color:#b9c9da}
.row{display:flex;gap:16px;flex-wrap:wrap;align-items:flex-start}
.panel{background:#fff;border:1px solid #dde2e8;border-radius:8px;padding:10px 14px;overflow-x:auto}
.panel svg{max-width:100%;height:auto}.panel h2{margin-top:2px}
.wide svg{width:100%;height:auto;max-height:460px}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:3px 10px;border-bottom:1px solid #e6e9ee;text-align:left;white-space:nowrap}
td.n,th.n{text-align:right}th{background:#f0f2f5;position:sticky;top:0}
table.sortable th{cursor:pointer}table.sortable th:hover{background:#e2e6eb}
tr.miss td{color:#8a94a0}code{font-size:13px}
details>summary{cursor:pointer;font-weight:600;margin:4px 0}
.caption{color:#5b6775;font-size:12px;margin:4px 0 0}
"""

_SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,i){
    th.addEventListener('click',function(){
      var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows),down=th.dataset.dir!=='down';
      t.querySelectorAll('th').forEach(function(h){delete h.dataset.dir});th.dataset.dir=down?'down':'up';
      rows.sort(function(a,b){
        var x=a.cells[i].dataset.v,y=b.cells[i].dataset.v,num=t.rows[0].cells[i].classList.contains('n');
        if(num&&(x===undefined||y===undefined))return (x===undefined)-(y===undefined);
        if(num){x=parseFloat(x);y=parseFloat(y);return down?y-x:x-y}
        x=a.cells[i].textContent;y=b.cells[i].textContent;return down?y.localeCompare(x):x.localeCompare(y)});
      rows.forEach(function(r){body.appendChild(r)})})})});
"""

_esc = html.escape


def _num(value: float, text: str) -> str:
    return f'<td class="n" data-v="{value:.9g}">{_esc(text)}</td>'


def _ratio(a: float, b: float) -> str:
    return f"{b / a:.3f}x" if a else ("-" if not b else "new")


def _header(r: EnergyReport, compare: EnergyReport | None, title: str | None) -> str:
    shape = "x".join(map(str, r.input_shape)) if r.input_shape else "from file"
    name = title or (f"{r.model}, compared with {compare.model}" if compare else r.model)
    sub = (f"input {shape} &middot; precision {_esc(r.precision)} &middot; prices {_esc(r.table)} &middot; "
           f"front end {_esc(r.frontend)} &middot; adderconv {_esc(__version__)}<br>{_esc(r.widths)}; "
           f"engine {_esc(r.engine)}")
    return f"<h1>Energy report: {_esc(name)}</h1><div class=\"sub\">{sub}</div>"


def _cards(r: EnergyReport, compare: EnergyReport | None) -> str:
    cards = [(fmt_energy(r.totals.energy_pj), f"compute energy, {r.model}"),
             (fmt_count(r.totals.mul), "multiplications"), (fmt_count(r.totals.add), "additions"),
             (fmt_count(r.macs), "MACs (multiply- or |x - w|-accumulates)"),
             (f"{r.params:,}", "parameters" + trainable_note(r))]
    if r.memory:
        cards.append((fmt_energy(r.totals.memory_pj), f"memory energy ({r.memory})"))
    if compare is not None:
        cards.append((_ratio(compare.totals.energy_pj, r.totals.energy_pj), f"compute energy vs {compare.model}"))
        cards.append((fmt_count(compare.totals.mul), f"multiplications in {compare.model}"))
    return '<div class="cards">' + "".join(f"<div class=\"card\"><b>{_esc(v)}</b><span>{_esc(k)}</span></div>"
                                           for v, k in cards) + "</div>"


def _ops(ops: dict[str, int]) -> str:
    return ", ".join(f"<code>{_esc(op)}</code> x{n}" for op, n in ops.items())


def _coverage(reports: Sequence[EnergyReport]) -> str:
    """Unsupported, ignored and unpriced, one line per model: the first thing after the headline numbers."""
    out = []
    for r in reports:
        parts = [f"<b>not counted (no handle):</b> {_ops(r.unsupported)}: their arithmetic is missing from every "
                 "number below" if r.unsupported else "every operator was counted or is zero-arithmetic"]
        if r.ignored:
            parts.append(f"zero-arithmetic, not counted: {_ops(r.ignored)}")
        if r.totals.unpriced:
            kinds = ", ".join(f"{_esc(k)} {fmt_count(n)}" for k, n in r.totals.unpriced.items())
            parts.append(f"<b>unpriced kinds</b> (counted, no price in the table, not in the energy): {kinds}")
        level = "warn" if r.unsupported or r.totals.unpriced else "ok"
        out.append(f'<div class="note {level}"><b>{_esc(r.model)}</b>: ' + "; ".join(parts) + ".</div>")
    return "".join(out)


def _totals(r: EnergyReport) -> str:
    rows = []
    for kind, (n, pj) in r.by_kind.items():
        priced = kind not in r.totals.unpriced
        share = f"{pj / r.totals.energy_pj:.1%}" if r.totals.energy_pj and priced else "-"
        rows.append(f"<tr><td>{_esc(kind)}</td>{_num(n, fmt_count(n))}"
                    f"{_num(pj, fmt_energy(pj) if priced else 'unpriced')}<td class=\"n\">{share}</td></tr>")
    rows.append(f"<tr><td><b>compute</b></td><td></td><td class=\"n\"><b>{fmt_energy(r.totals.energy_pj)}</b>"
                "</td><td></td></tr>")
    if r.memory:
        rows.append(f"<tr><td>memory ({_esc(r.memory)})</td><td></td><td class=\"n\">{fmt_energy(r.totals.memory_pj)}"
                    "</td><td></td></tr>")
    return (f'<div class="panel"><h2>Totals: {_esc(r.model)}</h2><table><thead><tr><th>kind</th><th class="n">count'
            '</th><th class="n">energy</th><th class="n">share</th></tr></thead><tbody>' + "".join(rows)
            + "</tbody></table></div>")


def _comparison(r: EnergyReport, c: EnergyReport, more: Sequence[tuple[EnergyReport, EnergyReport]]) -> str:
    rows = []
    for kind in KINDS:
        a, b = c.totals.counts[kind], r.totals.counts[kind]
        if a or b:
            rows.append(f"<tr><td>{kind}</td>{_num(a, fmt_count(a))}{_num(b, fmt_count(b))}"
                        f"<td class=\"n\">{_ratio(a, b)}</td></tr>")
    for before, after in ((c, r), *more):
        acc = before.main_accumulator
        pairs = [(f"energy {before.precision}/{acc}", before.totals.energy_pj, after.totals.energy_pj, fmt_energy)]
        if before.memory:
            pairs.append((f"memory {before.precision}", before.totals.memory_pj, after.totals.memory_pj, fmt_energy))
        if before.dataflow is not None and after.dataflow is not None:
            pairs += [(f"total energy, {before.dataflow.accelerator} (ZigZag)", before.dataflow_total_pj,
                       after.dataflow_total_pj, fmt_energy),
                      ("latency (cycles)", before.dataflow.result.latency_cycles, after.dataflow.result.latency_cycles,
                       fmt_count)]
        ua, ub = before.main_unit, after.main_unit
        if ua and ub and ua.um2 and ub.um2:
            pairs.append((f"PE area {before.precision}/{acc} ({ua.unit} vs {ub.unit})", ua.um2, ub.um2, fmt_area))
        for label, a, b, fmt in pairs:
            rows.append(f"<tr><td>{_esc(label)}</td>{_num(a, fmt(a))}{_num(b, fmt(b))}"
                        f"<td class=\"n\">{_ratio(a, b)}</td></tr>")
    return (f'<div class="panel"><h2>{_esc(c.model)} vs {_esc(r.model)}</h2><table><thead><tr><th></th>'
            f'<th class="n">{_esc(c.model)}</th><th class="n">{_esc(r.model)}</th><th class="n">{_esc(r.model)}/'
            f"{_esc(c.model)}</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")


def _classes(r: EnergyReport) -> str:
    rows = []
    energy = class_split(r)
    for cat, t in r.by_category.items():
        other = sum(v for k, v in t.items() if k not in ("mul", "add", "acc"))
        pj, adds = sum(energy[cat].values()), additions(t)
        rows.append(f"<tr><td>{_esc(cat)}</td>{_num(t['mul'], fmt_count(t['mul']))}"
                    f"{_num(adds, fmt_count(adds))}{_num(other, fmt_count(other))}{_num(pj, fmt_energy(pj))}"
                    "</tr>")
    return (f'<div class="panel"><h2>Operator classes: {_esc(r.model)}</h2><table><thead><tr>'
            '<th>class</th><th class="n">mul</th><th class="n">add</th><th class="n">other</th>'
            '<th class="n">energy</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table></div>")


def _layer_row(i: int, r: EnergyReport, le: LayerEnergy | None, other: LayerEnergy | None,
               compare: EnergyReport | None) -> str:
    ref = le or other
    cells = [_num(i, str(i)), f"<td><code>{_esc(layer_label(ref))}</code></td>", f"<td>{_esc(ref.type)}</td>"]
    if le is None:
        cells += ["<td>not in this model</td>"] + ["<td></td>"] * (6 + bool(r.memory))   # one cell per column
    else:
        rest = sum(v for k, v in le.counts.items() if k not in ("mul", "add", "acc", "cmp"))
        cells += [f"<td>{_esc(le.precision)}/{_esc(le.accumulator)}</td>", _num(le.mul, fmt_count(le.mul)),
                  _num(le.add, fmt_count(le.add)),
                  _num(le.counts["cmp"], fmt_count(le.counts["cmp"])), _num(rest, fmt_count(rest)),
                  _num(le.energy_pj, fmt_energy(le.energy_pj)), _num(r.share(le), f"{r.share(le):.1%}")]
        if r.memory:
            cells.append(_num(le.memory_pj, fmt_energy(le.memory_pj)))
    if compare is not None:
        if other is None:
            cells += ["<td>-</td>", "<td></td>"]
        else:
            ratio = _ratio(other.energy_pj, le.energy_pj) if le is not None else "gone"
            known = le is not None and other.energy_pj
            cells += [_num(other.energy_pj, fmt_energy(other.energy_pj)),
                      _num(le.energy_pj / other.energy_pj, ratio) if known else f'<td class="n">{ratio}</td>']
    unsupported = _ops(dict(le.unsupported)) if le is not None and le.unsupported else ""
    cells.append(f"<td>{unsupported}</td>")
    return ('<tr class="miss">' if le is None else "<tr>") + "".join(cells) + "</tr>"


def _layers(r: EnergyReport, compare: EnergyReport | None) -> str:
    heads = ["#", "layer", "type", "precision", "mul", "add", "cmp", "other", "energy", "share"]
    heads += ["memory"] if r.memory else []
    heads += [f"energy in {compare.model}", "ratio"] if compare is not None else []
    heads += ["not counted"]
    numeric = {"#", "mul", "add", "cmp", "other", "energy", "share", "memory", "ratio"}
    th = "".join(f'<th class="n">{_esc(h)}</th>' if h in numeric or h.startswith("energy in") else f"<th>{_esc(h)}</th>"
                 for h in heads)
    pairs = align(r.layers, compare.layers) if compare is not None else [(le, None) for le in r.layers]
    body = "".join(_layer_row(i, r, a, b, compare) for i, (a, b) in enumerate(pairs, 1))
    note = (f"{len(r.layers)} layers of {_esc(r.model)} in execution order"
            + (f", aligned by name with {_esc(compare.model)}; greyed rows are layers only {_esc(compare.model)} has"
               if compare is not None else "") + ". Click a column header to sort.")
    return (f'<h2>Every layer</h2><div class="panel"><table class="sortable"><thead><tr>{th}</tr></thead>'
            f"<tbody>{body}</tbody></table><p class=\"caption\">{note}</p></div>")


def _modules(r: EnergyReport) -> str:
    """The module tree as an indented table (every module path under its parent, sums of its subtree), folded in
    a ``<details>`` element: no script needed."""
    if not r.modules:
        return ""
    rows = []
    for m in r.modules:
        name = f'<td style="padding-left:{10 + 18 * m.depth}px"><code>{_esc(m.name or "(model)")}</code></td>'
        rows.append(f'<tr>{name}<td>{_esc(m.type)}</td>{_num(m.params, f"{m.params:,}")}'
                    f"{_num(m.macs, fmt_count(m.macs))}{_num(m.mul, fmt_count(m.mul))}{_num(m.add, fmt_count(m.add))}"
                    f"{_num(m.energy_pj, fmt_energy(m.energy_pj))}{_num(r.share(m), f'{r.share(m):.1%}')}</tr>")
    heads = "".join(f'<th class="n">{h}</th>' for h in ("params", "MACs", "mul", "add", "energy", "share"))
    return (f'<h2>Modules</h2><div class="panel"><details open><summary>{len(r.modules)} modules of '
            f"{_esc(r.model)}, each with the sums of everything below it</summary><table><thead><tr><th>module</th>"
            f"<th>type</th>{heads}</tr></thead><tbody>{''.join(rows)}</tbody></table></details></div>")


def _dataflow(models: Sequence[EnergyReport]) -> str:
    """ZigZag's energy per memory level, latency and utilisation, one column per model."""
    flows = [m for m in models if m.dataflow is not None]
    if not flows:
        return ""
    levels = list(dict.fromkeys(lv for m in flows for lv in m.dataflow.result.memory_pj))
    rows = [("compute (all layers)", [m.totals.energy_pj for m in flows], fmt_energy)]
    rows += [(f"memory: {lv}", [m.dataflow.result.memory_pj.get(lv, 0.0) for m in flows], fmt_energy) for lv in levels]
    rows += [("total", [m.dataflow_total_pj for m in flows], fmt_energy),
             ("latency (cycles)", [m.dataflow.result.latency_cycles for m in flows], fmt_count)]
    same = [m for m in flows if m.dataflow.same_area is not None]
    body = "".join(f"<tr><td>{_esc(label)}</td>" + "".join(_num(v, fmt(v)) for v in vals) + "</tr>"
                   for label, vals, fmt in rows)
    heads = "".join(f'<th class="n">{_esc(m.model)}</th>' for m in flows)
    notes = " ".join(_esc(n) for n in flows[0].dataflow.notes)
    notes += "".join(f" Same area ({m.dataflow.array_scale:.2f}x the units) for {_esc(m.model)}: total "
                     f"{fmt_energy(m.total_with(m.dataflow.same_area))}, latency "
                     f"{fmt_count(m.dataflow.same_area.latency_cycles)} cycles." for m in same)
    return (f'<h2>Dataflow on {_esc(flows[0].dataflow.accelerator)} (ZigZag)</h2><div class="panel"><table><thead>'
            f"<tr><th></th>{heads}</tr></thead><tbody>{body}</tbody></table>"
            f'<p class="caption">{notes}</p></div>')


def _notes(r: EnergyReport) -> str:
    items = [_esc(c) for c in r.conventions]
    items.append(_esc(r.widths))
    items += [f"estimated price: {_esc(est)}" for est in r.estimates]
    if r.memory:
        items.append(f"memory: each leaf layer reads its weights and inputs and writes its outputs once at "
                     f"{_esc(r.memory)}; reported apart from compute")
    return "<h2>Conventions</h2><ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def to_html(report: EnergyReport, *, compare: EnergyReport | None = None,
            more: Sequence[tuple[EnergyReport, EnergyReport]] = (), title: str | None = None) -> str:
    """The whole page. ``compare`` is the model ``report`` is measured against (e.g. the CNN before
    conversion); ``more`` adds energy rows for further (compare, report) pairs, e.g. both priced at int8."""
    require_matplotlib()
    r, c = report, compare
    models = [r] if c is None else [r, c]
    split_note = (" Within a layer the split by kind uses the report-wide energy per operation of each kind "
                  "(layers run at different precisions); each bar's height is exact."
                  if any(mixed_precision(m) for m in models) else "")
    skipped = sum(1 for a, b in (align(r.layers, c.layers) if c else [(le, None) for le in r.layers])
                  if not ((a and a.energy_pj) or (b and b.energy_pj)))
    charts = [f'<h2>Energy per layer, execution order</h2><div class="panel wide">{layer_chart(r, c)}'
              f'<p class="caption">Compute energy by kind (mul, add, acc: accumulations, cmp, other).'
              + (f" Each pair: {_esc(c.model)} hatched on the left, {_esc(r.model)} on the right." if c else "")
              + (f" {skipped} layer(s) with no priced arithmetic are left out (they are in the table)."
                 if skipped else "") + f"{split_note}</p></div>"]
    side = [f'<div class="panel"><h2>Energy by operator class</h2>{class_chart(r, c)}'
            + (f'<p class="caption">Upper bar {_esc(r.model)}, lower (hatched) {_esc(c.model)}.{split_note}</p>'
               if c else f'<p class="caption">{split_note}</p>' if split_note else "")
            + "</div>"]
    if r.memory:
        side.append(f'<div class="panel"><h2>Compute vs memory</h2>{memory_chart(models[::-1])}'
                    f'<p class="caption">memory model: weights and inputs read, outputs written once, '
                    f"at {_esc(r.memory)}</p></div>")
    top = [_totals(r)] + ([_comparison(r, c, more)] if c is not None else [])
    body = (_header(r, c, title) + _cards(r, c) + _coverage(models)
            + f'<div class="row">{"".join(top)}</div>' + "".join(charts)
            + f'<div class="row">{"".join(side)}{_classes(r)}</div>' + _dataflow(models[::-1]) + _modules(r)
            + _layers(r, c) + _notes(r))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>Energy report: {_esc(r.model)}</title><style>{_CSS}</style></head>"
            f"<body><main>{body}</main><script>{_SORT_JS}</script></body></html>\n")
