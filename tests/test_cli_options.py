"""Each command's options are declared once: the Typer signature and the options dataclass name the same things,
every options dataclass is built by keyword only, the output option has one spelling, and every option with a
closed set of values offers exactly the tuple the library checks with."""
import dataclasses

import pytest
import typer.main

from adderconv import choices
from adderconv.analysis.command import EnergyOptions
from adderconv.cli import app
from adderconv.converters.command import ConvertOptions, ExportOptions, GraphOptions, VerifyOptions
from adderconv.converters.policy import Policy
from adderconv.kernels.benchmark import BenchOptions
from adderconv.kernels.command import BuildKernelsOptions
from adderconv.quant.command import QuantizeOptions, QuantizeResult
from adderconv.training.command import FinetuneOptions
from adderconv.training.settings import TrainSettings
from adderconv.zoo.command import ZooOptions

# Recipe fields a Python caller can set that the command line does not offer (with the reason).
LIBRARY_ONLY = {
    "momentum": "fixed at the reference recipe's 0.9 on the command line",
    "eta_relative": "an ablation (benchmarks/accuracy.py), not a user setting",
    "warmup_epochs": "the reference recipe has none",
    "recalibrate": "always on for a command-line run",
    "calib_batches": "follows recalibrate",
}
# The policy group's flags, by the Policy field each sets (three are spelled for the command line; --addersr
# sets both shortcut and power).
POLICY_SPELLED = {"layer_type": "types", "linear": "convert_linear", "addersr": "shortcut"}
POLICY_FLAGS = {"keep_first", "keep_last", "include", "exclude", "layer_type", "min_channels", "linear",
                "skip_depthwise", "insert_bn", "addersr", "weight_init"}
# Commands whose flags are exactly their options dataclass's fields.
PLAIN = {"energy": EnergyOptions, "graph": GraphOptions, "export": ExportOptions, "verify": VerifyOptions,
         "bench": BenchOptions, "quantize": QuantizeOptions, "zoo": ZooOptions, "build-kernels": BuildKernelsOptions}
OPTIONS = [*PLAIN.values(), ConvertOptions, FinetuneOptions, QuantizeResult]


def _command(name: str):
    return typer.main.get_command(app).commands[name]


def _params(command: str) -> set[str]:
    return {p.name for p in _command(command).params}


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_every_command_is_covered():
    assert set(typer.main.get_command(app).commands) == {*PLAIN, "convert", "finetune"}


@pytest.mark.parametrize("command", sorted(PLAIN))
def test_flags_are_the_options_fields(command):
    assert _params(command) == _fields(PLAIN[command])


def test_finetune_flags_are_the_options_recipe_and_policy_fields():
    expected = (_fields(FinetuneOptions) - {"train", "policy"}) | (_fields(TrainSettings) - set(LIBRARY_ONLY))
    assert _params("finetune") == expected | POLICY_FLAGS


def test_convert_flags_are_the_options_fields_plus_the_policy():
    assert _params("convert") == (_fields(ConvertOptions) - {"policy"}) | POLICY_FLAGS


def test_the_policy_group_sets_every_policy_field():
    assert {POLICY_SPELLED.get(p, p) for p in POLICY_FLAGS} == _fields(Policy) - {"power"}


def test_the_policy_group_reads_the_same_in_convert_and_finetune():
    """One declaration: the same flags and help in both; only fine-tuning's weight-init default differs."""
    def group(command):
        return {p.name: (tuple(p.opts), tuple(p.secondary_opts), p.help, p.default)
                for p in _command(command).params if p.name in POLICY_FLAGS}

    convert, finetune = group("convert"), group("finetune")
    assert {k: v[:3] for k, v in convert.items()} == {k: v[:3] for k, v in finetune.items()}
    assert {k for k in convert if convert[k][3] != finetune[k][3]} == {"weight_init"}
    assert (convert["weight_init"][3], finetune["weight_init"][3]) == ("copy", "copy_rescaled")


