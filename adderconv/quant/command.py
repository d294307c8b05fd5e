"""The ``adderconv quantize`` command's body: calibrate on the training split, evaluate the float model and its
quantised copy (int<bits>, 4..8) on the test split, price both, write the quantised safetensors file.

>>> opts = QuantizeOptions(model="finetune-out/model.safetensors", output="q.safetensors")   # doctest: +SKIP
>>> run_quantize(opts, Output())                                                             # doctest: +SKIP
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..choices import CALIBRATION_METHODS
from ..errors import AdderconvError, check_choice
from ..output import Output

__all__ = ["QuantizeOptions", "QuantizeResult", "run_quantize", "quantize_source", "render"]

_KEEP = ("adderconv.arch", "adderconv.arch_kwargs", "adderconv.recipe")   # what rebuilding the float net needs


@dataclass(kw_only=True)   # built by keyword: reordering fields can never mis-wire two flags
class QuantizeOptions:
    model: str
    output: str
    data: str = "digits"
    input_shape: tuple[int, ...] | None = None
    arch: str | None = None
    trust: bool = False
    bits: int = 8                      # codes on 0 .. 2^bits - 1 (4..8), see adderconv.quantize
    groups: int = 1                    # grids per layer (output channels grouped by weight range)
    method: str = "percentile"
    percentile: float = 99.99
    calib_batches: int = 8
    batch_size: int = 64
    split_seed: int = 0
    limit: int | None = None
    json_path: str | None = None


@dataclass(kw_only=True)
class QuantizeResult:
    data: str
    task: str
    metric: str
    bits: int
    groups: int
    float_test: float
    quant_test: float                  # the quantised model's (int<bits>) test metric
    calibration: str
    energy: dict[str, Any]
    weight_bytes: dict[str, int]
    seconds: dict[str, float]
    output: str
    report: dict[str, Any]
    notes: list[str] = field(default_factory=list)   # shown, not part of the JSON record

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "notes"}


def _source_metadata(source: str, loaded) -> dict[str, str]:
    md: dict[str, str] = dict(loaded.arch.to_metadata()) if loaded.arch is not None else {}
    path = Path(source)
    if path.suffix == ".safetensors" and path.is_file():
        from safetensors.torch import safe_open
        with safe_open(str(path), framework="pt") as f:
            md.update({k: v for k, v in (f.metadata() or {}).items() if k in _KEEP})
    return md


def _energy(model: nn.Module, qmodel: nn.Module, chw: tuple[int, ...]) -> dict[str, Any]:
    """The float model and its quantised copy in counts and energy: one comparison (analysis.compare), each
    quantised layer priced at the precision it declares (``energy_precision``), the rest at fp32."""
    from adderconv.analysis.compare import compare_energy

    from .layers import QuantAdderConv2d

    res = compare_energy(qmodel, model, chw, precision=None, names=("quant", "float"))
    res["quant"]["quant_layers"] = sum(isinstance(m, QuantAdderConv2d) for m in qmodel.modules())
    return {"float": res["float"], "quant": res["quant"], "ratio": res.get("energy_ratio", 0.0)}


def _weight_bytes(model: nn.Module, names) -> int:
    """Bytes of the weights of the named layers (the quantised ones, in either model)."""
    return sum(model.get_submodule(n).weight.numel() * model.get_submodule(n).weight.element_size() for n in names)


def quantize_source(opts: QuantizeOptions) -> QuantizeResult:
    """Everything the command does but printing (the library call behind ``adderconv quantize``)."""
    from adderconv.arch import default_input_shape
    from adderconv.io import ModelKind, refuse_onnx, sample_shape
    from adderconv.loading import open_model
    from adderconv.data import default_shape, evaluate, load_data, loader

    from .api import quantize
    from .scheme import check_bits
    from .recipe import save_quantized

    kind = refuse_onnx(opts.model, "quantisation")
    check_choice("method", opts.method, CALIBRATION_METHODS, "calibration method")
    check_bits(opts.bits)          # before any model or data is read
    out = Path(opts.output)
    if out.suffix != ".safetensors":
        raise AdderconvError(f"the quantised model is written as safetensors: give an output ending in "
                             f".safetensors, got {opts.output!r}")
    if out.is_dir() or (out.parent.exists() and not out.parent.is_dir()):
        raise AdderconvError(f"cannot write {opts.output}: not a file path")
    if opts.calib_batches < 1 or opts.batch_size < 1:
        raise AdderconvError("calibration needs at least one batch of at least one sample")
    loaded = open_model(opts.model, opts.arch, opts.trust)
    model = loaded.model.cpu().float().eval()
    shape = opts.input_shape or default_input_shape(opts.arch, loaded.arch)
    chw = sample_shape(shape) if shape else default_shape(opts.data)
    data = load_data(opts.data, chw, limit=opts.limit, split_seed=opts.split_seed)
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(opts.split_seed))
    calib = loader(data.train, order[:opts.calib_batches * opts.batch_size], opts.batch_size)
    metric = "psnr" if data.task == "sr" else "acc"
    cpu, seconds = torch.device("cpu"), {}
    start = time.perf_counter()
    qmodel = quantize(model, calib, bits=opts.bits, groups=opts.groups, method=opts.method,
                      percentile=opts.percentile)
    seconds["calibrate"] = time.perf_counter() - start
    results = {}
    for name, m in (("float", model), ("quant", qmodel)):
        start = time.perf_counter()
        results[name] = evaluate(m, data.test, data.task, opts.batch_size, cpu)[metric]
        seconds[f"test_{name}"] = time.perf_counter() - start
    energy = _energy(model, qmodel, chw)
    save_quantized(qmodel, out, _source_metadata(opts.model, loaded))
    report = qmodel.adderconv_quant
    notes = [f"{opts.model} is a zoo name: its weights are random, so a test {metric} near chance is expected "
             f"(quantise a trained file to measure what quantisation costs)"] if kind is ModelKind.ZOO else []
    return QuantizeResult(data=data.description, task=data.task, metric=metric, bits=opts.bits, groups=opts.groups,
                          float_test=float(results["float"]), quant_test=float(results["quant"]),
                          calibration=report.describe_calibration(), energy=energy,
                          weight_bytes={"float": _weight_bytes(model, report.layers),
                                        "quant": _weight_bytes(qmodel, report.layers)},
                          seconds=seconds, output=str(out), report=report.to_json(), notes=notes)


def render(res: QuantizeResult, out: Output | Any) -> None:
    from rich.table import Table

    out = Output.of(out)
    show = (lambda v: f"{v:.2f} dB") if res.metric == "psnr" else (lambda v: f"{100 * v:.2f}%")
    width = f"int{res.bits}" + (f", {res.groups} grids per layer" if res.groups > 1 else "")
    t = Table(title=f"{width} quantisation", show_header=True)
    for col in ("", "float", f"int{res.bits}"):
        t.add_column(col, justify="right" if col else "left")
    t.add_row(f"test {res.metric}", show(res.float_test), show(res.quant_test))
    t.add_row(f"energy pJ (fp32; int{res.bits} adder layers)", f"{res.energy['float']['energy_pj']:,.0f}",
              f"{res.energy['quant']['energy_pj']:,.0f}")
    t.add_row("quantised layers' weight bytes", f"{res.weight_bytes['float']:,}", f"{res.weight_bytes['quant']:,}")
    out.print(f"data: {res.data}")
    out.print(f"calibration: {res.calibration} (training split)")
    out.print(t)
    for note in res.notes:                   # next to the accuracy it explains
        out.note(note)
    delta = res.quant_test - res.float_test
    out.print(f"int{res.bits} - float: {delta:+.2f} dB" if res.metric == "psnr" else
              f"int{res.bits} - float: {100 * delta:+.2f} points")
    out.print(f"energy int{res.bits}/float: {res.energy['ratio']:.3f} ({res.energy['quant']['quant_layers']} adder "
              f"layers priced at int{res.bits}, the rest at fp32)")
    for name, why in res.report["skipped"].items():
        out.note(f"{name}: {why}")
    for note in res.report["notes"]:
        out.note(note)
    out.wrote(res.output)


def run_quantize(opts: QuantizeOptions, out: Output | Any) -> int:
    """Quantise, print the comparison, write the file (and ``json_path``); return the exit code."""
    res = quantize_source(opts)
    render(res, out)
    if opts.json_path:
        from adderconv.io import write_json

        write_json(opts.json_path, res.to_json())
    return 0
