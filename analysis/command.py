"""What ``adderconv energy`` does, as a library call the thin CLI wraps (and tests call directly).

>>> import io
>>> from rich.console import Console
>>> run_energy(EnergyOptions(model="lenet5_bn"), Console(file=io.StringIO()))
0
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from adderconv.choices import CAPTURES, COUNT_OPTIMIZERS, ENGINES, PRECISIONS, PRICINGS
from adderconv.errors import AdderconvError, check_choice
from adderconv.io import atomic_writes
from adderconv.output import Output

from .api import analyze
from .energy import EnergyReport
from .export import to_dict, to_json, to_markdown
from .gate import GateResult, compare_to_baseline, load_baseline, parse_increase
from .render import check_depth, fmt_energy, render_comparison, render_report, render_tree

__all__ = ["EnergyOptions", "run_energy", "render_gate", "parse_layer_precision", "DEFAULT_PAIR"]

DEFAULT_PAIR = ("resnet20", "resnet20_adder")   # what `adderconv energy` shows with no MODEL
DEFAULT_TITLE = "ResNet-20 on CIFAR: CNN vs AdderNet"


@dataclass(kw_only=True)   # built by keyword: reordering fields can never mis-wire two flags
class EnergyOptions:
    model: str | None = None
    input_shape: tuple[int, ...] | None = None
    arch: str | None = None
    trust: bool = False
    precision: str = "fp32"
    layer_precision: dict[str, str] = field(default_factory=dict)
    table: str | None = None
    memory: str | None = None
    energy_scale: float = 1.0
    compare: str | None = None
    all_layers: bool = False
    top: int = 10
    tree: bool = False                 # the module tree (params, MACs, mul, add, energy per module)
    depth: int = 3                     # its deepest level (0: the model only)
    json_path: str | None = None
    markdown_path: str | None = None
    baseline: str | None = None
    max_increase: str = "1%"
    strict: bool = False
    html_path: str | None = None
    capture: str = "dispatch"
    training: bool = False
    optimizer: str | None = "sgd"
    pricing: str = "hardware"
    accumulator: str | None = None
    engine: str = "arithmetic"
    accelerator: str = "tpu_like"
    same_area: bool = False


def parse_layer_precision(items: Sequence[str]) -> dict[str, str]:
    """['layer1.*=int8', 'fc=fp32'] -> {'layer1.*': 'int8', 'fc': 'fp32'} (glob patterns over layer names)."""
    out = {}
    for item in items:
        pattern, sep, prec = item.partition("=")
        if not sep or not pattern.strip() or not prec.strip():
            raise AdderconvError(f"`layer_precision` takes PATTERN=PRECISION (e.g. 'layer1.*=int8'), got {item!r}")
        out[pattern.strip()] = prec.strip()
    return out


def _analyze(o: EnergyOptions, model: str, precision: str, shape: tuple[int, ...] | None) -> EnergyReport:
    return analyze(model, shape, precision=precision, table=o.table, arch=o.arch, trust=o.trust,
                   layer_precision=o.layer_precision, memory=o.memory, energy_scale=o.energy_scale,
                   capture=o.capture, training=o.training, optimizer=o.optimizer, pricing=o.pricing,
                   accumulator=o.accumulator, engine=o.engine, accelerator=o.accelerator, same_area=o.same_area)


def _validate(o: EnergyOptions, baseline: dict | None) -> None:
    """Every option that can be checked without the model, checked before any work (the gate never runs on
    bad input): the price list, precisions and widths, memory level, scale, capture, optimizer, the engine and its
    accelerator, the baseline's kind."""
    from .energy import check_widths
    from .tables import load_table

    check_choice("pricing", o.pricing, PRICINGS, "pricing convention")
    prices = load_table(o.table).scaled(o.energy_scale)
    check_choice("precision", o.precision, PRECISIONS)
    for p in {o.precision, *o.layer_precision.values()}:
        check_choice("layer_precision" if p != o.precision else "precision", p, PRECISIONS, "precision")
        check_widths(prices, p, pricing=o.pricing, accumulator=o.accumulator)
    check_choice("engine", o.engine, ENGINES, "energy engine")
    if o.engine != "arithmetic":
        from .dataflow import check_engine

        check_engine(o.accelerator, training=o.training)
    elif o.same_area or o.accelerator != "tpu_like":
        raise AdderconvError("an accelerator and the same-area comparison belong to the zigzag engine; "
                             "add the engine choice (zigzag)")
    if o.memory:
        prices.memory_price(o.memory)
    check_choice("capture", o.capture, CAPTURES)
    check_depth(o.depth)
    if o.optimizer is not None:
        check_choice("optimizer", o.optimizer, COUNT_OPTIMIZERS)
    if baseline is not None and bool(baseline.get("training", False)) != o.training:
        raise AdderconvError(f"`baseline` counts {'a training step' if baseline.get('training') else 'inference'}; "
                             f"{'add' if not o.training else 'drop'} `training` to compare like with like")


