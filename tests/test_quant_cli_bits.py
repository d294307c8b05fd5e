"""`adderconv quantize --bits N --groups K` (issue 26): the width and the grids reach the file, the report and
every reader; a width or group count out of range is one line and exit 2."""
from __future__ import annotations

import json

import pytest
import torch

import adderconv
from adderconv.quant import is_quantized


@pytest.mark.parametrize("args, says", [
    (("--bits", "3"), "--bits must be an integer from 4 to 8"),
    (("--bits", "9"), "--bits must be an integer from 4 to 8"),
    (("--groups", "0"), "--groups (grids per layer) must be a positive integer"),
    (("--groups", "100"), "--groups is 100, more than the 16 output channels"),
])
def test_a_width_or_group_count_out_of_range_is_one_line(run_cli, tmp_path, args, says):
    code, _, err = run_cli("quantize", "lenet5_bn_adder", "-o", tmp_path / "q.safetensors", "--limit", "64", *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and says in err, err
    assert not (tmp_path / "q.safetensors").exists()


def test_a_4_bit_grouped_model_is_written_reported_and_read_back(run_cli, tmp_path):
    q, js = tmp_path / "q.safetensors", tmp_path / "q.json"
    code, out, err = run_cli("quantize", "lenet5_bn_adder", "-o", q, "--bits", "4", "--groups", "2",
                             "--limit", "128", "--json", js)
    assert code == 0, err
    assert "int4, 2 grids per layer quantisation" in out and "int4 - float" in out
    res = json.loads(js.read_text())
    assert (res["bits"], res["groups"]) == (4, 2) and res["energy"]["quant"]["quant_layers"] == 3
    model = adderconv.load_model(q)
    layers = [m for m in model.modules() if hasattr(m, "qmax")]
    assert is_quantized(model) and layers and all(m.bits == 4 and m.qmax == 15 for m in layers)
    assert any(m.grid_groups == 2 for m in layers)
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(model(x), adderconv.load_model(q)(x))          # the file rebuilds the same model
    code, out, err = run_cli("energy", q, "--json", tmp_path / "e.json")
    assert code == 0, err
    report = json.loads((tmp_path / "e.json").read_text())
    assert {layer["precision"] for layer in report["layers"]} >= {"int4"}
