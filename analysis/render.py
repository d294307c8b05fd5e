"""Rich views of energy reports: one model, or CNN vs adder side by side. Views only format.

Tables use plain ASCII-safe box drawing and fold long names, so they survive narrow terminals; a console
writing to a file or pipe emits no colour codes (rich's default for non-terminals). Names that come from a
model or a file (layers, operators, models, price sources) are shown as text, never as markup
(:func:`adderconv.untrusted.console`).

>>> import io
>>> from rich.console import Console
>>> from .api import analyze
>>> console = Console(file=io.StringIO(), width=100)
>>> render_report(analyze("lenet5_bn"), console, top=3)
>>> "Totals" in console.file.getvalue()
True
>>> console = Console(file=io.StringIO(), width=120)
>>> render_tree(analyze("resnet20"), console, depth=1)     # every module above depth 1 folded into its parent
>>> rows = [line.split()[:3] for line in console.file.getvalue().splitlines() if line.startswith((" (", "   l"))]
>>> rows[:2]
[['(model)', '272,484', '40.81M'], ['layer1', '14,016', '14.16M']]
"""
from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.table import Table

from adderconv.errors import AdderconvError
from adderconv.untrusted import console as _text

from .counts import KINDS, additions
from .energy import EnergyReport

__all__ = ["render_report", "render_comparison", "render_dataflow", "render_tree", "check_depth", "fmt_count",
           "fmt_energy", "fmt_area", "fmt_params", "trainable_note"]


def fmt_count(n: float) -> str:
    """1234567 -> '1.23M' (exact below ten thousand)."""
    for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div and (div > 1e3 or abs(n) >= 1e4):
            return f"{n / div:.2f}{unit}"
    return f"{int(n)}" if float(n).is_integer() else f"{n:.2f}"


def fmt_energy(pj: float) -> str:
    """Picojoules with an SI prefix: 1.5e6 -> '1.50 uJ'."""
    for div, unit in ((1e12, "J"), (1e9, "mJ"), (1e6, "uJ"), (1e3, "nJ")):
        if abs(pj) >= div:
            return f"{pj / div:.2f} {unit}"
    return f"{pj:.2f} pJ"


def fmt_area(um2: float | None) -> str:
    """Square micrometres: 419.0 -> '419 um^2'; None (not listed) -> '-'."""
    return "-" if um2 is None else f"{um2:,.0f} um^2"


def trainable_note(r: EnergyReport) -> str:
    """' (all trainable)', ' (1,024 trainable)', or '' where a report cannot know (an ONNX file)."""
    t = r.trainable_params
    return "" if t is None else " (all trainable)" if t == r.params else f" ({t:,} trainable)"


def fmt_params(r: EnergyReport) -> str:
    """'272,484 parameters (all trainable)': exact, as torchinfo prints them, with the trainable part."""
    return f"{r.params:,} parameters{trainable_note(r)}"


def _table(title: str, *columns: str, right: Sequence[int] = ()) -> Table:
    t = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", title_style="bold", pad_edge=False)
    for i, c in enumerate(columns):
        t.add_column(c, justify="right" if i in right else "left", overflow="fold")
    return t


def _header(r: EnergyReport) -> str:
    shape = "x".join(map(str, r.input_shape)) if r.input_shape else "from file"
    front = r.frontend if r.frontend == "onnx" else f"{r.frontend} ({r.capture})"
    step = "  [bold]training step[/bold]" if r.training else ""
    return (f"[bold]{_text(r.model)}[/bold]  input {shape}  precision {r.precision}  prices {_text(r.table)}  "
            f"front end {front}{step}\n{r.widths}; engine {r.engine}\n{fmt_params(r)}; {fmt_count(r.macs)} MACs")


def render_report(report: EnergyReport, console: Console, *, top: int = 10, all_layers: bool = False) -> None:
    """Totals, per-kind, per-class and per-layer tables (top layers by energy first), then notes."""
    r = report
    console.print(_header(r))
    totals = _table("Totals", "kind", "count", "energy", "share", right=(1, 2, 3))
    for kind, (n, pj) in r.by_kind.items():
        share = f"{pj / r.totals.energy_pj:.1%}" if r.totals.energy_pj else "-"
        totals.add_row(kind, fmt_count(n), fmt_energy(pj) if kind not in r.totals.unpriced else "unpriced", share)
    totals.add_row("[bold]compute[/bold]", "", f"[bold]{fmt_energy(r.totals.energy_pj)}[/bold]", "")
    if r.memory:
        totals.add_row(f"memory ({r.memory})", "", fmt_energy(r.totals.memory_pj), "")
    console.print(totals)
    cats = _table("By operator class (add: additions incl. accumulations)", "class", "mul", "add", "other",
                  right=(1, 2, 3))
    for cat, t in r.by_category.items():
        other = sum(v for k, v in t.items() if k not in ("mul", "add", "acc"))
        cats.add_row(_text(cat), fmt_count(t["mul"]), fmt_count(additions(t)), fmt_count(other))
    console.print(cats)
    if r.units:
        ut = _table("Processing elements (area at 45 nm)", "unit", "widths", "area", "MACs", "layers",
                    right=(2, 3, 4))
        for u in r.units:
            ut.add_row(u.unit, f"{u.precision}/{u.accumulator}", fmt_area(u.um2), fmt_count(u.macs), str(u.layers))
        console.print(ut)
    layers = sorted(r.layers, key=lambda le: -le.energy_pj) if not all_layers else list(r.layers)
    shown = layers if all_layers else [le for le in layers[:top] if le.energy_pj or le.counts]
    title = "Layers (execution order)" if all_layers else f"Top {len(shown)} of {len(r.layers)} layers by energy"
    cols = ["layer", "type", "widths", "mul", "add", "energy", "share"] + (["memory"] if r.memory else [])
    lt = _table(title, *cols, right=(3, 4, 5, 6, 7))
    for le in shown:
        mark = " *" if le.precision_from == "pattern" else ""      # a per-layer override (see the notes)
        row = [_text(le.name or "(model)"), _text(le.type), f"{le.precision}/{le.accumulator}{mark}", fmt_count(le.mul),
               fmt_count(le.add), fmt_energy(le.energy_pj), f"{r.share(le):.1%}"]
        lt.add_row(*row, *([fmt_energy(le.memory_pj)] if r.memory else []))
    console.print(lt)
    if r.dataflow is not None:
        render_dataflow(r, console, top=top)
    _notes(r, console)


