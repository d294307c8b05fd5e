"""What ``adderconv convert`` and ``adderconv graph`` do, as library calls the thin CLI wraps.

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

from adderconv.errors import AdderconvError
from adderconv.untrusted import console as esc
from adderconv.io import atomic_write, ensure_writable, input_shape_of
from adderconv.loading import load_model, open_model

from .policy import Policy
from .report import conversion_report
from .save import FORMATS, save_converted
from .views import render_conversion, render_savings

__all__ = ["ConvertOptions", "run_convert", "run_graph"]


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


def _convert_onnx(opts: ConvertOptions, console: Console) -> int:
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
        console.print(f"note: {esc(note)}", highlight=False)
    try:
        render_savings(opts.model, opts.output, opts.input_shape, opts.precision, console, html=opts.html)
    except AdderconvError as e:   # counting is a view: a model it cannot count still converts
        console.print(f"(no before/after counts: {esc(e)})", highlight=False)
    console.print(f"wrote {esc(opts.output)} (onnx)")
    return 0


def run_convert(opts: ConvertOptions, console: Console) -> int:
    """Load, convert by policy, print what changed and what it saves, and write the result atomically."""
    if opts.fmt not in FORMATS:
        raise AdderconvError(f"--format must be one of {', '.join(FORMATS)}, got {opts.fmt!r}")
    if opts.strategy not in ("swap", "aten"):
        raise AdderconvError(f"--strategy must be swap or aten, got {opts.strategy!r}")
    if opts.strategy == "aten" and opts.fmt != "pt2":
        raise AdderconvError("--strategy aten produces a traced graph (no module classes to rebuild, not "
                             "picklable): save it with --format pt2")
    if opts.html:
        from adderconv.analysis.figures import require_matplotlib
        require_matplotlib()
    if str(opts.model).endswith(".onnx"):
        return _convert_onnx(opts, console)
    shape = _shape(opts.model, opts.arch, opts.input_shape)
    if shape is None and opts.html:
        raise AdderconvError("the before/after report needs an input shape to count the model: pass "
                             "--input-shape, e.g. 1,3,224,224")
    if shape is None and (opts.strategy == "aten" or opts.fmt == "pt2"):
        raise AdderconvError("this needs an input shape to trace the model: pass --input-shape, e.g. 1,3,224,224")
    ensure_writable(opts.output)
    loaded = open_model(opts.model, arch=opts.arch, trust=opts.trust)
    original = loaded.model
    for note in loaded.notes:
        console.print(f"note: {esc(note)}", highlight=False)
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
        console.print("no input shape: pass --input-shape to see multiplications, additions and energy")
    save_converted(net, opts.output, arch=loaded.arch, fmt=opts.fmt, example_inputs=example)
    console.print(f"wrote {esc(opts.output)} ({opts.fmt})")
    return 0


def run_graph(model: str, output: str, *, input_shape: tuple[int, ...] | None = None, arch: str | None = None,
              trust: bool = False, console: Console | None = None) -> int:
    """Trace ``model``, write its op graph as GraphML, print a one-line summary."""
    from .graph import first_last, model_graph, write_graphml

    shape = _shape(model, arch, input_shape)
    if shape is None:
        raise AdderconvError("an input shape is needed to trace the model: pass `input_shape`, e.g. 1,3,224,224")
    net = load_model(model, arch=arch, trust=trust)
    g = model_graph(net, (torch.zeros(shape),))
    with atomic_write(output) as tmp:
        write_graphml(g, os.fspath(tmp))
    kinds = [d["kind"] for _, d in g.nodes(data=True)]
    first, last = first_last(g)
    names = lambda ns: ", ".join(sorted(g.nodes[n]["module"] or n for n in ns))  # noqa: E731
    (console or Console()).print(
        f"wrote {esc(output)}: {g.number_of_nodes()} ops, {g.number_of_edges()} edges; conv {kinds.count('conv')}, "
        f"linear {kinds.count('linear')}, adder {kinds.count('adder')}, norm {kinds.count('norm')}; "
        f"first: {esc(names(first))}; last: {esc(names(last))}", highlight=False)
    return 0
