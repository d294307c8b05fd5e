"""What ``adderconv convert``, ``graph``, ``export`` and ``verify`` do, as library calls the thin CLI wraps: each
command is a keyword-only options dataclass and a ``run_x(options, out) -> exit code`` (``out``: an
:class:`adderconv.output.Output`, or a rich ``Console`` that takes everything).

>>> import io, tempfile
>>> from rich.console import Console
>>> out = tempfile.mkdtemp() + "/r20.safetensors"
>>> run_convert(ConvertOptions(model="resnet20", output=out), Console(file=io.StringIO()))
0
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from adderconv.choices import SAVE_FORMATS, STRATEGIES
from adderconv.errors import AdderconvError, check_choice
from adderconv.io import ModelKind, atomic_write, ensure_writable, input_shape_of, model_kind, refuse_onnx
from adderconv.loading import load_model, open_model
from adderconv.output import Output
from adderconv.untrusted import console as esc
from adderconv.untrusted import plain

from .policy import Policy
from .report import conversion_report
from .save import save_converted
from .views import render_conversion, render_savings

__all__ = ["ConvertOptions", "GraphOptions", "ExportOptions", "VerifyOptions", "run_convert", "run_graph",
           "run_export", "run_verify"]


@dataclass(kw_only=True)   # built by keyword: reordering fields can never mis-wire two flags
class ConvertOptions:
    model: str
    output: str
    policy: Policy = Policy()
    input_shape: tuple[int, ...] | None = None
    arch: str | None = None
    trust: bool = False
    fmt: str = "safetensors"
    strategy: str = "swap"
    precision: str = "fp32"
    html: str | None = None              # write the before/after energy report here (HTML)


def _shape(model: str, arch: str | None, shape: tuple[int, ...] | None) -> tuple[int, ...] | None:
    return shape or input_shape_of(model, arch)


@dataclass(kw_only=True)
class GraphOptions:
    model: str
    output: str = "graph.graphml"
    input_shape: tuple[int, ...] | None = None
    arch: str | None = None
    trust: bool = False


@dataclass(kw_only=True)
class ExportOptions:
    model: str
    output: str
    input_shape: tuple[int, ...] | None = None
    arch: str | None = None
    trust: bool = False
    opset: int | None = None             # default-domain ONNX opset (None: torch's)
    static_batch: bool = False


@dataclass(kw_only=True)
class VerifyOptions:
    onnx_file: str
    against: str                         # the PyTorch model it came from (as for export)
    input_shape: tuple[int, ...] | None = None
    arch: str | None = None
    trust: bool = False
    tolerance: float = 1e-4


def _convert_onnx(opts: ConvertOptions, out: Output) -> int:
    console = out.console
    try:
        from .onnx_rewrite import convert_onnx
    except ImportError:
        raise AdderconvError("ONNX conversion is not available yet (convert the PyTorch model, then "
                             "`adderconv export`)") from None
    if not Path(opts.model).is_file():
        raise AdderconvError(f"{opts.model}: no such file")
    result = convert_onnx(opts.model, opts.output, opts.policy)
    t = Table(title=esc(result))   # node names, op types and notes come from the file: shown, never markup
    for col in ("node", "op", "now", "notes"):
        t.add_column(col)
    for r in result.records:
        t.add_row(esc(r.name), esc(r.op_type), "AdderConv2d" if r.converted else "-", esc(r.reason))
    console.print(t)
    for note in result.notes:
        out.note(note)
    try:
        render_savings(opts.model, opts.output, opts.input_shape, opts.precision, console, html=opts.html)
    except AdderconvError as e:   # counting is a view: a model it cannot count still converts
        console.print(f"(no before/after counts: {esc(e)})", highlight=False)
    out.wrote(opts.output, "onnx")
    return 0


def run_convert(opts: ConvertOptions, out: Output | Console) -> int:
    """Load, convert by policy, print what changed and what it saves, and write the result atomically."""
    out = Output.of(out)
    console = out.console
    check_choice("fmt", opts.fmt, SAVE_FORMATS, "save format")
    check_choice("strategy", opts.strategy, STRATEGIES, "conversion strategy")
    if opts.strategy == "aten" and opts.fmt != "pt2":
        raise AdderconvError("`strategy` aten produces a traced graph (no module classes to rebuild, not "
                             "picklable): save it with `fmt` pt2")
    if opts.html:
        from adderconv.analysis.figures import require_matplotlib
        require_matplotlib()
    if model_kind(opts.model) is ModelKind.ONNX:
        return _convert_onnx(opts, out)
    shape = _shape(opts.model, opts.arch, opts.input_shape)
    if shape is None and opts.html:
        raise AdderconvError("the before/after report needs an input shape to count the model: pass "
                             "`input_shape`, e.g. 1,3,224,224")
    if shape is None and (opts.strategy == "aten" or opts.fmt == "pt2"):
        raise AdderconvError("this needs an input shape to trace the model: pass `input_shape`, e.g. 1,3,224,224")
    ensure_writable(opts.output)
    loaded = open_model(opts.model, arch=opts.arch, trust=opts.trust)
    original = loaded.model
    for note in loaded.notes:
        out.note(note)
    if not isinstance(original, torch.nn.Module) or isinstance(original, torch.jit.ScriptModule):
        raise AdderconvError(f"{opts.model}: a TorchScript model cannot be converted; load the Python model")
    example = None
    if shape is not None:
        param = next(original.parameters(), None)
        example = (torch.zeros(shape, device=param.device if param is not None else "cpu"),)
    if opts.strategy == "aten":
        from .aten_rewrite import convert_exported
        net = convert_exported(original, example, opts.policy)
    else:
        from .swap import convert
        net = convert(original, opts.policy, example_inputs=example)
    report = conversion_report(net)
    render_conversion(report, console)
    if shape is not None:
        render_savings(original, net, shape, opts.precision, console, html=opts.html)
    else:
        out.note("no input shape: pass --input-shape to see multiplications, additions and energy")
    save_converted(net, opts.output, arch=loaded.arch, fmt=opts.fmt, example_inputs=example)
    out.wrote(opts.output, opts.fmt)
    return 0


def run_graph(opts: GraphOptions, out: Output | Console | None = None) -> int:
    """Trace the model, write its op graph as GraphML, print a one-line summary."""
    from .graph import first_last, model_graph, write_graphml

    out = Output.of(out)
    refuse_onnx(opts.model, "a PyTorch op graph")
    shape = _shape(opts.model, opts.arch, opts.input_shape)
    if shape is None:
        raise AdderconvError("an input shape is needed to trace the model: pass `input_shape`, e.g. 1,3,224,224")
    net = load_model(opts.model, arch=opts.arch, trust=opts.trust)
    g = model_graph(net, (torch.zeros(shape),))
    with atomic_write(opts.output) as tmp:
        write_graphml(g, os.fspath(tmp))
    kinds = [d["kind"] for _, d in g.nodes(data=True)]
    first, last = first_last(g)
    names = lambda ns: ", ".join(sorted(g.nodes[n]["module"] or n for n in ns))  # noqa: E731
    out.line(f"wrote {plain(opts.output)}: {g.number_of_nodes()} ops, {g.number_of_edges()} edges; conv "
             f"{kinds.count('conv')}, linear {kinds.count('linear')}, adder {kinds.count('adder')}, norm "
             f"{kinds.count('norm')}; first: {plain(names(first))}; last: {plain(names(last))}")
    return 0


def run_export(opts: ExportOptions, out: Output | Console | None = None) -> int:
    """Export to ONNX that plain onnxruntime runs; one line saying what was written."""
    from .onnx_export import export_onnx, resolve_input_shape
    from .onnx_verify import load_seeded

    out = Output.of(out)
    refuse_onnx(opts.model, "ONNX export (it is ONNX already)")
    shape = resolve_input_shape(opts.model, opts.arch, opts.input_shape)
    info = export_onnx(load_seeded(opts.model, opts.arch, opts.trust), opts.output, shape, opset=opts.opset,
                       dynamic_batch=not opts.static_batch)
    out.line(f"wrote {info.path}: {info.describe_nodes()}, {len(info.overloads)} kernel "
             f"configurations, opset {info.opset}, input {info.input_names[0]} "
             f"{'(dynamic batch)' if not opts.static_batch else tuple(shape)}")
    return 0


def run_verify(opts: VerifyOptions, out: Output | Console | None = None) -> int:
    """Run onnxruntime and PyTorch on the same random inputs; 1 if the relative error exceeds the tolerance."""
    from .onnx_verify import load_seeded, verify_onnx

    out = Output.of(out)
    refuse_onnx(opts.against, "the PyTorch model to verify against")
    result = verify_onnx(opts.onnx_file, load_seeded(opts.against, opts.arch, opts.trust), opts.input_shape,
                         tolerance=opts.tolerance)
    for c in result.checks:
        out.line(f"batch {c.batch}: rel error {c.rel_error:.2e} vs PyTorch float64, {c.rel_error_fp32:.2e} vs "
                 f"float32 (PyTorch float32 vs float64: {c.torch_fp32_error:.2e})")
    for note in result.notes:  # e.g. outputs that cannot tell models apart, and what was compared instead
        out.note(note)
    for c in result.integer:   # a quantised model: its integer core, exactly
        out.line(f"batch {c.batch}: {c.nodes} integer adder nodes, int32 sums different {c.sums_different} of "
                 f"{c.sums_checked}, uint8 codes different {c.codes_different} of {c.codes_checked}"
                 + (f"; {c.grouped} nodes of layers with several grids compared end to end only" if c.grouped else ""))
    out.line(f"max relative error {result.max_rel_error:.2e}, tolerance {opts.tolerance:g}: "
             f"{'OK' if result.ok else 'FAILED'}")
    return 0 if result.ok else 1
