"""`adderconv energy --engine zigzag`: ZigZag's dataflow model inside the energy report (CLI, JSON, Markdown, HTML,
gate). The engine itself, and its agreement with ZigZag called directly, are tested in tests/test_zigzag.py."""
import json
import sys

import pytest
from torch import nn

from adderconv.analysis import analyze
from adderconv.analysis.export import to_dict
from adderconv.analysis.gate import compare_to_baseline
from adderconv.errors import AdderconvError
from adderconv.layers import AdderConv2d


def _net() -> nn.Module:
    """No biases, so each mapped layer's arithmetic is exactly its MACs (ZigZag prices MACs only)."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(), AdderConv2d(8, 16, 3, padding=1),
                         nn.BatchNorm2d(16), nn.Flatten(), nn.Linear(16 * 8 * 8, 4, bias=False))


@pytest.fixture(scope="module")
def flow_report():
    return analyze(_net(), (1, 3, 8, 8), precision="int8", engine="zigzag", accelerator="tpu_like", same_area=True)


def test_the_dataflow_compute_equals_our_compute_at_the_same_prices(flow_report):
    r = flow_report
    layers = {le.name: le for le in r.layers}
    res = r.dataflow.result
    assert [ld.name for ld in res.layers] == ["0", "2", "5"]
    for ld in res.layers:
        le = layers[ld.name]
        assert ld.macs == le.counts["acc"]
        assert ld.compute_pj == pytest.approx(le.energy_pj, rel=1e-12)       # re-priced exactly
    # the adder layer's unit is a SAD unit at int8/int32: 0.03 + 0.1 pJ; the conv's a MAC unit: 0.2 + 0.1 pJ
    assert res.layers[1].compute_pj == pytest.approx(res.layers[1].macs * 0.13)
    assert res.layers[0].compute_pj == pytest.approx(res.layers[0].macs * 0.3)
    assert set(res.memory_pj) and all(v >= 0 for v in res.memory_pj.values())
    assert res.latency_cycles > 0 and all(0 < ld.utilization <= 1 for ld in res.layers)


def test_the_same_area_array_has_the_units_a_sad_unit_saves(flow_report):
    flow = flow_report.dataflow
    assert flow_report.main_unit.unit == "SAD"
    assert flow.array_scale == pytest.approx((282 + 137) / (36 + 137), rel=0.05)    # rounded to whole units
    same = flow.same_area
    assert same is not None and same.array_scale == flow.array_scale
    assert [ld.compute_pj for ld in same.layers] == [ld.compute_pj for ld in flow.result.layers]   # same units
    # no latency claim here: on layers this small a bigger (odd-sized) array need not be faster


def test_every_view_shows_the_dataflow(energy, tmp_path):
    paths = {k: tmp_path / f"r.{k}" for k in ("json", "md", "html")}
    code, out, err = energy("lenet5_bn_adder", "--precision", "int8", "--engine", "zigzag", "--accelerator",
                            "eyeriss_like", "--compare", "lenet5_bn", "--json", paths["json"],
                            "--markdown", paths["md"], "--html", paths["html"])
    assert code == 0, err
    assert "Dataflow on eyeriss_like" in out and "total energy (eyeriss_like)" in out and "latency" in out
    data = json.loads(paths["json"].read_text())
    flow = data["dataflow"]
    assert data["engine"] == "zigzag" and data["accelerator"] == "eyeriss_like" and flow["operand_bits"] == 8
    assert flow["total_pj"] == pytest.approx(data["totals"]["energy_pj"] + flow["data_movement_pj"], abs=1e-5)
    assert flow["data_movement_pj"] == pytest.approx(sum(flow["memory_pj"].values()), abs=1e-5)
    assert {ld["name"] for ld in flow["layers"]} <= {le["name"] for le in data["layers"]}
    assert "Dataflow on `eyeriss_like`" in paths["md"].read_text()
    assert "Dataflow on eyeriss_like (ZigZag)" in paths["html"].read_text()


def test_the_gate_compares_the_engines_totals_and_refuses_another_engine():
    flow = to_dict(analyze("lenet5_bn_adder", precision="int8", engine="zigzag"))
    arithmetic = to_dict(analyze("lenet5_bn_adder", precision="int8"))
    assert compare_to_baseline(flow, flow, 0.0).ok
    with pytest.raises(AdderconvError, match="engine"):
        compare_to_baseline(arithmetic, flow, 0.01)
    grown = json.loads(json.dumps(flow))
    flow["dataflow"]["total_pj"] *= 1.5                       # more data movement, the same arithmetic
    assert [r.metric for r in compare_to_baseline(flow, grown, 0.01).regressions] == ["dataflow_pj"]


@pytest.mark.parametrize("args, message", [
    (("--accelerator", "no_such_accelerator"), "no_such_accelerator"),
    (("--training", "-s", "2,1,32,32"), "training step"),
])
def test_bad_engine_input_is_one_line(energy, args, message):
    code, out, err = energy("lenet5_bn_adder", "--engine", "zigzag", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_malformed_accelerator_file_is_one_line(energy, tmp_path):
    bad = tmp_path / "acc.yaml"
    bad.write_text("name: broken\noperational_array: {unit_energy: fast}\n")
    code, _, err = energy("lenet5_bn_adder", "--engine", "zigzag", "--accelerator", bad)
    assert code == 2 and "acc.yaml" in err and len(err.strip().splitlines()) == 1


def test_an_onnx_file_is_refused_in_one_line(energy, tmp_path):
    from adderconv.converters.onnx_export import export_onnx

    path = tmp_path / "m.onnx"
    export_onnx(nn.Sequential(nn.Conv2d(1, 2, 3)), path, (1, 1, 8, 8))
    code, _, err = energy(path, "--engine", "zigzag")
    assert code == 2 and "PyTorch model" in err


def test_without_zigzag_the_engine_is_one_line_with_the_install_hint(energy, monkeypatch):
    monkeypatch.setitem(sys.modules, "zigzag", None)             # import zigzag now raises ImportError
    code, out, err = energy("lenet5_bn_adder", "--engine", "zigzag")
    assert code == 2 and "pip install 'adderconv[zigzag]'" in err and out == ""
    assert energy("lenet5_bn_adder")[0] == 0                     # the arithmetic engine never needs it


def test_the_default_job_never_imports_zigzag():
    import subprocess

    code = ("import sys; from adderconv.analysis.command import EnergyOptions, run_energy; import io; "
            "from rich.console import Console; run_energy(EnergyOptions(), Console(file=io.StringIO())); "
            "print('zigzag' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.slow
@pytest.mark.parametrize("accelerator", ["tpu_like", "eyeriss_like"])
def test_resnet20_data_movement_narrows_the_adder_advantage(accelerator):
    """The story the report must tell: at int8 the arithmetic alone gives the adder net ~0.43x, the whole energy
    through a memory hierarchy much less of a saving (DRAM traffic is the same for both)."""
    cnn = analyze("resnet20", precision="int8", engine="zigzag", accelerator=accelerator)
    adder = analyze("resnet20_adder", precision="int8", engine="zigzag", accelerator=accelerator)
    compute = adder.totals.energy_pj / cnn.totals.energy_pj
    total = adder.dataflow_total_pj / cnn.dataflow_total_pj
    assert compute < 0.5 and compute < total < 1.0
