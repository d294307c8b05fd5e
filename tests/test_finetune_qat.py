"""`finetune --bits N` (issue 26): training through int<N> fake quantisation writes the quantised model, whose
test accuracy is the one reported, and a resume with another width is refused."""
from __future__ import annotations

import json

import torch

import adderconv
from adderconv.data import evaluate, load_data
from adderconv.quant import QuantAdderConv2d, is_quantized


def test_finetune_bits_writes_the_codes_it_was_tested_with(run_cli, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = run_cli("finetune", "lenet5_bn_adder", "--bits", "5", "--groups", "2", "--epochs", "2",
                                "--limit", "256", "--batch-size", "64", "-o", out, "--quiet")
    assert code == 0, err
    assert "int5 fake quantisation" in stdout and "int5 adder layers" in stdout
    model = adderconv.load_model(out / "model.safetensors")
    layers = [m for m in model.modules() if isinstance(m, QuantAdderConv2d)]
    assert is_quantized(model) and len(layers) == 3 and all(m.bits == 5 and m.qmax == 31 for m in layers)
    result = json.loads((out / "result.json").read_text())
    assert (result["settings"]["bits"], result["settings"]["groups"]) == (5, 2)
    data = load_data("digits", (1, 32, 32), limit=256)
    again = evaluate(model, data.test, data.task, 64, torch.device("cpu"))["acc"]
    assert again == result["test"]["acc"]                         # the file is the model that was tested
    code, _, err = run_cli("finetune", "lenet5_bn_adder", "--bits", "6", "--groups", "2", "--epochs", "3",
                           "--limit", "256", "--batch-size", "64", "-o", out, "--resume", "--quiet")
    assert code == 2 and "'bits': (5, 6)" in err, err

