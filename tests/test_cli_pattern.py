"""The one CLI pattern's small shared pieces, through main()'s boundary: first_line never raises, an ONNX MODEL is
refused first by the commands that need PyTorch, finetune takes the conversion policy, quantize says a zoo name
has random weights, energy puts the comparison first either way, and bench is one function."""
import json

import pytest

from adderconv.errors import AdderconvError, first_line
from adderconv.io import ModelKind, model_kind, sample_shape, write_text


class _BrokenStr(Exception):
    def __str__(self):
        raise RuntimeError("no message")


@pytest.mark.parametrize("message,expected", [("", "ValueError"), ("   \n\t\n", "ValueError"),
                                              ("\n\nsecond line\nthird", "second line"), ("  one  ", "one")])
def test_first_line_never_raises(message, expected):
    assert first_line(ValueError(message)) == expected


def test_first_line_of_an_exception_whose_str_fails():
    assert first_line(_BrokenStr()) == "_BrokenStr"


def test_io_keeps_first_line_importable():
    from adderconv import io

    assert io.first_line is first_line


@pytest.mark.parametrize("exc", [AdderconvError(""), AdderconvError("  \n ")])
def test_an_empty_library_error_is_still_one_line(exc, run_cli, monkeypatch, tmp_path):
    from adderconv.converters import command

    def boom(opts, out):
        raise exc

    monkeypatch.setattr(command, "run_graph", boom)
    code, out, err = run_cli("graph", "lenet5_bn", "-o", tmp_path / "g.graphml")
    assert code == 2 and err.strip().splitlines() == [
        "error: AdderconvError (no message; ADDERCONV_DEBUG=1 shows the traceback)"], err


@pytest.mark.parametrize("message", ["", " \n "])
def test_an_empty_message_from_a_library_call_is_named_by_its_type(message, run_cli, monkeypatch, tmp_path):
    """read_torch_file wraps whatever torch.load raises with first_line: an empty message used to be an
    IndexError traceback in the copies that indexed splitlines()[0]."""
    import torch

    def load(*a, **k):
        raise EOFError(message)

    (tmp_path / "w.pt").write_bytes(b"not empty")
    monkeypatch.setattr(torch, "load", load)
    code, out, err = run_cli("energy", tmp_path / "w.pt", "--arch", "lenet5_bn")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "(EOFError)" in err and "Traceback" not in err


def test_model_kind_is_decided_once(tmp_path):
    (tmp_path / "resnet20").write_text("a file named like a zoo model")
    assert model_kind("resnet20") is ModelKind.ZOO and model_kind(tmp_path / "resnet20") is ModelKind.FILE
    assert model_kind("missing.onnx") is ModelKind.ONNX and model_kind("torchvision:resnet18") is ModelKind.SPEC
    assert model_kind("mypkg.models:build") is ModelKind.SPEC and model_kind("weights.pt") is ModelKind.FILE


def test_sample_shape_is_the_last_three_dimensions():
    assert sample_shape((8, 3, 32, 32)) == sample_shape([3, 32, 32]) == (3, 32, 32)


def test_write_text_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    write_text(path, "one")
    assert path.read_text() == "one"
    import pathlib

    def fail(self, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_text", fail)
    with pytest.raises(AdderconvError, match="No space left"):
        write_text(path, "two")
    assert path.read_text() == "one" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    import onnx
    from onnx import TensorProto, helper

    path = tmp_path_factory.mktemp("onnx") / "net.onnx"
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    onnx.save(helper.make_model(g), str(path))
    return path


@pytest.mark.parametrize("args", [["graph", "{m}"], ["export", "{m}", "-o", "{t}/x.onnx"],
                                  ["quantize", "{m}", "-o", "{t}/q.safetensors"], ["finetune", "{m}", "-o", "{t}/r"],
                                  ["finetune", "lenet5_bn", "--teacher", "{m}", "-o", "{t}/r"],
                                  ["verify", "{m}", "--against", "{m}"]])
def test_an_onnx_model_is_refused_first_in_one_line(args, onnx_file, run_cli, tmp_path):
    """Before any shape is asked for (the file has none a zoo default could give) and before data is loaded."""
    code, out, err = run_cli(*(a.format(m=onnx_file, t=tmp_path) for a in args))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "an ONNX file cannot be used for" in err, err
    assert "input shape" not in err and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["graph", "export", "quantize", "finetune"])
