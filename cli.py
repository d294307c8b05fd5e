"""The ``adderconv`` command line: a thin Typer app; every command is one call into the library.

One pattern for every command: its options are a keyword-only dataclass in the library, its body a
``run_x(options, out) -> exit code`` that writes through one :class:`adderconv.output.Output` (results on stdout,
notes on stderr); the function here only turns flags into that dataclass. Shared option types are defined once
below (``--input-shape``, ``--output/-o``, the conversion policy's group), and every option with a closed set of
values takes it from :mod:`adderconv.choices`, the tuples the library checks with, so help and checks cannot
drift. User mistakes raise :class:`AdderconvError` and come out as one line on stderr with exit code 2 (set
``ADDERCONV_DEBUG=1`` for the traceback).
"""
from __future__ import annotations

import functools
import inspect
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Optional

import typer

from adderconv import choices as C   # torch-free, as is `import adderconv`: parsing and --help load no torch
from adderconv.errors import AdderconvError, check_choice, first_line

if __name__ not in ("adderconv.cli", "__main__"):   # a checkout's top level is on sys.path: no second copy
    raise ImportError(f"import adderconv.cli, not {__name__}")

__all__ = ["app", "main", "parse_shape", "as_flags"]

app = typer.Typer(
    name="adderconv",
    help="Turn CNNs into multiplication-free AdderNets, fine-tune them, and measure what that saves.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """'1,3,224,224' or '1x3x224x224' -> (1, 3, 224, 224): a MODEL's whole input, batch first (N, C, H, W); a
    command that loads data takes the sample shape from its last three dimensions (adderconv.io.sample_shape)."""
    if text is None:
        return None
    parts = text.replace("x", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts if p.strip())
    except ValueError:
        raise AdderconvError(f"`input_shape` must be integers like 1,3,224,224, got {text!r}") from None
    if len(shape) < 2 or min(shape) < 1:
        raise AdderconvError(f"`input_shape` needs at least (batch, channels), all positive, got {text!r}")
    if math.prod(shape) > 2**63 - 1:   # torch sizes are int64
        raise AdderconvError(f"`input_shape` {text!r} has more elements than a tensor can hold (2^63 - 1)")
    return shape


def _choice(flag: str, choices: Sequence[str], help: str, what: str | None = None, name: str | None = None) -> Any:
    """An option that takes one of ``choices`` (a tuple of :mod:`adderconv.choices`): help lists them, and a
    wrong value is refused at parsing, before any import, with the library's own message (:func:`check_choice`
    on parameter ``name``, by default the flag's)."""
    name = name or flag.lstrip("-").replace("-", "_")
    return typer.Option(flag, parser=lambda v: check_choice(name, v, choices, what),
                        metavar="[" + "|".join(choices) + "]", help=f"{help}.")


# Shared option types: one definition, the same spelling and help in every command.
_MODEL_HELP = "Zoo name, .safetensors/.pt state dict (+ --arch), or a pickled model with --trust"
ModelArg = Annotated[str, typer.Argument(help=f"{_MODEL_HELP}, or .onnx.")]
TorchModelArg = Annotated[str, typer.Argument(help=f"{_MODEL_HELP} (a PyTorch model: not .onnx).")]
InputShape = Annotated[Optional[str], typer.Option("--input-shape", "-s", help="The model's input shape, batch "
                                                   "first, e.g. 1,3,224,224 (zoo models have a default).")]
Arch = Annotated[Optional[str], typer.Option("--arch", help="Architecture for a state dict: zoo name, torchvision:NAME "
                                                            "or module:factory.")]
Trust = Annotated[bool, typer.Option("--trust", help="Allow loading pickles/TorchScript/.pt2 (they can run code).")]
Bits = Annotated[int, typer.Option("--bits", help="Code width, 4..8: codes on 0..2^bits-1 (the uint8 SAD kernels "
                                                    "serve every width).")]
Groups = Annotated[int, typer.Option("--groups", help="Grids per layer: output channels grouped by weight range, "
                                                      "each group its own scale (the input requantised per group).")]
Data = Annotated[str, typer.Option("--data", help="Data: digits (built in), fashion-mnist (Debian's "
                                  "dataset-fashion-mnist package), mnist:DIR (idx files, .gz or not), cifar10:DIR, "
                                  "imagefolder:DIR, sr:DIR, sr:skimage, or a directory of one of those. Train/val "
                                  "split by --split-seed; test is the source's own test split where it has one.")]
JsonPath = Annotated[Optional[str], typer.Option("--json", help="Write the result as JSON.")]


def _output(help: str) -> Any:
    return typer.Option("--output", "-o", help=help)


# The conversion policy, one group of options for every command that converts (convert, finetune).
_POLICY = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=default) for
           name, ann, default in [
    ("keep_first", Annotated[bool, typer.Option("--keep-first/--convert-first",
                                                help="Keep the first multiplicative layer.")], True),
    ("keep_last", Annotated[bool, typer.Option("--keep-last/--convert-last",
                                               help="Keep the last multiplicative layer.")], True),
    ("include", Annotated[Optional[list[str]], typer.Option(
        help="Convert only layers matching this glob (repeatable).")], None),
    ("exclude", Annotated[Optional[list[str]], typer.Option(help="Keep layers matching this glob (repeatable).")],
     None),
    ("layer_type", Annotated[Optional[list[str]], typer.Option(
        "--type", help="Only these types, e.g. Conv2d (repeatable).")], None),
    ("min_channels", Annotated[int, typer.Option(help="Keep layers with fewer input or output channels.")], 0),
    ("linear", Annotated[bool, typer.Option("--linear/--no-linear", help="Convert nn.Linear layers too.")], False),
    ("skip_depthwise", Annotated[bool, typer.Option(help="Keep depthwise convolutions.")], False),
    ("insert_bn", Annotated[bool, typer.Option("--insert-bn/--no-insert-bn",
                                               help="Add BatchNorm after adders that lack it.")], True),
    ("addersr", Annotated[bool, typer.Option(
        help="AdderSR preset: self-shortcut where shapes match + power activation.")], False),
    ("weight_init", Annotated[str, _choice("--weight-init", C.WEIGHT_INITS, "How converted weights start: the "
                                           "conv's, rescaled to unit std, or N(0,1)", "weight init")], "copy"),
]]


