"""The ``adderconv`` command line: a thin Typer app; every command is one call into the library.

Commands live here as short functions; shared option types are defined once below, so ``--input-shape``
reads the same in every command. User mistakes raise :class:`AdderconvError` and come out as one line on
stderr with exit code 2 (set ``ADDERCONV_DEBUG=1`` for the traceback).
"""
from __future__ import annotations

import math
import os
import sys
from typing import Annotated, Optional

import typer

from adderconv.errors import AdderconvError   # torch-free, as is `import adderconv`: parsing and --help load no torch

if __name__ not in ("adderconv.cli", "__main__"):   # a checkout's top level is on sys.path: no second copy
    raise ImportError(f"import adderconv.cli, not {__name__}")

__all__ = ["app", "main", "parse_shape"]

app = typer.Typer(
    name="adderconv",
    help="Turn CNNs into multiplication-free AdderNets, fine-tune them, and measure what that saves.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """'1,3,224,224' or '1x3x224x224' -> (1, 3, 224, 224)."""
    if text is None:
        return None
    parts = text.replace("x", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts if p.strip())
    except ValueError:
        raise AdderconvError(f"--input-shape must be integers like 1,3,224,224, got {text!r}") from None
    if len(shape) < 2 or min(shape) < 1:
        raise AdderconvError(f"--input-shape needs at least (batch, channels), all positive, got {text!r}")
    if math.prod(shape) > 2**63 - 1:   # torch sizes are int64
        raise AdderconvError(f"--input-shape {text!r} has more elements than a tensor can hold (2^63 - 1)")
    return shape


# Shared option types: one definition, the same spelling and help in every command.
ModelArg = Annotated[str, typer.Argument(help="Zoo name, .onnx, .safetensors/.pt state dict (+ --arch), "
                                              "or a pickled model with --trust.")]
InputShape = Annotated[Optional[str], typer.Option("--input-shape", "-s",
                                                   help="Input shape, e.g. 1,3,224,224 (zoo models have a default).")]
Arch = Annotated[Optional[str], typer.Option("--arch", help="Architecture for a state dict: zoo name, torchvision:NAME "
                                                            "or module:factory.")]
Trust = Annotated[bool, typer.Option("--trust", help="Allow loading pickles/TorchScript/.pt2 (they can run code).")]


def _take(cls, args: dict):
    """Build dataclass ``cls`` by keyword from the options in ``args`` named like its fields (removed from ``args``)."""
    import dataclasses

    return cls(**{f.name: args.pop(f.name) for f in dataclasses.fields(cls) if f.name in args})


def _version_callback(value: bool) -> None:
    if value:
        from adderconv import __version__

        typer.echo(f"adderconv {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version_callback, is_eager=True,
                                                help="Show the version and exit.")] = False) -> None:
    """adderconv: AdderNet conversion, fine-tuning, energy analysis and ONNX export."""


@app.command("zoo")
def zoo_cmd() -> None:
    """List the built-in models (CNN and adder variants of the papers' networks)."""
    from adderconv import zoo

    for name in zoo.list_models():
        e = zoo.entry(name)
        typer.echo(f"{name:18s} {'x'.join(map(str, e.input_shape)):12s} {e.description}")


# --- commands of the other modules register below this line (keep each 10-25 lines) ---


@app.command("convert")
def convert_cmd(
    model: ModelArg,
    output: Annotated[str, typer.Option("--output", "-o", help="File to write (safetensors with the recipe).")],
    input_shape: InputShape = None, arch: Arch = None, trust: Trust = False,
    keep_first: Annotated[bool, typer.Option("--keep-first/--convert-first",
                                             help="Keep the first multiplicative layer.")] = True,
    keep_last: Annotated[bool, typer.Option("--keep-last/--convert-last",
                                            help="Keep the last multiplicative layer.")] = True,
    include: Annotated[Optional[list[str]], typer.Option(
        help="Convert only layers matching this glob (repeatable).")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option(help="Keep layers matching this glob (repeatable).")] = None,
    layer_type: Annotated[Optional[list[str]], typer.Option("--type",
                                                            help="Only these types, e.g. Conv2d (repeatable).")] = None,
    min_channels: Annotated[int, typer.Option(help="Keep layers with fewer input or output channels.")] = 0,
    linear: Annotated[bool, typer.Option("--linear/--no-linear", help="Convert nn.Linear layers too.")] = False,
    skip_depthwise: Annotated[bool, typer.Option(help="Keep depthwise convolutions.")] = False,
    insert_bn: Annotated[bool, typer.Option("--insert-bn/--no-insert-bn",
                                            help="Add BatchNorm after adders that lack it.")] = True,
    addersr: Annotated[bool, typer.Option(
        help="AdderSR preset: self-shortcut where shapes match + power activation.")] = False,
    weight_init: Annotated[str, typer.Option(help="copy, copy_rescaled (unit std) or normal (N(0,1)).")] = "copy",
    fmt: Annotated[str, typer.Option("--format", help="safetensors, pickle or pt2.")] = "safetensors",
    strategy: Annotated[str, typer.Option(
        help="swap (modules) or aten (torch.export graph; functional convs).")] = "swap",
    precision: Annotated[str, typer.Option(help="Precision for the energy columns.")] = "fp32",
    html: Annotated[Optional[str], typer.Option(help="Write the before/after energy report as HTML "
                                                     "(needs adderconv\\[report]).")] = None,
) -> None:
    """Convert a CNN's convolutions into adder layers by policy; print what changed and what it saves."""
    from rich.console import Console

    from adderconv.converters.command import ConvertOptions, run_convert
    from adderconv.converters.policy import Policy

    policy = Policy(keep_first=keep_first, keep_last=keep_last, include=tuple(include or ()),
                    exclude=tuple(exclude or ()), types=tuple(layer_type or ()), min_channels=min_channels,
                    convert_linear=linear, skip_depthwise=skip_depthwise, insert_bn=insert_bn, shortcut=addersr,
                    power=addersr, weight_init=weight_init)
    opts = ConvertOptions(model=model, output=output, policy=policy, input_shape=parse_shape(input_shape), arch=arch,
                          trust=trust, fmt=fmt, strategy=strategy, precision=precision, html=html)
    raise typer.Exit(run_convert(opts, Console()))


@app.command("graph")
def graph_cmd(
    model: ModelArg,
    out: Annotated[str, typer.Option("--out", "-o", help="GraphML file to write.")] = "graph.graphml",
    input_shape: InputShape = None, arch: Arch = None, trust: Trust = False,
) -> None:
    """Write the traced model as a networkx graph (GraphML): one node per op with type, shapes and counts."""
    from adderconv.converters.command import run_graph

    raise typer.Exit(run_graph(model, out, input_shape=parse_shape(input_shape), arch=arch, trust=trust))


@app.command("energy")
def energy_cmd(
    model: Annotated[Optional[str], typer.Argument(help="Zoo name, .onnx, state dict (+ --arch) or, with --trust, a "
                                                        "pickle. None: ResNet-20 CNN vs its AdderNet.")] = None,
    input_shape: InputShape = None, arch: Arch = None, trust: Trust = False,
    precision: Annotated[str, typer.Option(help="fp32, fp16, bf16, int8, int16 or int32.")] = "fp32",
    layer_precision: Annotated[Optional[list[str]], typer.Option(help="Per-layer precision, PATTERN=PREC "
                                                                      "(glob over layer names); repeatable.")] = None,
    table: Annotated[Optional[str], typer.Option(help="Price list TOML (default: Horowitz 45 nm).")] = None,
    memory: Annotated[Optional[str], typer.Option(
        help="Add memory energy at sram_8kb|sram_32kb|sram_1mb|dram.")] = None,
    energy_scale: Annotated[float, typer.Option(help="Multiply every price (technology-node scaling).")] = 1.0,
    compare: Annotated[Optional[str], typer.Option(help="A second model to compare against (e.g. the CNN).")] = None,
    all_layers: Annotated[bool, typer.Option(help="List every layer in execution order.")] = False,
    top: Annotated[int, typer.Option(help="Layers shown, most energy first.")] = 10,
    json_path: Annotated[Optional[str], typer.Option("--json", help="Write the report as JSON.")] = None,
    markdown_path: Annotated[Optional[str], typer.Option("--markdown", help="Write a Markdown report (PR "
                                                                             "comments).")] = None,
    html_path: Annotated[Optional[str], typer.Option("--html", help="Write a self-contained HTML report with "
                                                                    "charts (needs adderconv\\[report]).")] = None,
    baseline: Annotated[Optional[str], typer.Option(help="A previous --json report; exit 1 if totals grew.")] = None,
    max_increase: Annotated[str, typer.Option(help="Allowed growth over --baseline, e.g. 1%.")] = "1%",
    strict: Annotated[bool, typer.Option(help="Exit 1 if any operator could not be counted.")] = False,
    capture: Annotated[str, typer.Option(help="How ops are seen: dispatch (fake tensors, nothing runs), real "
                                              "(runs the model), jit (the TorchScript tracer).")] = "dispatch",
    training: Annotated[bool, typer.Option(help="Count a training step: forward, backward, optimizer "
                                                "update.")] = False,
    optimizer: Annotated[str, typer.Option(help="With --training: sgd, adam or none.")] = "sgd",
    pricing: Annotated[str, typer.Option(help="hardware: accumulations at the accumulator's width (int8 -> int32, "
                                              "fp16/bf16 -> fp32); papers: everything at the operand precision, "
                                              "as AdderNet's figures.")] = "hardware",
    accumulator: Annotated[Optional[str], typer.Option(help="Accumulator precision for every layer (default: "
                                                            "the hardware one for each operand precision).")] = None,
    engine: Annotated[str, typer.Option(help="arithmetic, or zigzag: data movement through an accelerator's memory "
                                             "hierarchy (needs adderconv\\[zigzag]).")] = "arithmetic",
    accelerator: Annotated[str, typer.Option(help="With --engine zigzag: tpu_like, eyeriss_like, ... or a ZigZag "
                                                  "accelerator YAML file.")] = "tpu_like",
    same_area: Annotated[bool, typer.Option(help="With --engine zigzag: also run an adder net on an array with as "
                                                 "many more units as its smaller SAD units buy.")] = False,
) -> None:
    """Count multiplications and additions per layer, price them at 45 nm, report, and gate CI."""
    args = dict(locals())           # each option once, under its field's name (tests/test_cli_options.py)
    from rich.console import Console

    from adderconv.analysis.command import EnergyOptions, parse_layer_precision, run_energy

    parsed = {"input_shape": parse_shape(input_shape), "layer_precision": parse_layer_precision(layer_precision or []),
              "optimizer": None if optimizer == "none" else optimizer}
    raise typer.Exit(run_energy(EnergyOptions(**args | parsed), Console()))


@app.command("finetune")
def finetune_cmd(
    model: ModelArg,
    data: Annotated[str, typer.Option(help="digits (built in), cifar10:DIR, imagefolder:DIR, sr:DIR, sr:skimage, "
                                           "or a directory (CIFAR-10 python batches or ImageFolder).")] = "digits",
    teacher: Annotated[Optional[str], typer.Option(help="Teacher for distillation (default: the original CNN "
                                                        "when MODEL is a CNN file, converted first).")] = None,
    out: Annotated[str, typer.Option("--out", "-o",
                                     help="Output directory (checkpoint, metrics, model).")] = "finetune-out",
    epochs: Annotated[int, typer.Option(help="Epochs (cosine schedule over all of them).")] = 10,
    optimizer: Annotated[str, typer.Option(help="sgd (momentum 0.9) or adam (SR nets).")] = "sgd",
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 0.1,
    batch_size: Annotated[int, typer.Option(help="Global batch size (split over DDP ranks).")] = 256,
    weight_decay: Annotated[float, typer.Option(help="SGD weight decay.")] = 5e-4,
    eta: Annotated[float, typer.Option(help="AdderNet's adaptive-LR eta (per adder layer).")] = 0.2,
    adder_lr_scale: Annotated[float, typer.Option(help="LR multiplier of the adder weights only: keep 1 with SGD "
                                                       "(the adaptive LR sizes their steps); with Adam about 50 "
                                                       "(measured on SR nets, see the README).")] = 1.0,
    kd_alpha: Annotated[float, typer.Option(help="Weight of the distillation term (0: none).")] = 0.5,
    kd_temperature: Annotated[float, typer.Option(help="Distillation temperature.")] = 4.0,
    input_shape: InputShape = None, arch: Arch = None, trust: Trust = False,
    convert: Annotated[bool, typer.Option(help="Convert a CNN MODEL to an AdderNet first.")] = True,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out exactly where it stopped.")] = False,
    seed: Annotated[int, typer.Option(help="Training seed (data order, augmentation, init).")] = 0,
    split_seed: Annotated[int, typer.Option(help="Seed of the train/val/test split.")] = 0,
    device: Annotated[str, typer.Option(help="auto (CUDA if present), cpu, cuda, cuda:N.")] = "auto",
    amp: Annotated[str, typer.Option(help="Mixed precision on GPU: auto (bf16, else fp16), bf16, fp16, off.")] = "auto",
    limit: Annotated[Optional[int], typer.Option(help="Use at most N samples per split (smoke runs).")] = None,
    num_workers: Annotated[int, typer.Option("--workers", help="DataLoader worker processes.")] = 0,
    quiet: Annotated[bool, typer.Option(help="No progress bars or per-epoch lines.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a finished run in --out (refused otherwise).")] = False,
    tensorboard: Annotated[Optional[str], typer.Option(help="Also log each epoch to TensorBoard in this directory "
                                                            "(needs adderconv\\[tensorboard]).")] = None,
) -> None:
    """Fine-tune an AdderNet (converting a CNN first) with AdderNet's training rules, KD, checkpoints and DDP."""
    args = dict(locals())           # each option once, under its field's name (tests/test_cli_options.py)
    from rich.console import Console

    from adderconv.training.command import FinetuneOptions, run_finetune
    from adderconv.training.settings import TrainSettings

    train = _take(TrainSettings, args)
    opts = FinetuneOptions(**args | {"input_shape": parse_shape(input_shape)}, train=train)
    raise typer.Exit(run_finetune(opts, Console()))


@app.command("export")
def export_cmd(
    model: ModelArg,
    output: Annotated[str, typer.Option("--output", "-o", help="The .onnx file to write.")],
    input_shape: InputShape = None, arch: Arch = None, trust: Trust = False,
    opset: Annotated[Optional[int], typer.Option(help="Default-domain ONNX opset (>= 13; default: torch's).")] = None,
    static_batch: Annotated[bool, typer.Option(help="Fix the batch size (default: dynamic).")] = False,
) -> None:
    """Export to ONNX that plain onnxruntime runs: one ai.adderconv::AdderConv2d node per adder layer."""
    from adderconv.converters.onnx_export import export_onnx, resolve_input_shape
    from adderconv.converters.onnx_verify import load_seeded

    shape = resolve_input_shape(model, arch, parse_shape(input_shape))
    info = export_onnx(load_seeded(model, arch, trust), output, shape, opset=opset, dynamic_batch=not static_batch)
    typer.echo(f"wrote {info.path}: {len(info.adder_nodes)} AdderConv2d nodes, {len(info.overloads)} kernel "
               f"configurations, opset {info.opset}, input {info.input_names[0]} "
               f"{'(dynamic batch)' if not static_batch else tuple(shape)}")


@app.command("verify")
def verify_cmd(
    onnx_file: Annotated[str, typer.Argument(help="The .onnx file to check.")],
    against: Annotated[str, typer.Option("--against", help="The PyTorch model it came from (as for export).")],
    input_shape: InputShape = None, arch: Arch = None, trust: Trust = False,
    tolerance: Annotated[float, typer.Option(help="Largest max|onnx - torch| / max|torch| that passes.")] = 1e-4,
) -> None:
    """Run onnxruntime and PyTorch on the same random inputs; exit 1 if the relative error exceeds --tolerance."""
    from adderconv.converters.onnx_verify import load_seeded, verify_onnx

    result = verify_onnx(onnx_file, load_seeded(against, arch, trust), parse_shape(input_shape), tolerance=tolerance)
    for c in result.checks:
        typer.echo(f"batch {c.batch}: rel error {c.rel_error:.2e} vs PyTorch float64, {c.rel_error_fp32:.2e} vs "
                   f"float32 (PyTorch float32 vs float64: {c.torch_fp32_error:.2e})")
    for c in result.integer:   # a quantised model: its integer core, exactly
        typer.echo(f"batch {c.batch}: {c.nodes} integer adder nodes, int32 sums different {c.sums_different} of "
                   f"{c.sums_checked}, uint8 codes different {c.codes_different} of {c.codes_checked}")
    typer.echo(f"max relative error {result.max_rel_error:.2e}, tolerance {tolerance:g}: "
               f"{'OK' if result.ok else 'FAILED'}")
    raise typer.Exit(0 if result.ok else 1)


@app.command("bench")
def bench_cmd(
    nets: Annotated[str, typer.Option(help="Comma-separated layer sets: resnet20, resnet50.")] = "resnet20,resnet50",
    batch: Annotated[int, typer.Option(help="ResNet-20 batch.")] = 64,
    batch50: Annotated[int, typer.Option(help="ResNet-50 batch.")] = 8,
    threads: Annotated[int, typer.Option(help="CPU threads.")] = 2,
    rounds: Annotated[int, typer.Option(help="Interleaved timing rounds (the minimum is kept).")] = 5,
    memory: Annotated[bool, typer.Option(help="Also measure peak memory (one child process per call).")] = True,
    json_path: Annotated[Optional[str], typer.Option("--json", help="Write the results as JSON.")] = None,
) -> None:
    """Time the adder kernels against nn.Conv2d and AdderNet's reference unfold; peak memory of each."""
    from adderconv.kernels.benchmark import machine, render, suite

    wanted = {"resnet20": batch, "resnet50": batch50}
    names = [n.strip() for n in nets.split(",") if n.strip()]
    if unknown := [n for n in names if n not in wanted]:
        raise AdderconvError(f"--nets: unknown {unknown}; expected some of {sorted(wanted)}")
    result: dict = {"benchmark": "kernels", "tables": {}}
    for net, rows in suite({n: wanted[n] for n in names}, rounds=rounds, memory=memory, threads=threads):
        result["tables"][net], result["machine"] = rows, machine()
        typer.echo(f"\n{net}\n{render(rows, result['machine'])}")
    if json_path:
        from adderconv.io import write_json

        write_json(json_path, result)


@app.command("quantize")
def quantize_cmd(
    model: ModelArg,
    output: Annotated[str, typer.Option("--output", "-o", help="The .safetensors file to write.")],
    data: Annotated[str, typer.Option(
        help="Data source as for finetune: calibrate on train, evaluate on test.")] = "digits",
    input_shape: InputShape = None, arch: Arch = None, trust: Trust = False,
    method: Annotated[str, typer.Option(help="Calibration: minmax, percentile or mse.")] = "percentile",
    percentile: Annotated[float, typer.Option(help="Input percentile kept by --method percentile.")] = 99.99,
    calib_batches: Annotated[int, typer.Option(help="Training batches to calibrate on.")] = 8,
    batch_size: Annotated[int, typer.Option(help="Batch size for calibration and evaluation.")] = 64,
    split_seed: Annotated[int, typer.Option(help="Seed of the train/val/test split (as for finetune).")] = 0,
    limit: Annotated[Optional[int], typer.Option(help="Use at most N samples per split (smoke runs).")] = None,
    json_path: Annotated[Optional[str], typer.Option("--json", help="Write the result as JSON.")] = None,
) -> None:
    """Quantise an adder network to int8 (SAD kernels); compare float and int8 accuracy and energy."""
    from rich.console import Console

    from adderconv.quant.command import QuantizeOptions, run_quantize

    opts = QuantizeOptions(model=model, output=output, data=data, input_shape=parse_shape(input_shape), arch=arch,
                           trust=trust, method=method, percentile=percentile, calib_batches=calib_batches,
                           batch_size=batch_size, split_seed=split_seed, limit=limit, json_path=json_path)
    raise typer.Exit(run_quantize(opts, Console()))


def main() -> None:
    """Entry point: the one error boundary that turns user mistakes into one line and exit code 2.

    Typer's standalone mode already handles usage errors (exit 2), --help and ``typer.Exit``; what reaches
    this boundary is our own error type, and bugs, whose traceback is kept.
    """
    try:
        app()
    except AdderconvError as e:
        if os.environ.get("ADDERCONV_DEBUG"):
            raise
        from adderconv.untrusted import plain    # a message can quote a file's names: one line, no escapes

        typer.echo(f"error: {as_flags(plain(e))}", err=True)
        sys.exit(e.exit_code)


def _flags() -> dict[str, str]:
    """Each command parameter's name -> its long flag (``input_shape`` -> ``--input-shape``), read from the app."""
    import typer.main

    flags: dict[str, str] = {}
    group = typer.main.get_command(app)
    for cmd in getattr(group, "commands", {}).values():
        for p in cmd.params:
            longs = [o for o in getattr(p, "opts", ()) if o.startswith("--")]
            if longs and p.name:
                flags.setdefault(p.name, longs[0])
    return flags


def as_flags(message: str) -> str:
    """A library message with its backticked parameter names (```arch```) written as the CLI's flags (``--arch``)."""
    import re

    flags = _flags()
    return re.sub(r"`(\w+)`", lambda m: flags.get(m[1], m[1]), message)


if __name__ == "__main__":
    main()