@pytest.mark.parametrize("cls", OPTIONS, ids=lambda c: c.__name__)
def test_options_are_built_by_keyword_only(cls):
    required = [f for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    with pytest.raises(TypeError, match="positional"):
        cls(*["x"] * (len(required) + 1))


def test_the_output_option_is_spelled_once():
    for name, command in typer.main.get_command(app).commands.items():
        outs = [p for p in command.params if p.name == "output"]
        for p in outs:
            assert sorted(p.opts) == ["--output", "-o"], name
        assert not any("--out" in p.opts for p in command.params), name


CHOICES = {("energy", "precision"): choices.PRECISIONS, ("convert", "precision"): choices.PRECISIONS,
           ("energy", "accumulator"): choices.PRECISIONS, ("energy", "pricing"): choices.PRICINGS,
           ("energy", "engine"): choices.ENGINES, ("energy", "capture"): choices.CAPTURES,
           ("energy", "optimizer"): (*choices.COUNT_OPTIMIZERS, "none"),
           ("finetune", "optimizer"): choices.TRAIN_OPTIMIZERS, ("finetune", "amp"): choices.AMP_MODES,
           ("quantize", "method"): choices.CALIBRATION_METHODS, ("convert", "fmt"): choices.SAVE_FORMATS,
           ("convert", "strategy"): choices.STRATEGIES, ("convert", "weight_init"): choices.WEIGHT_INITS,
           ("finetune", "weight_init"): choices.WEIGHT_INITS}


REQUIRED = {"convert": ["lenet5_bn", "-o", "{t}/o.safetensors"], "quantize": ["lenet5_bn_adder", "-o",
                                                                                "{t}/q.safetensors"],
            "finetune": ["lenet5_bn_adder", "-o", "{t}/run"], "energy": ["lenet5_bn"]}


@pytest.mark.parametrize("command,name", list(CHOICES))
def test_choice_options_offer_the_library_tuple(command, name, run_cli, tmp_path):
    """Help shows the tuple; anything else is refused while parsing, in one line that lists the tuple, before any
    work (nothing is written)."""
    param = next(p for p in _command(command).params if p.name == name)
    assert param.metavar == "[" + "|".join(CHOICES[command, name]) + "]"
    flag = next(o for o in param.opts if o.startswith("--"))
    args = [a.format(t=tmp_path) for a in REQUIRED[command]]
    code, out, err = run_cli(command, *args, flag, "no-such-choice")
    assert code == 2 and err.startswith(f"error: {flag}: ") and len(err.strip().splitlines()) == 1, err
    assert "'no-such-choice'; choose one of " + ", ".join(CHOICES[command, name]) in err
    assert list(tmp_path.iterdir()) == []


def test_the_library_checks_with_the_same_tuples():
    """adderconv.choices is what the CLI offers; every library module that validates the same choice holds the
    same values (until they import the tuple from adderconv.choices themselves)."""
    from adderconv.analysis import capture, energy, tables, training
    from adderconv.converters import policy, save
    from adderconv.quant import scheme

    assert tables.PRECISIONS == choices.PRECISIONS and energy.PRICINGS == choices.PRICINGS
    assert energy.ENGINES == choices.ENGINES and tuple(capture.CAPTURES) == choices.CAPTURES
    assert tuple(training.OPTIMIZERS) == choices.COUNT_OPTIMIZERS and scheme.METHODS == choices.CALIBRATION_METHODS
    assert save.FORMATS == choices.SAVE_FORMATS and policy.WEIGHT_INITS == choices.WEIGHT_INITS
    for optimizer in ("sgd", "adam", "rmsprop"):   # fine-tuning's check agrees with the tuple
        ok = optimizer in choices.TRAIN_OPTIMIZERS
        try:
            TrainSettings(optimizer=optimizer).check()
            assert ok, optimizer
        except Exception:
            assert not ok, optimizer