def check_depth(depth: int | None) -> None:
    """A tree depth is a whole number >= 0 or None (checked before any model is read)."""
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 0):
        raise AdderconvError(f"`depth` must be a whole number >= 0 (0: the whole model only), got {depth!r}")


def render_tree(report: EnergyReport, console: Console, *, depth: int | None = 3) -> None:
    """The model as a tree of modules (torchinfo / ptflops style): each module path indented under its parent,
    with the parameters, MACs, multiplications, additions and compute energy of everything below it, and its
    share of the model's energy; modules deeper than ``depth`` (0: the whole model only; None: no limit) are
    folded into their parents."""
    check_depth(depth)
    r = report
    limit = "" if depth is None else f"depth <= {depth}; "
    t = _table(f"Modules ({limit}params, MACs and energy of everything below each; mul and add per layer are in "
               f"the layer table)", "module (type)", "params", "MACs", "energy", "share", right=(1, 2, 3, 4))
    for c in t.columns:                # the indentation is the tree: a folded row would break it
        c.no_wrap = True
    for m in r.modules:
        if depth is not None and m.depth > depth:
            continue
        t.add_row(_text("  " * m.depth + (m.name or "(model)") + (f" ({m.type})" if m.type else "")), f"{m.params:,}",
                  fmt_count(m.macs), fmt_energy(m.energy_pj), f"{r.share(m):.1%}")
    console.print(t)


def render_dataflow(r: EnergyReport, console: Console, *, top: int = 10) -> None:
    """ZigZag's view: energy per memory level beside compute, latency and utilisation, per layer and in total."""
    from .layer_views import energy_unit

    flow = r.dataflow
    res = flow.result
    levels = list(res.memory_pj)
    div, unit = energy_unit(max([res.compute_pj, *res.memory_pj.values()]))
    t = _table(f"Dataflow on {_text(flow.accelerator)} (ZigZag, {flow.operand_bits}-bit operands, "
               f"{flow.accumulator_bits}-bit accumulators; energy in {unit})", "layer", "compute",
               *map(_text, levels), "cycles", "util.", right=range(1, len(levels) + 4))
    for ld in sorted(res.layers, key=lambda ld: -ld.total_pj)[:top]:
        t.add_row(_text(ld.name), f"{ld.compute_pj / div:.3g}",
                  *(f"{ld.memory_pj.get(lv, 0.0) / div:.3g}" for lv in levels),
                  fmt_count(ld.latency_cycles), f"{ld.utilization:.0%}")
    t.add_row("[bold]mapped layers[/bold]", f"{res.compute_pj / div:.3g}",
              *(f"{res.memory_pj[lv] / div:.3g}" for lv in levels), fmt_count(res.latency_cycles), "")
    console.print(t)
    console.print(f"total energy: compute {fmt_energy(r.totals.energy_pj)} + data movement "
                  f"{fmt_energy(res.memory_total_pj)} = [bold]{fmt_energy(r.dataflow_total_pj)}[/bold]; "
                  f"latency {fmt_count(res.latency_cycles)} cycles")
    if flow.same_area is not None:
        s = flow.same_area
        console.print(f"same area ({flow.array_scale:.2f}x the units): data movement "
                      f"{fmt_energy(s.memory_total_pj)}, total {fmt_energy(r.total_with(s))}, latency "
                      f"{fmt_count(s.latency_cycles)} cycles")


