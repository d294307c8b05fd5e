"""``adderconv finetune`` end to end on a tiny subset: a CNN file is converted, distilled from, and compared."""
import json

import pytest

from adderconv import get_model


@pytest.fixture()
def cnn_file(tmp_path):
    from adderconv.converters import save_converted
    path = tmp_path / "lenet.safetensors"
    save_converted(get_model("lenet5_bn"), path, arch="lenet5_bn")      # a plain CNN with its arch recorded
    return path


def test_finetune_converts_a_cnn_and_distils_from_it(tmp_path, cnn_file, run_cli):
    out = tmp_path / "run"
    args = ["finetune", str(cnn_file), "--epochs", "1", "--limit", "64", "--batch-size", "32", "-o", str(out),
            "--quiet"]
    code, output, err = run_cli(*args)
    assert code == 0, err
    flat = " ".join(output.split())
    assert "converted with the default policy" in flat and "teacher: the original CNN" in flat
    assert "64 train / 64 val / 64 test" in flat and "test acc" in flat
    result = json.loads((out / "result.json").read_text())
    assert result["teacher_test"] is not None and result["settings"]["teacher"] is True
    energy = result["energy"]
    assert energy["available"] and energy["student"]["mul"] < energy["teacher"]["mul"]
    # The trained file loads back as the converted architecture, through the safe loader.
    from adderconv import load_model
    from adderconv.adaptive_lr import adder_weights
    assert adder_weights(load_model(out / "model.safetensors"))
    # --resume of a finished run only re-evaluates; a wrong source is one clear error line.
    code, _, err = run_cli(*args, "--resume")
    assert code == 0, err


def test_finetune_bad_data_source_is_a_usage_error(tmp_path, run_cli):
    code, _, err = run_cli("finetune", "lenet5_bn_adder", "--data", tmp_path / "missing", "-o", tmp_path / "o")
    assert code == 2 and "not 'digits'" in err and err.startswith("error: --data ") and len(err.splitlines()) == 1


def test_finetune_adder_lr_scale_reaches_the_run(tmp_path, run_cli):
    out = tmp_path / "run"
    code, _, err = run_cli("finetune", "lenet5_bn_adder", "--epochs", "1", "--limit", "64", "--batch-size", "32",
                           "--optimizer", "adam", "--lr", "1e-3", "--adder-lr-scale", "50", "-o", out, "--quiet")
    assert code == 0, err
    assert json.loads((out / "result.json").read_text())["settings"]["adder_lr_scale"] == 50.0
    code, _, err = run_cli("finetune", "lenet5_bn_adder", "--adder-lr-scale", "0", "-o", tmp_path / "b")
    assert code == 2 and err.strip() == "error: invalid training settings, need --adder-lr-scale > 0 (got 0.0)"
