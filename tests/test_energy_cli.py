"""`adderconv energy` end to end: reports rendered to files, JSON determinism, the CI gate's exit codes."""
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from adderconv.cli import main


def test_json_is_versioned_and_byte_for_byte_deterministic(energy, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert energy("lenet5_bn_adder", "--json", str(a))[0] == 0
    torch.manual_seed(1)                              # other weights: counts and energy must not change
    assert energy("lenet5_bn_adder", "--json", str(b))[0] == 0
    assert a.read_bytes() == b.read_bytes()
    data = json.loads(a.read_text())
    assert data["schema"] == "adderconv.energy/4"
    assert {"mul", "add", "energy_pj"} <= data["totals"].keys()
    layer = data["layers"][0]
    assert {"name", "type", "mul", "add", "energy_pj", "unsupported"} <= layer.keys()
    for kind in ("add", "acc"):
        assert data["totals"][kind] == sum(le[kind] for le in data["layers"])


def test_gate_exit_codes(energy, tmp_path):
    base = tmp_path / "base.json"
    assert energy("lenet5_bn_adder", "--json", str(base))[0] == 0
    code, out, _ = energy("lenet5_bn_adder", "--baseline", str(base), "--max-increase", "1%")
    assert code == 0 and "no regression" in out
    # a baseline from when the model had fewer multiplications: a regression, with a table of what grew
    data = json.loads(base.read_text())
    data["totals"]["mul"] = data["totals"]["mul"] * 10 // 34
    grown = tmp_path / "grown.json"
    grown.write_text(json.dumps(data))
    code, out, _ = energy("lenet5_bn_adder", "--baseline", str(grown), "--max-increase", "1%")
    assert code == 1 and "regression" in out and "GREW" in out and "mul" in out
    # within a generous enough limit it passes (mul grew ~240%)
    assert energy("lenet5_bn_adder", "--baseline", str(grown), "--max-increase", "300%")[0] == 0
    # another model's baseline is refused, not compared
    code, _, err = energy("lenet5_bn", "--baseline", str(base))
    assert code == 2 and "model" in err
    # usage errors: exit 2, one line on stderr
    code, _, err = energy("lenet5_bn", "--baseline", str(base), "--max-increase", "lots")
    assert code == 2 and err.startswith("error: --max-increase")
    code, _, err = energy("lenet5_bn", "--baseline", str(tmp_path / "missing.json"))
    assert code == 2 and "cannot read baseline" in err
    (tmp_path / "other.json").write_text('{"schema": "something/1"}')
    code, _, err = energy("lenet5_bn", "--baseline", str(tmp_path / "other.json"))
    assert code == 2 and "schema" in err


@pytest.mark.slow
def test_json_is_identical_across_interpreters_and_hash_seeds(tmp_path):
    outs = []
    for seed in ("1", "123"):
        path = tmp_path / f"{seed}.json"
        subprocess.run([sys.executable, "-m", "adderconv", "energy", "vgg_small_adder", "--json", str(path)],
                       env={**os.environ, "PYTHONHASHSEED": seed}, check=True, capture_output=True)
        outs.append(path.read_bytes())
    assert outs[0] == outs[1]


@pytest.fixture
def cumsum_model(tmp_path, monkeypatch):
    """A state dict plus an importable factory for a model using an op with no handle (cumsum)."""
    (tmp_path / "cummodel.py").write_text(textwrap.dedent("""
        import torch
        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = torch.nn.Linear(4, 3)
            def forward(self, x):
                return torch.cumsum(self.fc(x), 1)
        def make():
            return M()
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import cummodel

    path = tmp_path / "m.pt"
    torch.save(cummodel.make().state_dict(), path)
    return path


def test_unsupported_ops_are_listed_and_strict_fails(energy, cumsum_model, tmp_path):
    js = tmp_path / "m.json"
    code, out, _ = energy(str(cumsum_model), "--arch", "cummodel:make", "--input-shape", "2,4",
                       "--json", str(js))
    assert code == 0 and "aten::cumsum x1" in out
    assert json.loads(js.read_text())["unsupported"] == {"aten::cumsum": 1}
    code, out, _ = energy(str(cumsum_model), "--arch", "cummodel:make", "--input-shape", "2,4",
                       "--strict")
    assert code == 1 and "--strict" in out
    # shapes: missing for a non-zoo model, and wrong
    code, _, err = energy(str(cumsum_model), "--arch", "cummodel:make")
    assert code == 2 and "--input-shape" in err
    code, _, err = energy(str(cumsum_model), "--arch", "cummodel:make", "--input-shape", "2,5")
    assert code == 2 and "does not run on an input of shape (2, 5)" in err


def test_report_rendered_to_a_file_has_no_colour_codes_and_fits_a_narrow_terminal(tmp_path, monkeypatch):
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    report = tmp_path / "report.txt"
    with open(report, "w") as f:                     # stdout is a file, as with `adderconv energy ... > f`
        monkeypatch.setattr(sys, "stdout", f)
        monkeypatch.setattr(sys, "argv", ["adderconv", "energy", "lenet5_bn_adder", "--compare", "lenet5_bn",
                                          "--precision", "int8", "--memory", "sram_8kb"])
        monkeypatch.setenv("COLUMNS", "60")
        try:
            main()
        except SystemExit as e:
            assert e.code in (0, None)
    text = report.read_text()
    assert "\x1b[" not in text
    assert max(len(line) for line in text.splitlines()) <= 60
    for part in ("Totals", "By operator class", "Top 10", "Notes", "lenet5_bn vs lenet5_bn_adder", "memory int8"):
        assert part in text, part


def test_default_job_compares_resnet20_cnn_and_adder_at_fp32_and_int8(energy, tmp_path):
    md = tmp_path / "r.md"
    code, out, _ = energy("--markdown", str(md))
    assert code == 0
    assert "CNN vs AdderNet" in out and "energy fp32" in out and "energy int8" in out
    assert re.search(r"mul\s+41\.01M\s+643\.79k", out)
    assert "Top 10 of" in out
    text = md.read_text()
    assert text.startswith("### Energy: `resnet20_adder`") and "| `resnet20` | `resnet20_adder` |" in text


def test_onnx_file_and_all_layers(energy, tmp_path):
    from onnx import TensorProto, helper, save

    node = helper.make_node("AdderConv2d", ["x", "w"], ["y"], name="adder", domain="ai.adderconv",
                            kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=1)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[helper.make_tensor("w", TensorProto.FLOAT, [3, 2, 3, 3], [0.0] * 54)])
    path = tmp_path / "a.onnx"
    save(helper.make_model(g), str(path))
    js = tmp_path / "a.json"
    code, out, _ = energy(str(path), "--input-shape", "2,2,4,4", "--all-layers", "--json", str(js))
    assert code == 0 and "front end onnx" in out and "execution order" in out
    totals = json.loads(js.read_text())["totals"]                # |x - w| (add), then the accumulation (acc)
    assert totals["add"] == totals["acc"] == (2 * 3 * 16) * (2 * 9)


def test_precisions_tables_and_per_layer_precision(energy, tmp_path):
    js = tmp_path / "p.json"
    table = tmp_path / "t.toml"
    table.write_text('[compute.fp32]\nadd = { pj = 1.0, source = "test" }\nmul = { pj = 10.0, source = "test" }\n'
                     '[compute.int8]\nadd = { pj = 0.5, source = "test" }\nmul = { pj = 2.0, source = "test" }\n'
                     '[compute.int32]\nadd = { pj = 0.25, source = "test" }\n')
    classifier = ("12", "15")                         # lenet5_bn is a Sequential: its last two Linear layers
    code, _, _ = energy("lenet5_bn", "--table", str(table), "--layer-precision", "1[25]=int8",
                     "--json", str(js))
    assert code == 0
    data = json.loads(js.read_text())
    for le in data["layers"]:
        price = {"mul": 2.0, "add": 0.5, "acc": 0.25} if le["name"] in classifier else \
            {"mul": 10.0, "add": 1.0, "acc": 1.0}                   # int8 accumulates into int32
        assert le["precision"] == ("int8" if le["name"] in classifier else "fp32")
        assert le["precision_from"] == ("pattern" if le["name"] in classifier else "global")
        priced = le["mul"] * price["mul"] + le["add"] * price["add"] + le["acc"] * price["acc"]
        assert le["energy_pj"] == pytest.approx(priced), le["name"]    # cmp is unpriced in this table
    assert data["totals"]["unpriced"]["cmp"] > 0
    # a pattern that matches no layer is an error (it used to price everything at the global precision)
    code, _, err = energy("lenet5_bn", "--layer-precision", "fc*=int8", "--json", str(js))
    assert code == 2 and "'fc*' matches no layer" in err and len(err.strip().splitlines()) == 1
    code, _, err = energy("lenet5_bn", "--precision", "fp8")
    assert code == 2 and "unknown precision 'fp8'" in err
    code, _, err = energy("lenet5_bn", "--table", str(table), "--precision", "fp16")
    assert code == 2 and "no precision 'fp16'" in err
    table.write_text(table.read_text().split("[compute.int32]")[0])   # int8 operands, no int32 accumulator
    code, _, err = energy("lenet5_bn", "--table", str(table), "--precision", "int8")
    assert code == 2 and "no precision 'int32'" in err and "accumulator" in err
    code, _, err = energy("lenet5_bn", "--table", str(table), "--precision", "int8", "--pricing", "papers")
    assert code == 0, err


def test_the_main_job_compiles_no_kernel_and_runs_nothing(energy, monkeypatch):
    import adderconv.kernels as kernels

    def refuse(*a, **k):
        raise AssertionError("a kernel was asked for while counting")

    monkeypatch.setattr(kernels, "backend_for", refuse)
    code, out, err = energy()
    assert code == 0 and "CNN vs AdderNet" in out and "(dispatch)" in out, err


def test_training_and_captures_from_the_command_line(energy, tmp_path):
    js = tmp_path / "t.json"
    code, out, err = energy("lenet5_bn_adder", "-s", "2,1,32,32", "--training", "--json", str(js))
    assert code == 0 and "training step" in out, err
    data = json.loads(js.read_text())
    assert data["training"] is True and data["optimizer"] == "sgd" and set(data["by_phase"]) == {
        "forward", "backward", "optimizer"}
    assert data["totals"]["mul"] == sum(sum(p["mul"] for p in le["phases"].values()) for le in data["layers"])
    code, out, err = energy("lenet5_bn", "--capture", "jit", "--json", str(js))
    assert code == 0 and json.loads(js.read_text())["capture"] == "jit", err
    code, _, err = energy("lenet5_bn", "--capture", "trace")
    assert code == 2 and err.startswith("error: --capture") and len(err.strip().splitlines()) == 1
    code, _, err = energy("lenet5_bn", "--training", "--optimizer", "rmsprop")
    assert code == 2 and "--optimizer" in err
    # BatchNorm cannot train on one sample: one line naming the shape, not a traceback
    code, _, err = energy("lenet5_bn", "--training")
    assert code == 2 and "training mode" in err and len(err.strip().splitlines()) == 1


def test_every_written_report_is_said_and_help_shows_the_extras(energy, run_cli, tmp_path, monkeypatch):
    """Issue 27 (7): energy said nothing of the files it wrote, and rich markup swallowed '[report]' in help."""
    paths = [tmp_path / "r.json", tmp_path / "r.md"]
    code, out, _ = energy("lenet5_bn", "--json", paths[0], "--markdown", paths[1])
    assert code == 0 and all(f"wrote {p}" in out for p in paths)
    monkeypatch.setenv("COLUMNS", "250")
    code, out, _ = run_cli("energy", "--help")
    assert code == 0 and "adderconv[report]" in out and "adderconv[zigzag]" in out
