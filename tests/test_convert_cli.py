"""`adderconv convert` and `adderconv graph`: outputs that load back, and one-line errors with no file left."""
import sys

import networkx as nx
import pytest
import torch
from safetensors.torch import safe_open
from torch import nn

import adderconv
from adderconv import cli


def _run(monkeypatch, capsys, *args):
    """Run the CLI in-process through its one error boundary; returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["adderconv", *map(str, args)])
    monkeypatch.delenv("ADDERCONV_DEBUG", raising=False)
    with pytest.raises(SystemExit) as e:
        cli.main()
        raise SystemExit(0)
    out = capsys.readouterr()
    return e.value.code or 0, out.out, out.err


def test_convert_zoo_model_prints_table_and_savings_and_writes_a_loadable_file(tmp_path, monkeypatch, capsys):
    out = tmp_path / "r20.safetensors"
    code, stdout, _ = _run(monkeypatch, capsys, "convert", "resnet20", "-o", out)
    assert code == 0
    assert "converted 20 of 22" in stdout and "layer3.2.conv2" in stdout
    assert "mul" in stdout and "energy fp32" in stdout
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["adderconv.arch"] == "resnet20" and '"to": "AdderConv2d"' in meta["adderconv.recipe"]
    net = adderconv.load_model(out)
    assert sum(isinstance(m, adderconv.AdderConv2d) for m in net.modules()) == 20


def test_convert_state_dict_with_arch_and_policy_flags(tmp_path, monkeypatch, capsys):
    src = tmp_path / "cnn.pt"
    cnn = adderconv.get_model("lenet5_bn")
    torch.save(cnn.state_dict(), src)
    out = tmp_path / "lenet.safetensors"
    code, stdout, _ = _run(monkeypatch, capsys, "convert", src, "--arch", "lenet5_bn", "-o", out, "--linear",
                           "--exclude", "9")
    assert code == 0, stdout
    net = adderconv.load_model(out).eval()
    assert [type(m).__name__ for m in net if "Adder" in type(m).__name__] == ["AdderConv2d", "AdderLinear"]
    assert isinstance(net[9], nn.Linear)   # excluded by name
    ref = adderconv.convert(cnn, adderconv.converters.Policy(convert_linear=True, exclude=("9",))).eval()
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(net(x), ref(x), rtol=0, atol=0)


def test_convert_pickle_and_pt2_formats(tmp_path, monkeypatch, capsys):
    code, _, _ = _run(monkeypatch, capsys, "convert", "lenet5_bn", "-o", tmp_path / "m.pt", "--format", "pickle")
    assert code == 0 and isinstance(adderconv.load_model(tmp_path / "m.pt", trust=True)[4], adderconv.AdderConv2d)
    code, _, _ = _run(monkeypatch, capsys, "convert", "lenet5_bn", "-o", tmp_path / "m.pt2", "--format", "pt2",
                      "--strategy", "aten")
    assert code == 0
    ep = torch.export.load(tmp_path / "m.pt2")
    assert any("adder_conv2d" in str(n.target) for n in ep.graph.nodes)


@pytest.mark.parametrize("case", ["missing", "corrupt", "no_convs", "policy_nothing", "untrusted_pickle",
                                  "aten_safetensors", "onnx_missing"])
def test_bad_inputs_give_one_line_nonzero_exit_and_no_output(case, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out.safetensors"
    args = {"missing": [tmp_path / "nope.pt"],
            "policy_nothing": ["resnet20", "--include", "nothing.*"],
            "aten_safetensors": ["resnet20", "--strategy", "aten"],
            "onnx_missing": [tmp_path / "nope.onnx"]}.get(case)
    if case == "corrupt":
        (tmp_path / "bad.safetensors").write_bytes(b"\x00garbage" * 10)
        args = [tmp_path / "bad.safetensors", "--arch", "resnet20"]
    elif case == "no_convs":
        torch.save(nn.Sequential(nn.ReLU(), nn.Flatten()), tmp_path / "relu.pt")
        args = [tmp_path / "relu.pt", "--trust", "-s", "1,3,8,8"]
    elif case == "untrusted_pickle":
        torch.save(nn.Sequential(nn.Conv2d(3, 3, 3)), tmp_path / "m.pt")
        args = [tmp_path / "m.pt"]
    code, _, err = _run(monkeypatch, capsys, "convert", *args, "-o", out)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_failure_while_writing_leaves_no_half_written_file(tmp_path, monkeypatch, capsys):
    import adderconv.converters.save as save

    def boom(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"half")
        raise adderconv.AdderconvError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", boom)
    out = tmp_path / "r.safetensors"
    code, _, err = _run(monkeypatch, capsys, "convert", "lenet5_bn", "-o", out)
    assert code == 2 and "disk full" in err and list(tmp_path.iterdir()) == []
    assert save.FORMATS


def test_graph_command_writes_graphml(tmp_path, monkeypatch, capsys):
    out = tmp_path / "g.graphml"
    code, stdout, _ = _run(monkeypatch, capsys, "graph", "resnet20", "--output", out)
    assert code == 0 and "first: conv1" in stdout and "last: fc" in stdout
    g = nx.read_graphml(out)
    convs = [d for _, d in g.nodes(data=True) if d["kind"] == "conv"]
    assert len(convs) == 22 and all(d["counted"] and d["mul"] == d["add"] > 0 for d in convs)
    total = sum(d["mul"] for d in convs)
    # By hand, output pixels x C_out x C_in x k^2 per conv: the stem, 6 + 1 + 5 + 1 + 5 3x3 convs in the three
    # stages, two 1x1 downsamples and the 1x1 classifier (the paper's 41.17M counts its classifier differently).
    stem = 32 * 32 * 16 * 3 * 9
    stages = 6 * 32 * 32 * 16 * 16 * 9 + (16 * 16 * 32 * 16 * 9 + 5 * 16 * 16 * 32 * 32 * 9) \
        + (8 * 8 * 64 * 32 * 9 + 5 * 8 * 8 * 64 * 64 * 9)
    downsample, classifier = 16 * 16 * 32 * 16 + 8 * 8 * 64 * 32, 64 * 10
    assert total == stem + stages + downsample + classifier == 40_813_184


def test_convert_onnx_goes_through_the_onnx_rewriter(tmp_path, monkeypatch, capsys):
    from adderconv.converters.onnx_export import export_onnx

    export_onnx(adderconv.get_model("lenet5_bn").eval(), tmp_path / "cnn.onnx", (1, 1, 32, 32))
    out = tmp_path / "adder.onnx"
    code, stdout, _ = _run(monkeypatch, capsys, "convert", tmp_path / "cnn.onnx", "-o", out)
    assert code == 0 and out.exists() and "rewritten into ai.adderconv::AdderConv2d" in stdout
    import onnx
    assert any(n.op_type == "AdderConv2d" for n in onnx.load(str(out)).graph.node)