def render_gate(result: GateResult, console: Console) -> None:
    from .render import _table

    t = _table(f"Baseline check (max increase {result.max_increase:.2%})", "scope", "metric", "baseline",
               "current", "change", "", right=(2, 3, 4))
    for r in [*result.rows, *result.grown_layers[:10]]:
        fmt = fmt_energy if r.metric.endswith("_pj") else (lambda v: f"{int(v):,}")
        bad = r in result.regressions or r in result.grown_layers
        change = f"{r.change:+.2%}" if r.baseline else "new"
        t.add_row(r.scope, r.metric, fmt(r.baseline), fmt(r.current), change, "GREW" if bad else "ok")
    console.print(t)
    console.print("[bold red]regression[/bold red]: " + ", ".join(f"{r.metric} {r.change:+.2%}" for r in
                                                                  result.regressions) if not result.ok else
                  "[green]no regression[/green]")


def run_energy(o: EnergyOptions, out: Output | Console) -> int:
    """Analyse, render, write files, check the baseline; returns the exit code (0 ok, 1 check failed).

    With a second model (``compare``, or the built-in demo's pair) the comparison comes first, then the model's
    own report: the same order whichever way the pair was asked for."""
    out = Output.of(out)
    console = out.console
    max_increase = parse_increase(o.max_increase)          # usage errors surface before any work
    baseline = load_baseline(o.baseline) if o.baseline else None
    _validate(o, baseline)
    if o.html_path:
        from .figures import require_matplotlib
        require_matplotlib()
    model, compare = o.model, o.compare
    if model is None:
        compare, model = compare or DEFAULT_PAIR[0], DEFAULT_PAIR[1]
    report = _analyze(o, model, o.precision, o.input_shape)
    other = _analyze(o, compare, o.precision, o.input_shape if o.model else None) if compare else None
    more: list[tuple[EnergyReport, EnergyReport]] = []
    if o.model is None:   # the built-in demo: also priced at int8 (or fp32 when int8 was asked for)
        alt = "int8" if o.precision != "int8" else "fp32"
        more = [(_analyze(o, compare, alt, None), _analyze(o, model, alt, None))]
        render_comparison(other, report, console, more=more, title=DEFAULT_TITLE)
    elif other is not None:
        render_comparison(other, report, console)
    render_report(report, console, top=o.top, all_layers=o.all_layers)
    if o.tree:
        render_tree(report, console, depth=o.depth)
    gate = compare_to_baseline(to_dict(report), baseline, max_increase) if baseline is not None else None
    files: dict[str, str] = {}                  # every report is made before any is written: all or none land
    if o.json_path:
        files[o.json_path] = to_json(report)
    if o.markdown_path:
        files[o.markdown_path] = to_markdown(report, compare=other, top=o.top, baseline=baseline, gate=gate)
    if o.html_path:
        from .html_report import to_html
        files[o.html_path] = to_html(report, compare=other, more=more, title=DEFAULT_TITLE if o.model is None else None)
    if files:
        with atomic_writes(*files) as tmps:     # all or none: the reports belong together
            for tmp, text in zip(tmps, files.values()):
                Path(tmp).write_text(text, encoding="utf-8")
        for path in files:
            out.wrote(path)
    code = 0
    if gate is not None:
        render_gate(gate, console)
        code = 0 if gate.ok else 1
    if o.strict and report.unsupported:
        console.print(f"[bold red]--strict[/bold red]: {len(report.unsupported)} operator type(s) not counted: "
                      + ", ".join(report.unsupported))
        code = 1
    return code
