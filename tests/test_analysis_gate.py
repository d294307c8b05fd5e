"""The CI gate never passes bad input, and every bad input to `adderconv energy` is one line with exit 2,
checked before any work (no report file is written). Through `main()`, so the error boundary is exercised."""
import json

import onnx
import pytest
from onnx import TensorProto, helper
from torch import nn

from adderconv.analysis import analyze
from adderconv.analysis.tables import load_table
from adderconv.errors import AdderconvError


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    path = tmp_path_factory.mktemp("gate") / "base.json"
    from adderconv.analysis.export import to_json

    path.write_text(to_json(analyze("lenet5_bn_adder")))
    return path


def _one_line_error(code, out, err, *words):
    assert code == 2, (code, out, err)
    assert len(err.strip().splitlines()) == 1 and err.startswith("error:") and "Traceback" not in err, err
    for w in words:
        assert w in err, err


def _bad_baselines(tmp_path, good):
    data = json.loads(good.read_text())
    cases = {
        "string total": {**data, "totals": {**data["totals"], "mul": "many"}},
        "null total": {**data, "totals": {**data["totals"], "energy_pj": None}},
        "negative total": {**data, "totals": {**data["totals"], "add": -1}},
        "no totals": {k: v for k, v in data.items() if k != "totals"},
        "missing add": {**data, "totals": {k: v for k, v in data["totals"].items() if k != "add"}},
        "layers not a list": {**data, "layers": {"a": 1}},
        "layer without name": {**data, "layers": [{"energy_pj": 1.0}]},
        "layer energy a string": {**data, "layers": [{"name": "x", "energy_pj": "1"}]},
        "null document": None,
    }
    paths = {}
    for name, doc in cases.items():
        p = tmp_path / (name.replace(" ", "_") + ".json")
        p.write_text(json.dumps(doc))
        paths[name] = p
    nan = tmp_path / "nan.json"
    nan.write_text(good.read_text().replace('"energy_pj": ', '"energy_pj": NaN, "x": ', 1))
    paths["NaN total"] = nan
    inf = tmp_path / "inf.json"
    inf.write_text(good.read_text().replace('"mul": ', '"mul": Infinity, "y": ', 1))
    paths["Infinity total"] = inf
    utf = tmp_path / "latin1.json"
    utf.write_bytes(b'{"schema": "adderconv.energy/2", "model": "\xe9"}')
    paths["bad UTF-8"] = utf
    return paths


def test_malformed_baselines_are_refused_before_any_work(energy, tmp_path, baseline):
    out_json = tmp_path / "report.json"
    for name, path in _bad_baselines(tmp_path, baseline).items():
        code, out, err = energy("lenet5_bn_adder", "--baseline", str(path), "--json",
                             str(out_json))
        _one_line_error(code, out, err, "baseline")
        assert not out_json.exists(), name                  # refused before the analysis and its files
        assert out == "", name


@pytest.mark.parametrize("limit", ["nan", "inf", "-inf", "NaN%", "-1%"])
def test_non_finite_or_negative_limits_are_refused(energy, limit, baseline):
    code, out, err = energy("lenet5_bn_adder", "--baseline", str(baseline), "--max-increase",
                         limit)
    _one_line_error(code, out, err, "--max-increase")


def test_both_schema_versions_are_read(energy, tmp_path, baseline):
    v1 = json.loads(baseline.read_text())
    v1["schema"] = "adderconv.energy/1"
    for key in ("capture", "training", "optimizer", "by_phase"):
        v1.pop(key)
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(v1))
    code, out, _ = energy("lenet5_bn_adder", "--baseline", str(path))     # fp32: the widths are the same
    assert code == 0 and "no regression" in out
    v1["totals"]["mul"] //= 2                                             # the model grew since the baseline
    path.write_text(json.dumps(v1))
    code, out, _ = energy("lenet5_bn_adder", "--baseline", str(path))
    assert code == 1 and "GREW" in out
    code, out, err = energy("lenet5_bn_adder", "--precision", "int8", "--baseline", str(path))
    assert code == 2 and "precision" in err                              # another precision is not comparable


def test_a_training_baseline_is_not_compared_with_inference(energy, baseline):
    code, out, err = energy("lenet5_bn_adder", "-s", "2,1,32,32", "--training", "--baseline",
                         str(baseline))
    _one_line_error(code, out, err, "--training")


def _onnx_files(tmp_path):
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    no_nodes = tmp_path / "no_nodes.onnx"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    onnx.save(helper.make_model(helper.make_graph([], "g", [x], [x])), no_nodes)
    no_inputs = tmp_path / "no_inputs.onnx"
    c = helper.make_node("Constant", [], ["y"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    onnx.save(helper.make_model(helper.make_graph([c], "g", [], [y])), no_inputs)
    negative = tmp_path / "negative.onnx"
    xn = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, -3])
    relu = helper.make_node("Relu", ["x"], ["z"])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, None)
    onnx.save(helper.make_model(helper.make_graph([relu], "g", [xn], [z])), negative)
    return {"empty": (empty, "no graph"), "no nodes": (no_nodes, "no nodes"),
            "no inputs": (no_inputs, "no inputs"), "negative dim": (negative, "negative dimension")}


