"""``adderconv finetune`` end to end on a tiny subset: a CNN file is converted, distilled from, and compared."""
import json

import pytest
from typer.testing import CliRunner

from adderconv import get_model
from adderconv.cli import app


@pytest.fixture()
def cnn_file(tmp_path):
    from adderconv.converters import save_converted
    path = tmp_path / "lenet.safetensors"
    save_converted(get_model("lenet5_bn"), path, arch="lenet5_bn")      # a plain CNN with its arch recorded
    return path


def test_finetune_converts_a_cnn_and_distils_from_it(tmp_path, cnn_file):
    out = tmp_path / "run"
    args = ["finetune", str(cnn_file), "--epochs", "1", "--limit", "64", "--batch-size", "32", "-o", str(out),
            "--quiet"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "converted with the default policy" in res.output and "teacher: the original CNN" in res.output
    assert "64 train / 64 val / 64 test" in res.output and "test acc" in res.output
    result = json.loads((out / "result.json").read_text())
    assert result["teacher_test"] is not None and result["settings"]["teacher"] is True
    energy = result["energy"]
    assert energy["available"] and energy["student"]["mul"] < energy["teacher"]["mul"]
    # The trained file loads back as the converted architecture, through the safe loader.
    from adderconv import load_model
    from adderconv.adaptive_lr import adder_weights
    assert adder_weights(load_model(out / "model.safetensors"))
    # --resume of a finished run only re-evaluates; a wrong source is one clear error line.
    again = CliRunner().invoke(app, args + ["--resume"])
    assert again.exit_code == 0, again.output


def test_finetune_bad_data_source_is_a_usage_error(tmp_path):
    from adderconv.errors import AdderconvError
    res = CliRunner().invoke(app, ["finetune", "lenet5_bn_adder", "--data", str(tmp_path / "missing"), "-o",
                                   str(tmp_path / "o")])
    assert isinstance(res.exception, AdderconvError) and "not 'digits'" in str(res.exception)


def test_finetune_adder_lr_scale_reaches_the_run(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["finetune", "lenet5_bn_adder", "--epochs", "1", "--limit", "64", "--batch-size",
                                   "32", "--optimizer", "adam", "--lr", "1e-3", "--adder-lr-scale", "50", "-o",
                                   str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "result.json").read_text())["settings"]["adder_lr_scale"] == 50.0
    bad = CliRunner().invoke(app, ["finetune", "lenet5_bn_adder", "--adder-lr-scale", "0", "-o", str(tmp_path / "b")])
    assert "adder_lr_scale > 0" in str(bad.exception)
