"""Each command's options are declared once: the Typer signature and the options dataclass name the same things."""
import dataclasses

import typer.main

from adderconv.cli import app
from adderconv.analysis.command import EnergyOptions
from adderconv.converters.command import ConvertOptions
from adderconv.converters.policy import Policy
from adderconv.training.command import FinetuneOptions
from adderconv.training.settings import TrainSettings

# Recipe fields a Python caller can set that the command line does not offer (with the reason).
LIBRARY_ONLY = {
    "momentum": "fixed at the reference recipe's 0.9 on the command line",
    "eta_relative": "an ablation (benchmarks/accuracy.py), not a user setting",
    "warmup_epochs": "the reference recipe has none",
    "recalibrate": "always on for a command-line run",
    "calib_batches": "follows recalibrate",
}


def _params(command: str) -> set[str]:
    return {p.name for p in typer.main.get_command(app).commands[command].params}


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_finetune_flags_are_the_options_and_recipe_fields():
    expected = (_fields(FinetuneOptions) - {"train"}) | (_fields(TrainSettings) - set(LIBRARY_ONLY))
    assert _params("finetune") == expected


def test_convert_flags_are_the_options_fields_plus_the_policy():
    policy_flags = _params("convert") - _fields(ConvertOptions)
    assert _fields(ConvertOptions) - {"policy"} <= _params("convert")
    # The policy's flags: its own field names, with three spelled for the command line.
    spelled = {"layer_type": "types", "linear": "convert_linear", "addersr": "shortcut"}
    assert {spelled.get(p, p) for p in policy_flags} <= _fields(Policy)
    assert _fields(Policy) - {spelled.get(p, p) for p in policy_flags} == {"power"}   # set with shortcut by --addersr


def test_energy_flags_are_the_options_fields():
    assert _params("energy") == _fields(EnergyOptions)