def test_empty_graphless_and_negative_onnx_files_are_errors_also_against_a_baseline(energy, tmp_path, baseline):
    for name, (path, words) in _onnx_files(tmp_path).items():
        code, out, err = energy(str(path))
        _one_line_error(code, out, err, words)
        code, out, err = energy(str(path), "--baseline", str(baseline))
        _one_line_error(code, out, err, words)              # never "no regression"
        assert "regression" not in out, name


def _tables(tmp_path):
    ok_row = '[compute.fp32]\nadd = { pj = 1.0, source = "t" }\nmul = { pj = 2.0, source = "t" }\n'
    texts = {
        "nan price": ('[compute.fp32]\nadd = { pj = nan, source = "t" }\n', "finite"),
        "inf price": ('[compute.fp32]\nadd = { pj = inf, source = "t" }\n', "finite"),
        "compute = 5": ("compute = 5\n", "[compute] must be a table"),
        "word_bits abc": (ok_row + '[memory]\nword_bits = "abc"\n', "word_bits"),
        "word_bits 0": (ok_row + "[memory]\nword_bits = 0\n", "word_bits"),
        "boolean price": ('[compute.fp32]\nadd = { pj = true, source = "t" }\n', "number 'pj'"),
    }
    paths = {}
    for name, (text, words) in texts.items():
        p = tmp_path / (name.replace(" ", "_").replace("=", "") + ".toml")
        p.write_text(text)
        paths[name] = (p, words)
    latin = tmp_path / "latin1.toml"
    latin.write_bytes(b'[table]\nname = "\xe9"\n' + ok_row.encode())
    paths["non-UTF-8"] = (latin, "UTF-8")
    return paths


def test_bad_price_lists_are_one_line_errors_and_no_json_is_written(energy, tmp_path):
    out_json = tmp_path / "r.json"
    for name, (path, words) in _tables(tmp_path).items():
        code, out, err = energy("lenet5_bn", "--table", str(path), "--json", str(out_json))
        _one_line_error(code, out, err, words)
        assert not out_json.exists(), name


@pytest.mark.parametrize("scale", ["nan", "inf", "0", "-2"])
def test_non_finite_energy_scale_is_refused(energy, scale):
    code, out, err = energy("lenet5_bn", "--energy-scale", scale)
    _one_line_error(code, out, err, "scale")


@pytest.mark.parametrize("shape", ["1,3,99999999999999999999,2", "4294967296,4294967296,2"])
def test_shapes_beyond_int64_are_one_line_errors(energy, shape):
    code, out, err = energy("lenet5_bn", "-s", shape)
    _one_line_error(code, out, err, "--input-shape")


def test_json_never_holds_nan_or_infinity():
    from adderconv.analysis.counts import LayerCounts, ModelCounts, OpCount, Tally
    from adderconv.analysis.energy import price
    from adderconv.analysis.export import to_json
    from adderconv.analysis.tables import load_table
    from adderconv.errors import AdderconvError

    counts = ModelCounts([LayerCounts("fc", "Linear", [OpCount("aten::addmm", "linear", Tally(mul=10, add=1))])])
    # a table built in code skips the loader's checks: the JSON writer is the last line of defence
    table = load_table()
    broken = type(table)(table.name, table.description, table.compute, table.aliases, table.memory, table.word_bits,
                         float("inf"))
    with pytest.raises(AdderconvError, match="non-finite"):
        to_json(price(counts, table=broken))


# --- layer-declared precision ------------------------------------------------------------------------------

class Int8Linear(nn.Linear):
    """A stand-in for a quantised layer: it declares the precision its arithmetic runs at."""

    energy_precision = "int8"


def _declaring_model():
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), Int8Linear(8, 4))


@pytest.mark.parametrize("capture", ["dispatch", "jit"])
def test_a_layer_that_declares_its_precision_is_priced_at_it(capture):
    report = analyze(_declaring_model(), (2, 8), capture=capture)
    by_name = {le.name: le for le in report.layers}
    assert by_name["2"].precision == "int8" and by_name["2"].precision_from == "declared"
    assert by_name["0"].precision == "fp32" and by_name["0"].precision_from == "global"
    assert report.declared == ["2"]
    table = load_table()
    counts = by_name["2"].counts       # int8 operands, accumulated in int32 (the declared precision's accumulator)
    expected = counts["mul"] * table.price("int8", "mul") + counts["acc"] * table.price("int32", "add")
    assert by_name["2"].accumulator == "int32" and by_name["2"].energy_pj == pytest.approx(expected)
    # the global precision sets the others; an explicit pattern wins over the declaration
    report = analyze(_declaring_model(), (2, 8), precision="fp16", layer_precision={"2": "fp32"})
    by_name = {le.name: le for le in report.layers}
    assert (by_name["0"].precision, by_name["2"].precision, by_name["2"].precision_from) == ("fp16", "fp32",
                                                                                            "pattern")


def test_the_report_names_the_layers_priced_at_their_declared_precision():
    import io

    from rich.console import Console

    from adderconv.analysis import render_report
    from adderconv.analysis.export import to_dict

    report = analyze(_declaring_model(), (2, 8))
    console = Console(file=io.StringIO(), width=120)
    render_report(report, console)
    assert "declares (energy_precision): 2" in console.file.getvalue()
    layers = {le["name"]: le for le in to_dict(report)["layers"]}
    assert layers["2"]["precision_from"] == "declared"
    with pytest.raises(AdderconvError, match="unknown precision 'int3'"):
        class Odd(nn.Linear):
            energy_precision = "int3"
        analyze(nn.Sequential(Odd(2, 2)), (1, 2))