def _policy(*, keep_first: bool, keep_last: bool, include: list[str] | None, exclude: list[str] | None,
            layer_type: list[str] | None, min_channels: int, linear: bool, skip_depthwise: bool, insert_bn: bool,
            addersr: bool, weight_init: str) -> Any:
    from adderconv.converters.policy import Policy

    return Policy(keep_first=keep_first, keep_last=keep_last, include=tuple(include or ()),
                  exclude=tuple(exclude or ()), types=tuple(layer_type or ()), min_channels=min_channels,
                  convert_linear=linear, skip_depthwise=skip_depthwise, insert_bn=insert_bn, shortcut=addersr,
                  power=addersr, weight_init=weight_init)


def _policy_options(**defaults: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the conversion policy's options (with these ``defaults``) to a command; it receives them built into
    one ``policy`` argument (a :class:`~adderconv.converters.policy.Policy`)."""
    def add(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != "policy"]
        group = [p.replace(default=defaults.get(p.name, p.default)) for p in _POLICY]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            policy = _policy(**{p.name: kwargs.pop(p.name) for p in group})
            return fn(**kwargs, policy=policy)

        command.__signature__ = sig.replace(parameters=own + group)   # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in own + group}
        return command
    return add


def _out() -> Any:
    from adderconv.output import Output

    return Output.cli()


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
    from adderconv.zoo.command import ZooOptions, run_zoo

    raise typer.Exit(run_zoo(ZooOptions(), _out()))


@app.command("build-kernels")
def build_kernels_cmd(
    kernels: Annotated[Optional[list[str]], _choice("--kernel", C.KERNEL_BUILDS, "Only this kernel (repeatable; "
                                                    "default: all)", "kernel", name="kernels")] = None,
    rebuild: Annotated[bool, typer.Option(help="Compile even what the cache already holds.")] = False,
) -> None:
    """Compile the C++ kernels now (Docker image, CI cache), so no later command waits for a compiler."""
    from adderconv.kernels.command import BuildKernelsOptions, run_build_kernels

    raise typer.Exit(run_build_kernels(BuildKernelsOptions(kernels=tuple(kernels or ()), rebuild=rebuild), _out()))


# --- commands of the other modules register below this line (keep each 10-25 lines) ---


@app.command("convert")
@_policy_options()
def convert_cmd(
    model: ModelArg,
    output: Annotated[str, _output("File to write (safetensors with the recipe).")],
    input_shape: InputShape = None, arch: Arch = None, trust: Trust = False,
    fmt: Annotated[str, _choice("--format", C.SAVE_FORMATS, "How to save", "save format", "fmt")] = "safetensors",
    strategy: Annotated[str, _choice("--strategy", C.STRATEGIES, "swap modules, or rewrite the torch.export "
                                     "graph (functional convs)", "conversion strategy")] = "swap",
    precision: Annotated[str, _choice("--precision", C.PRECISIONS, "Precision for the energy columns")] = "fp32",
    html: Annotated[Optional[str], typer.Option(help="Write the before/after energy report as HTML "
                                                     "(needs adderconv\\[report]).")] = None,
    policy: Any = None,
) -> None:
    """Convert a CNN's convolutions into adder layers by policy; print what changed and what it saves."""
    from adderconv.converters.command import ConvertOptions, run_convert

    opts = ConvertOptions(model=model, output=output, policy=policy, input_shape=parse_shape(input_shape), arch=arch,
                          trust=trust, fmt=fmt, strategy=strategy, precision=precision, html=html)
    raise typer.Exit(run_convert(opts, _out()))


@app.command("graph")
def graph_cmd(
    model: TorchModelArg,
    output: Annotated[str, _output("GraphML file to write.")] = "graph.graphml",
    input_shape: InputShape = None, arch: Arch = None, trust: Trust = False,
) -> None:
    """Write the traced model as a networkx graph (GraphML): one node per op with type, shapes and counts."""
    from adderconv.converters.command import GraphOptions, run_graph

    opts = GraphOptions(model=model, output=output, input_shape=parse_shape(input_shape), arch=arch, trust=trust)
    raise typer.Exit(run_graph(opts, _out()))


@app.command("energy")
def energy_cmd(
    model: Annotated[Optional[str], typer.Argument(help="Zoo name, .onnx, state dict (+ --arch) or, with --trust, a "
                                                        "pickle. None: ResNet-20 CNN vs its AdderNet.")] = None,
    input_shape: InputShape = None, arch: Arch = None, trust: Trust = False,
    precision: Annotated[str, _choice("--precision", C.PRECISIONS, "Operand precision")] = "fp32",
    layer_precision: Annotated[Optional[list[str]], typer.Option(help="Per-layer precision, PATTERN=PREC "
                                                                      "(glob over layer names); repeatable.")] = None,
    table: Annotated[Optional[str], typer.Option(help="Price list TOML (default: Horowitz 45 nm).")] = None,
    memory: Annotated[Optional[str], typer.Option(
        help="Add memory energy at sram_8kb|sram_32kb|sram_1mb|dram.")] = None,
    energy_scale: Annotated[float, typer.Option(help="Multiply every price (technology-node scaling).")] = 1.0,
    compare: Annotated[Optional[str], typer.Option(help="A second model to compare against (e.g. the CNN).")] = None,
    all_layers: Annotated[bool, typer.Option(help="List every layer in execution order.")] = False,
    top: Annotated[int, typer.Option(help="Layers shown, most energy first.")] = 10,
    tree: Annotated[bool, typer.Option(help="Print the module tree: parameters, MACs, mul, add and energy of every "
                                            "module (torchinfo style).")] = False,
    depth: Annotated[int, typer.Option(help="With --tree: the deepest level shown (0: the whole model only).")] = 3,
    json_path: Annotated[Optional[str], typer.Option("--json", help="Write the report as JSON.")] = None,
    markdown_path: Annotated[Optional[str], typer.Option("--markdown", help="Write a Markdown report (PR "
                                                                             "comments).")] = None,
    html_path: Annotated[Optional[str], typer.Option("--html", help="Write a self-contained HTML report with "
                                                                    "charts (needs adderconv\\[report]).")] = None,
    baseline: Annotated[Optional[str], typer.Option(help="A previous --json report; exit 1 if totals grew.")] = None,
    max_increase: Annotated[str, typer.Option(help="Allowed growth over --baseline, e.g. 1%.")] = "1%",
    strict: Annotated[bool, typer.Option(help="Exit 1 if any operator could not be counted.")] = False,
    capture: Annotated[str, _choice("--capture", C.CAPTURES, "How ops are seen: fake tensors (nothing runs), "
                                    "running the model, or the TorchScript tracer")] = "dispatch",
    training: Annotated[bool, typer.Option(help="Count a training step: forward, backward, optimizer "
                                                "update.")] = False,
    optimizer: Annotated[str, _choice("--optimizer", (*C.COUNT_OPTIMIZERS, "none"), "With --training: the "
                                      "update counted", "optimizer")] = "sgd",
    pricing: Annotated[str, _choice("--pricing", C.PRICINGS, "hardware: accumulations at the accumulator's width "
                                    "(int8 -> int32, fp16/bf16 -> fp32); papers: everything at the operand "
                                    "precision, as AdderNet's figures", "pricing convention")] = "hardware",
    accumulator: Annotated[Optional[str], _choice("--accumulator", C.PRECISIONS, "Accumulator precision for every "
                                                  "layer (default: the hardware one for each operand precision)",
                                                  "precision")] = None,
    engine: Annotated[str, _choice("--engine", C.ENGINES, "arithmetic, or zigzag: data movement through an "
                                   "accelerator's memory hierarchy (needs adderconv\\[zigzag])",
                                   "energy engine")] = "arithmetic",
    accelerator: Annotated[str, typer.Option(help="With --engine zigzag: tpu_like, eyeriss_like, ... or a ZigZag "
                                                  "accelerator YAML file.")] = "tpu_like",
    same_area: Annotated[bool, typer.Option(help="With --engine zigzag: also run an adder net on an array with as "
                                                 "many more units as its smaller SAD units buy.")] = False,
) -> None:
    """Count multiplications and additions per layer, price them at 45 nm, report, and gate CI."""
    from adderconv.analysis.command import EnergyOptions, parse_layer_precision, run_energy

    opts = EnergyOptions(
        model=model, input_shape=parse_shape(input_shape), arch=arch, trust=trust, precision=precision,
        layer_precision=parse_layer_precision(layer_precision or []), table=table, memory=memory,
        energy_scale=energy_scale, compare=compare, all_layers=all_layers, top=top, tree=tree, depth=depth,
        json_path=json_path,
        markdown_path=markdown_path, html_path=html_path, baseline=baseline, max_increase=max_increase,
        strict=strict, capture=capture, training=training, optimizer=None if optimizer == "none" else optimizer,
        pricing=pricing, accumulator=accumulator, engine=engine, accelerator=accelerator, same_area=same_area)
    raise typer.Exit(run_energy(opts, _out()))


@app.command("finetune")
@_policy_options(weight_init="copy_rescaled")
def finetune_cmd(
    model: TorchModelArg,
    data: Data = "digits",
    teacher: Annotated[Optional[str], typer.Option(help="Teacher for distillation (default: the original CNN "
                                                        "when MODEL is a CNN file, converted first).")] = None,
    output: Annotated[str, _output("Output directory (checkpoint, metrics, model).")] = "finetune-out",
    epochs: Annotated[int, typer.Option(help="Epochs (cosine schedule over all of them).")] = 10,
    optimizer: Annotated[str, _choice("--optimizer", C.TRAIN_OPTIMIZERS, "sgd (momentum 0.9), or adam (SR "
                                      "nets)", "optimizer")] = "sgd",
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 0.1,
    batch_size: Annotated[int, typer.Option(help="Global batch size (split over DDP ranks).")] = 256,
    weight_decay: Annotated[float, typer.Option(help="SGD weight decay.")] = 5e-4,
    eta: Annotated[float, typer.Option(help="AdderNet's adaptive-LR eta (per adder layer).")] = 0.2,
    adder_lr_scale: Annotated[float, typer.Option(help="LR multiplier of the adder weights only: keep 1 with SGD "
                                                       "(the adaptive LR sizes their steps); with Adam about 50 "
                                                       "(measured on SR nets, see the README).")] = 1.0,
    kd_alpha: Annotated[float, typer.Option(help="Weight of the distillation term (0: none).")] = 0.5,
    kd_temperature: Annotated[float, typer.Option(help="Distillation temperature.")] = 4.0,
    bits: Annotated[Optional[int], typer.Option("--bits", help="Train through int<bits> fake quantisation (4..8) "
                                                "and write the quantised model (as quantize --bits).")] = None,
    groups: Groups = 1,
    input_shape: InputShape = None, arch: Arch = None, trust: Trust = False,
    convert: Annotated[bool, typer.Option(help="Convert a CNN MODEL to an AdderNet first (by the policy "
                                               "options).")] = True,
    resume: Annotated[bool, typer.Option(help="Continue the run in --output exactly where it stopped.")] = False,
    seed: Annotated[int, typer.Option(help="Training seed (data order, augmentation, init).")] = 0,
    split_seed: Annotated[int, typer.Option(help="Seed of the train/val/test split.")] = 0,
    device: Annotated[str, typer.Option(help="auto (CUDA if present), cpu, cuda, cuda:N.")] = "auto",
    amp: Annotated[str, _choice("--amp", C.AMP_MODES, "Mixed precision on GPU: auto is bf16, else fp16",
                                "mixed-precision mode")] = "auto",
    limit: Annotated[Optional[int], typer.Option(help="Use at most N samples per split (smoke runs).")] = None,
    num_workers: Annotated[int, typer.Option("--workers", help="DataLoader worker processes.")] = 0,
    quiet: Annotated[bool, typer.Option(help="No progress bars or per-epoch lines.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a finished run in --output (refused otherwise).")] = False,
    tensorboard: Annotated[Optional[str], typer.Option(help="Also log each epoch to TensorBoard in this directory "
                                                            "(needs adderconv\\[tensorboard]).")] = None,
    policy: Any = None,
) -> None:
    """Fine-tune an AdderNet (converting a CNN first) with AdderNet's training rules, KD, checkpoints and DDP."""
    from adderconv.training.command import FinetuneOptions, run_finetune
    from adderconv.training.settings import TrainSettings

    train = TrainSettings(epochs=epochs, optimizer=optimizer, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
                          eta=eta, adder_lr_scale=adder_lr_scale, kd_alpha=kd_alpha, kd_temperature=kd_temperature,
                          seed=seed, device=device, amp=amp, num_workers=num_workers, bits=bits, groups=groups)
    opts = FinetuneOptions(model=model, data=data, teacher=teacher, output=output, input_shape=parse_shape(input_shape),
                           arch=arch, trust=trust, convert=convert, policy=policy, resume=resume,
                           split_seed=split_seed, limit=limit, quiet=quiet, tensorboard=tensorboard,
                           overwrite=overwrite, train=train)
    raise typer.Exit(run_finetune(opts, _out()))


@app.command("export")
def export_cmd(
    model: TorchModelArg,
    output: Annotated[str, _output("The .onnx file to write.")],
    input_shape: InputShape = None, arch: Arch = None, trust: Trust = False,
    opset: Annotated[Optional[int], typer.Option(help="Default-domain ONNX opset (>= 13; default: torch's).")] = None,
    static_batch: Annotated[bool, typer.Option(help="Fix the batch size (default: dynamic).")] = False,
) -> None:
    """Export to ONNX that plain onnxruntime runs: one ai.adderconv::AdderConv2d node per adder layer."""
    from adderconv.converters.command import ExportOptions, run_export

    opts = ExportOptions(model=model, output=output, input_shape=parse_shape(input_shape), arch=arch, trust=trust,
                         opset=opset, static_batch=static_batch)
    raise typer.Exit(run_export(opts, _out()))


@app.command("verify")
def verify_cmd(
    onnx_file: Annotated[str, typer.Argument(help="The .onnx file to check.")],
    against: Annotated[str, typer.Option("--against", help="The PyTorch model it came from (as for export).")],
    input_shape: InputShape = None, arch: Arch = None, trust: Trust = False,
    tolerance: Annotated[float, typer.Option(help="Largest max|onnx - torch| / max|torch| that passes.")] = 1e-4,
) -> None:
    """Run onnxruntime and PyTorch on the same random inputs; exit 1 if the relative error exceeds --tolerance."""
    from adderconv.converters.command import VerifyOptions, run_verify

    opts = VerifyOptions(onnx_file=onnx_file, against=against, input_shape=parse_shape(input_shape), arch=arch,
                         trust=trust, tolerance=tolerance)
    raise typer.Exit(run_verify(opts, _out()))


@app.command("bench")
def bench_cmd(
    nets: Annotated[str, typer.Option(help=f"Comma-separated layer sets ({', '.join(C.BENCH_NETS)}).")]
    = ",".join(C.BENCH_NETS),
    batch: Annotated[int, typer.Option(help="ResNet-20 batch.")] = 64,
    batch50: Annotated[int, typer.Option(help="ResNet-50 batch.")] = 8,
    threads: Annotated[int, typer.Option(help="CPU threads.")] = 2,
    rounds: Annotated[int, typer.Option(help="Interleaved timing rounds (the minimum is kept).")] = 5,
    memory: Annotated[bool, typer.Option(help="Also measure peak memory (one child process per call).")] = True,
    json_path: JsonPath = None,
) -> None:
    """Time the adder kernels against nn.Conv2d and AdderNet's reference unfold; peak memory of each."""
    from adderconv.kernels.benchmark import BenchOptions, run_bench

    opts = BenchOptions(nets=tuple(n.strip() for n in nets.split(",") if n.strip()), batch=batch, batch50=batch50,
                        threads=threads, rounds=rounds, memory=memory, json_path=json_path)
    raise typer.Exit(run_bench(opts, _out()))


@app.command("quantize")
def quantize_cmd(
    model: TorchModelArg,
    output: Annotated[str, _output("The .safetensors file to write.")],
    data: Data = "digits",
    input_shape: InputShape = None, arch: Arch = None, trust: Trust = False,
    bits: Bits = 8,
    groups: Groups = 1,
    method: Annotated[str, _choice("--method", C.CALIBRATION_METHODS, "Calibration",
                                   "calibration method")] = "percentile",
    percentile: Annotated[float, typer.Option(help="Input percentile kept by --method percentile.")] = 99.99,
    calib_batches: Annotated[int, typer.Option(help="Training batches to calibrate on.")] = 8,
    batch_size: Annotated[int, typer.Option(help="Batch size for calibration and evaluation.")] = 64,
    split_seed: Annotated[int, typer.Option(help="Seed of the train/val/test split (as for finetune).")] = 0,
    limit: Annotated[Optional[int], typer.Option(help="Use at most N samples per split (smoke runs).")] = None,
    json_path: JsonPath = None,
) -> None:
    """Quantise an adder network to 4..8-bit codes (SAD kernels); compare float and quantised accuracy and energy."""
    from adderconv.quant.command import QuantizeOptions, run_quantize

    opts = QuantizeOptions(model=model, output=output, data=data, input_shape=parse_shape(input_shape), arch=arch,
                           trust=trust, bits=bits, groups=groups, method=method, percentile=percentile,
                           calib_batches=calib_batches, batch_size=batch_size, split_seed=split_seed, limit=limit,
                           json_path=json_path)
    raise typer.Exit(run_quantize(opts, _out()))


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

        message = plain(e).strip() or f"{first_line(e)} (no message; ADDERCONV_DEBUG=1 shows the traceback)"
        typer.echo(f"error: {as_flags(message)}", err=True)
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