def test_help_of_commands_that_need_pytorch_does_not_offer_onnx(command, run_cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_cli(command, "--help")
    assert code == 0 and "not .onnx" in " ".join(out.split())


def test_finetune_takes_the_conversion_policy(tmp_path, run_cli):
    """`finetune CNN --linear` converts the hidden Linear layers too (the head stays: --keep-last), as
    `convert --linear` does; without it, fine-tuning's default policy keeps every Linear."""
    import adderconv
    from adderconv import AdderLinear
    from adderconv.converters import Policy, convert

    counts = {}
    for flags in ([], ["--linear"]):
        out = tmp_path / f"run{len(flags)}"
        code, stdout, err = run_cli("finetune", "lenet5_bn", "--epochs", "1", "--limit", "16", "--batch-size", "16",
                                    "--quiet", "-o", out, *flags)
        assert code == 0, err
        net = adderconv.load_model(out / "model.safetensors")
        counts[bool(flags)] = sum(isinstance(m, AdderLinear) for m in net.modules())
    reference = convert(adderconv.get_model("lenet5_bn"), Policy(convert_linear=True))
    assert counts[False] == 0 and counts[True] == sum(isinstance(m, AdderLinear) for m in reference.modules()) > 0


def test_quantize_says_a_zoo_name_has_random_weights_next_to_the_accuracy():
    import io

    from rich.console import Console

    from adderconv.quant.command import QuantizeResult, render

    def result(notes):
        return QuantizeResult(data="digits", task="classify", metric="acc", bits=8, groups=1, float_test=0.106,
                              quant_test=0.1, calibration="percentile", energy={"float": {"energy_pj": 2.0}, "quant": {
                                  "energy_pj": 1.0, "quant_layers": 2}, "ratio": 0.5},
                              weight_bytes={"float": 8, "quant": 2}, seconds={}, output="q.safetensors",
                              report={"skipped": {}, "notes": []}, notes=notes)

    buf = io.StringIO()
    note = "lenet5_bn_adder is a zoo name: its weights are random, so a test acc near chance is expected"
    render(result([note]), Console(file=buf, width=300))
    lines = buf.getvalue().splitlines()
    at = next(i for i, line in enumerate(lines) if "random" in line)
    assert lines[at - 1].startswith("└") and lines[at + 1].startswith("int8 - float")   # right under the table
    assert "notes" not in result([note]).to_json()


def test_energy_shows_the_comparison_first_whichever_way_it_was_asked(energy):
    code, default, err = energy()
    assert code == 0, err
    code, compared, err = energy("resnet20_adder", "--compare", "resnet20")
    assert code == 0, err
    for out in (default, compared):
        assert 0 <= out.index("vs") < out.index("Totals"), out[:400]


def test_bench_and_the_benchmark_script_are_one_function(monkeypatch, tmp_path, run_cli):
    import importlib.util
    import pathlib

    from adderconv.kernels import benchmark

    calls = []

    def fake_suite(nets, rounds, memory, threads):
        calls.append((nets, rounds, memory, threads))
        for net in nets:
            yield net, [{"layer": "l", "pass": "fwd", "batch": nets[net], "adder_ms": 1.0, "conv_ms": 0.5,
                         "adder_cpu_ms": 1.0, "conv_cpu_ms": 0.5, "adder_over_conv": 2.0, "adder_over_conv_cpu": 2.0}]

    monkeypatch.setattr(benchmark, "suite", fake_suite)
    code, out, err = run_cli("bench", "--nets", "resnet20", "--batch", "3", "--rounds", "2", "--no-memory",
                             "--json", tmp_path / "cli.json")
    assert code == 0, err
    spec = importlib.util.spec_from_file_location("kernels_script", pathlib.Path("benchmarks/kernels.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--nets", "resnet20", "--batch", "3", "--rounds", "2", "--no-memory", "--json",
                 str(tmp_path / "script.json")])
    assert calls[0] == calls[1] == ({"resnet20": 3}, 2, False, 2)
    cli, scr = (json.loads((tmp_path / f).read_text()) for f in ("cli.json", "script.json"))
    assert cli["tables"] == scr["tables"] and set(cli["machine"]) == set(scr["machine"]) >= {"backend", "cpu"}
    code, _, err = run_cli("bench", "--nets", "resnet18", "--no-memory")
    assert code == 2 and "unknown layer set 'resnet18'" in err and err.startswith("error: --nets")
