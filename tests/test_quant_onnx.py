"""Quantised nets in ONNX: QDQ around ai.adderconv::AdderConv2dInteger, run by plain onnxruntime, exactly equal
to PyTorch on the integer codes and sums; and the CLI round trip quantize -> export -> verify -> energy."""
from __future__ import annotations

import sys

import onnx
import pytest
import torch
from torch import nn

import adderconv
from adderconv import cli, get_model
from adderconv.converters.onnx_export import export_onnx
from adderconv.converters.onnx_function import DOMAIN, INT_OP_TYPE
from adderconv.converters.onnx_verify import verify_onnx

pytest.importorskip("onnxruntime")


def test_quantised_resnet_exports_qdq_and_verifies_exactly(tmp_path, with_bn_stats):
    net = with_bn_stats(get_model("resnet20_adder"), (3, 32, 32))
    q = adderconv.quantize(net, torch.randn(16, 3, 32, 32))
    path = tmp_path / "q.onnx"
    info = export_onnx(q, path, (1, 3, 32, 32))
    model = onnx.load(str(path))
    kinds = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", INT_OP_TYPE} <= kinds
    ints = [n for n in model.graph.node if n.domain == DOMAIN and n.op_type == INT_OP_TYPE]
    assert len(ints) == len(info.adder_nodes) == 20 and ints[0].name == "layer1.0.conv1"
    for fn in model.functions:          # the integer core: subtract, abs, sum; no multiplication
        if fn.name == INT_OP_TYPE:
            assert not {"Mul", "MatMul", "Conv", "Gemm"} & {n.op_type for n in fn.node}
    result = verify_onnx(path, q)
    assert result.ok and result.integer and result.max_rel_error < 1e-4
    for c in result.integer:   # the node is exact; a code may flip where ORT's float stem differs in the last bit
        assert c.nodes == 20 and c.sums_different == 0 and c.sums_checked > 0
        assert c.codes_different <= 1e-5 * c.codes_checked


def test_grouped_dilated_and_linear_layers_export_exactly(tmp_path, with_bn_stats):
    from adderconv import AdderConv2d, AdderLinear

    net = nn.Sequential(AdderConv2d(8, 8, 3, padding=2, dilation=2, groups=8), nn.BatchNorm2d(8), nn.ReLU(),
                        AdderConv2d(8, 12, 3, stride=2, padding=1, groups=2), nn.BatchNorm2d(12), nn.ReLU(),
                        nn.Flatten(), AdderLinear(12 * 6 * 7, 16), nn.BatchNorm1d(16), nn.ReLU(), AdderLinear(16, 4))
    net = with_bn_stats(net, (8, 11, 13))
    q = adderconv.quantize(net, torch.randn(16, 8, 11, 13))
    path = tmp_path / "g.onnx"
    export_onnx(q, path, (1, 8, 11, 13))
    result = verify_onnx(path, q)
    assert result.ok and all(c.nodes == 4 and c.sums_different == 0 and c.codes_different <= 1e-5 * c.codes_checked
                             for c in result.integer)


def _run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["adderconv", *map(str, args)])
    monkeypatch.delenv("ADDERCONV_DEBUG", raising=False)
    with pytest.raises(SystemExit) as e:
        cli.main()
        raise SystemExit(0)
    out = capsys.readouterr()
    return e.value.code or 0, out.out, out.err


@pytest.mark.slow
def test_cli_quantize_then_every_command_reads_the_file(tmp_path, monkeypatch, capsys, with_bn_stats):
    from adderconv.converters import save_converted

    src, out, js = tmp_path / "adder.safetensors", tmp_path / "q.safetensors", tmp_path / "q.json"
    save_converted(with_bn_stats(get_model("lenet5_bn_adder"), (1, 32, 32)), src, arch="lenet5_bn_adder")
    code, stdout, _ = _run(monkeypatch, capsys, "quantize", src, "-o", out, "--limit", "128",
                           "--calib-batches", "2", "--json", js)
    assert code == 0, stdout
    assert "int8 quantisation" in stdout and "calibration: percentile" in stdout and out.is_file()
    import json
    res = json.loads(js.read_text())
    assert set(res) >= {"float_test", "quant_test", "bits", "groups", "energy", "weight_bytes", "calibration"}
    assert res["weight_bytes"]["quant"] * 4 == res["weight_bytes"]["float"]
    assert res["energy"]["quant"]["energy_pj"] < res["energy"]["float"]["energy_pj"]
    loaded = adderconv.load_model(out)
    assert sum(type(m).__name__.startswith("QuantAdder") for m in loaded.modules()) == 3
    onnx_path = tmp_path / "q.onnx"
    assert _run(monkeypatch, capsys, "export", out, "-o", onnx_path)[0] == 0
    code, stdout, _ = _run(monkeypatch, capsys, "verify", onnx_path, "--against", out)
    assert code == 0 and "int32 sums different 0 of" in stdout and "uint8 codes different" in stdout
    code, stdout, _ = _run(monkeypatch, capsys, "energy", out, "--json", tmp_path / "e.json")
    assert code == 0 and "energy_precision" in stdout
    layers = {r["name"]: r["precision"] for r in json.loads((tmp_path / "e.json").read_text())["layers"]}
    assert layers["4"] == layers["9"] == layers["12"] == "int8"        # the adder layers, without --precision
    assert layers["0"] == "fp32"                                         # the float stem as it runs


def test_cli_bad_input_exits_2(tmp_path, monkeypatch, capsys):
    code, _, err = _run(monkeypatch, capsys, "quantize", "resnet20", "-o", tmp_path / "q.safetensors", "--limit", "32")
    assert code == 2 and "no adder layers" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(monkeypatch, capsys, "quantize", "lenet5_bn_adder", "-o", tmp_path / "q.pt")
    assert code == 2 and ".safetensors" in err
    code, _, err = _run(monkeypatch, capsys, "quantize", "resnet20_adder", "-o", tmp_path / "q.safetensors",
                        "--limit", "32", "--input-shape", "1,1,32,32")
    assert code == 2 and "does not fit the model" in err
    code, _, err = _run(monkeypatch, capsys, "quantize", "lenet5_bn_adder", "-o", tmp_path / "q.safetensors",
                        "--limit", "32", "--method", "kl")
    assert code == 2 and "calibration method" in err
    assert not (tmp_path / "q.safetensors").exists()