def _notes(r: EnergyReport, console: Console) -> None:
    console.print("[bold]Notes[/bold]")
    for line in r.source_notes:
        console.print(f"- {_text(line)}", highlight=False)
    for line in r.conventions:
        console.print(f"- {line}")
    console.print("- MACs: products or |x - w| terms accumulated (fvcore's \"flops\"); a bias, BatchNorm or "
                  "softmax is not one")
    if r.training:
        phases = ", ".join(f"{ph} {fmt_count(t['mul'])} mul / {fmt_count(t['add'])} add"
                           for ph, t in r.by_phase.items())
        console.print(f"- training step: {phases}; backward from a gradient of ones at the output (the loss "
                      f"is not counted)" + ("" if r.optimizer else "; no optimizer update"))
    if overridden := [le for le in r.layers if le.precision_from == "pattern"]:
        groups = []
        for p in dict.fromkeys(le.precision for le in overridden):
            names = [_text(le.name) for le in overridden if le.precision == p]
            groups.append(f"{len(names)} at {p} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})")
        console.print(f"- priced by a layer-precision pattern (widths marked *), not at {r.precision}: "
                      + "; ".join(groups), highlight=False, markup=False)
    if r.declared:
        shown = ", ".join(r.declared[:5]) + (", ..." if len(r.declared) > 5 else "")
        console.print(f"- priced at the precision the layer declares (energy_precision): {shown}")
    if r.unsupported:
        ops = ", ".join(f"{_text(op)} x{n}" for op, n in r.unsupported.items())
        console.print(f"- [yellow]not counted (no handle):[/yellow] {ops}")
    else:
        console.print("- every operator was counted or is zero-arithmetic")
    if r.ignored:
        console.print("- zero-arithmetic, not counted: " + ", ".join(f"{_text(op)} x{n}"
                                                                    for op, n in r.ignored.items()))
    if r.totals.unpriced:
        console.print("- unpriced kinds (no price in the table): "
                      + ", ".join(f"{k} {fmt_count(n)}" for k, n in r.totals.unpriced.items()))
    for est in r.estimates:
        console.print(f"- estimated price: {_text(est)}")
    if r.units:
        console.print("- processing element area: a MAC unit is a multiplier and an accumulator adder, a SAD unit a "
                      "subtractor (|x - w|'s sign flip not priced, as in the energy) and an accumulator adder")
    for line in (r.dataflow.notes if r.dataflow is not None else ()):
        console.print(f"- {_text(line)}")
    if r.memory:
        console.print(f"- memory: each leaf layer reads its weights and inputs and writes its outputs once at "
                      f"{r.memory}; reported apart from compute")


def render_comparison(before: EnergyReport, after: EnergyReport, console: Console, *,
                      more: Sequence[tuple[EnergyReport, EnergyReport]] = (), title: str | None = None) -> None:
    """Side by side: counts per kind and compute energy of two models (e.g. CNN vs adder).

    ``more`` adds energy rows for further (before, after) pairs, e.g. the same models priced at int8.
    """
    t = _table(_text(title or f"{before.model} vs {after.model}"), "", _text(before.model), _text(after.model),
               "after/before",
               right=(1, 2, 3))

    def ratio(a: float, b: float) -> str:
        return f"{b / a:.3f}x" if a else ("-" if not b else "new")

    for kind in KINDS:
        a, b = before.totals.counts[kind], after.totals.counts[kind]
        if a or b:
            t.add_row(kind, fmt_count(a), fmt_count(b), ratio(a, b))
        if kind == "acc":
            t.add_row("add + acc", fmt_count(before.totals.add), fmt_count(after.totals.add),
                      ratio(before.totals.add, after.totals.add))
    t.add_row("MACs", fmt_count(before.macs), fmt_count(after.macs), ratio(before.macs, after.macs))
    t.add_row("parameters", f"{before.params:,}", f"{after.params:,}", ratio(before.params, after.params))
    for x, y in ((before, after), *more):
        t.add_row(f"energy {x.precision}/{x.main_accumulator}", fmt_energy(x.totals.energy_pj),
                  fmt_energy(y.totals.energy_pj), ratio(x.totals.energy_pj, y.totals.energy_pj))
        if x.memory:
            t.add_row(f"memory {x.precision}", fmt_energy(x.totals.memory_pj), fmt_energy(y.totals.memory_pj),
                      ratio(x.totals.memory_pj, y.totals.memory_pj))
        if x.dataflow is not None and y.dataflow is not None:
            a, b = x.dataflow.result.memory_total_pj, y.dataflow.result.memory_total_pj
            t.add_row(f"data movement ({_text(x.dataflow.accelerator)})", fmt_energy(a), fmt_energy(b), ratio(a, b))
            a, b = x.dataflow_total_pj, y.dataflow_total_pj
            t.add_row(f"total energy ({_text(x.dataflow.accelerator)})", fmt_energy(a), fmt_energy(b), ratio(a, b))
            a, b = x.dataflow.result.latency_cycles, y.dataflow.result.latency_cycles
            t.add_row("latency (cycles)", fmt_count(a), fmt_count(b), ratio(a, b))
        ux, uy = x.main_unit, y.main_unit
        if ux and uy and ux.um2 and uy.um2:
            t.add_row(f"PE area {x.precision}", f"{fmt_area(ux.um2)} {ux.unit}", f"{fmt_area(uy.um2)} {uy.unit}",
                      ratio(ux.um2, uy.um2))
    console.print(t)
