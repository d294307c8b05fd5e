"""The ZigZag engine (adderconv.analysis.zigzag): ZigZag's own result reproduced through our path, exact re-pricing,
layer shapes, bad input as one line. The tests that run ZigZag need the extra ([dev] and CI install it)."""
import functools
import logging
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from adderconv import AdderConv1d, AdderConv2d, AdderLinear
from adderconv.analysis import zigzag as zz
from adderconv.analysis.zigzag import LayerSpec, layer_specs, require_zigzag, resolve_accelerator, run_dataflow
from adderconv.errors import AdderconvError


def _zigzag(fn):
    """A test that runs ZigZag. ZigZag is a [dev] dependency, so these run wherever the tests run: without it they
    fail (with the install hint), they never skip into green."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        require_zigzag()
        return fn(*args, **kwargs)
    return run


zigzag_installed = _zigzag


@pytest.fixture()
def root_logger_kept():
    """ZigZag's API calls logging.basicConfig(INFO) when called directly: put the root logger back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def _hardware(name: str) -> Path:
    import zigzag

    return Path(zigzag.__file__).parent / "inputs" / "hardware" / f"{name}.yaml"


def _unit_energy(name: str) -> float:
    import yaml

    return float(yaml.safe_load(_hardware(name).read_text())["operational_array"]["unit_energy"])


# --- layer shapes (no ZigZag needed) --------------------------------------------------------------------------


def test_layer_specs_against_hand_written_shapes():
    model = nn.Sequential(
        nn.Conv2d(3, 8, (3, 5), stride=(2, 1), padding=(1, 2)),      # non-square: height and width kept apart
        AdderConv2d(8, 16, 3, padding=1),
        nn.Conv2d(16, 16, 3, groups=16, dilation=2),                  # depthwise, dilated
        nn.Flatten(),
        nn.Linear(16 * 12 * 27, 10),
        AdderLinear(10, 4),
    )
    got = layer_specs(model, (1, 3, 32, 31))
    assert got == [
        LayerSpec("0", "conv", 1, 8, 3, 16, 31, 3, 5, 2, 1, 1, 2, 1, 1, 1, 32, 31),
        LayerSpec("1", "adder", 1, 16, 8, 16, 31, 3, 3, 1, 1, 1, 1, 1, 1, 1, 16, 31),
        LayerSpec("2", "conv", 1, 16, 16, 12, 27, 3, 3, 1, 1, 0, 0, 2, 2, 16, 16, 31),
        LayerSpec("4", "linear", 1, 10, 16 * 12 * 27, 1, 1, 1, 1),
        LayerSpec("5", "adder", 1, 4, 10, 1, 1, 1, 1),
    ]
    assert got[0].macs == 8 * 3 * 16 * 31 * 3 * 5
    assert got[2].macs == 16 * 1 * 12 * 27 * 9          # groups: each output channel sees c / groups inputs


def test_layer_specs_1d_and_quantised_layers():
    from adderconv.quant.layers import QuantAdderConv2d, affine_of
    from adderconv.quant.scheme import Grid

    seq = nn.Sequential(nn.Conv1d(4, 6, 3, stride=2, padding=1), AdderConv1d(6, 8, 5, padding="same"))
    assert layer_specs(seq, (2, 4, 20)) == [
        LayerSpec("0", "conv", 2, 6, 4, 1, 10, 1, 3, 1, 2, 0, 1, 1, 1, 1, 1, 20),
        LayerSpec("1", "adder", 2, 8, 6, 1, 10, 1, 5, 1, 1, 0, 2, 1, 1, 1, 1, 10),
    ]
    grid = Grid(0.05, 128)
    first = QuantAdderConv2d.from_adder(AdderConv2d(3, 8, 3, padding=1), grid)
    first.set_epilogue(*affine_of(AdderConv2d(3, 8, 3, padding=1), grid), next_grid=grid)   # uint8 NHWC codes out
    second = QuantAdderConv2d.from_adder(AdderConv2d(8, 4, 3, stride=2, padding=1), grid)    # reads those codes
    assert first.out_mode == "uint8"
    assert layer_specs(nn.Sequential(first, second), (1, 3, 10, 12)) == [
        LayerSpec("0", "adder", 1, 8, 3, 10, 12, 3, 3, 1, 1, 1, 1, 1, 1, 1, 10, 12),
        LayerSpec("1", "adder", 1, 4, 8, 5, 6, 3, 3, 2, 2, 1, 1, 1, 1, 1, 10, 12),
    ]


def test_layer_specs_allocates_nothing():
    # 3 x 200000^2 floats are 480 GB: only a fake input gets through
    specs = layer_specs(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2)), (1, 3, 200_000, 200_000))
    assert (specs[0].oy, specs[0].ox, specs[0].iy) == (99_999, 99_999, 200_000)


def test_layer_specs_refuses_what_zigzag_cannot_map():
    model = nn.Sequential()
    model.add_module("body", nn.Sequential(nn.Identity(), nn.Conv3d(1, 1, 1)))
    with pytest.raises(AdderconvError, match=r"layer 'body.1' \(Conv3d\)"):
        layer_specs(model, (1, 1, 2, 2, 2))


def test_layer_spec_validates():
    with pytest.raises(AdderconvError, match="not divisible by groups=3"):
        LayerSpec("x", "conv", 1, 8, 4, 2, 2, 3, 3, groups=3)
    with pytest.raises(AdderconvError, match="op must be one of"):
        LayerSpec("x", "matmul", 1, 8, 4, 2, 2, 3, 3)


def test_require_zigzag_without_zigzag(monkeypatch):
    monkeypatch.setitem(sys.modules, "zigzag", None)
    monkeypatch.setitem(sys.modules, "zigzag.api", None)
    with pytest.raises(AdderconvError) as e:
        require_zigzag()
    assert str(e.value) == "ZigZag is not installed: pip install 'adderconv[zigzag]'"
    with pytest.raises(AdderconvError, match="ZigZag is not installed"):
        resolve_accelerator("tpu_like")


def test_array_sizes_split_evenly():
    assert zz._scaled_sizes((32, 32), 2.4) in ((49, 50), (50, 49))     # 2.39x, the closest product
    assert zz._scaled_sizes((14, 12), 1.0) == (14, 12)
    sizes = zz._scaled_sizes((8, 8, 4, 4), 2.4)
    assert abs(sizes[0] * sizes[1] * sizes[2] * sizes[3] / 1024 / 2.4 - 1) < 0.05


# --- with ZigZag ----------------------------------------------------------------------------------------------


@zigzag_installed
def test_bad_accelerators_are_one_line(tmp_path, capsys, caplog):
    tpu = _hardware("tpu_like").read_text()
    files = {"syntax": "memories: [\n  rf: {size: 8\n", "list": "- 1\n- 2\n",
             "schema": tpu.replace("    size: 1024\n", "", 1),               # a memory without its size
             "dims": tpu.replace("sizes: [32, 32]", "sizes: [32]"),           # caught by the validator's own checks
             "imc": _hardware("aimc").read_text()}
    for name, text in files.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    bad = {"tpu-like": "unknown accelerator 'tpu-like'; choose one of tpu_like, eyeriss_like",
           str(tmp_path / "missing.yaml"): "does not exist",
           **{str(tmp_path / f"{name}.yaml"): "is not a valid ZigZag accelerator" for name in ("syntax", "list")},
           str(tmp_path / "schema.yaml"): r"not a valid ZigZag accelerator \(ValueError: .*'size': \['required",
           str(tmp_path / "dims.yaml"): "Core dimensions and sizes do not match",
           str(tmp_path / "imc.yaml"): "in-memory-computing arrays are not supported"}
    for arg, match in bad.items():
        with pytest.raises(AdderconvError, match=match) as e:
            resolve_accelerator(arg)
        assert "\n" not in str(e.value)
    assert resolve_accelerator("tpu_like") == _hardware("tpu_like")
    mine = tmp_path / "mine.yml"                          # the user's own file, under YAML's other suffix
    mine.write_text(_hardware("eyeriss_like").read_text())
    assert resolve_accelerator(str(mine)) == mine
    assert capsys.readouterr().err == "" and not [r for r in caplog.records if r.name.startswith("zigzag")]


@zigzag_installed
def test_every_offered_accelerator_parses():
    for name in zz.ACCELERATORS:
        zz._parse_accelerator(resolve_accelerator(name))


def _onnx_convs():
    """Two convs (3x3 pad 1, then 3x3 stride 2 pad 1), as a hand-built, shape-inferred ONNX model of batch 1."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w1, w2 = numpy_helper.from_array(torch.zeros(16, 8, 3, 3).numpy(), "w1"), \
        numpy_helper.from_array(torch.zeros(32, 16, 3, 3).numpy(), "w2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["y1"], name="c1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["y1", "w2"], ["y2"], name="c2", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                              strides=[2, 2])]
    graph = helper.make_graph(nodes, "two_convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                 [1, 8, 16, 16])],
                              [helper.make_tensor_value_info("y2", TensorProto.FLOAT, [1, 32, 8, 8])], [w1, w2])
    return onnx.shape_inference.infer_shapes(helper.make_model(graph))


@zigzag_installed
def test_zigzag_onnx_example_reproduced(tmp_path, root_logger_kept):
    """ZigZag run as its users run it (its ONNX front end, its tpu_like accelerator and mapping, its widths: 8-bit
    operands, 16-bit partial sums) and our path on the same layers agree exactly, level by level."""
    from zigzag.api import get_hardware_performance_zigzag

    hw = _hardware("tpu_like")
    mapping = hw.parent.parent / "mapping" / "tpu_like.yaml"
    _, latency, cmes = get_hardware_performance_zigzag(_onnx_convs(), str(hw), str(mapping), opt="latency",
                                                       dump_folder=str(tmp_path), lpf_limit=4,
                                                       loma_show_progress_bar=False)
    theirs = sorted(cmes[0][1], key=lambda c: c[0].layer.id)
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.Conv2d(16, 32, 3, stride=2, padding=1))
    specs = layer_specs(model, (1, 8, 16, 16))
    unit = _unit_energy("tpu_like")
    ours = run_dataflow(specs, "tpu_like", unit_pj={s.name: unit for s in specs}, operand_bits=8,
                        accumulator_bits=16, lpf_limit=4)
    assert ours.notes == ()                                 # nothing widened at ZigZag's own widths
    assert ours.latency_cycles == latency
    for (cme, _), layer in zip(theirs, ours.layers, strict=True):
        levels = {}
        for op, energies in cme.mem_energy_breakdown.items():
            mem_op = cme.memory_operand_links.layer_to_mem_op(op)
            for level, pj in zip(cme.accelerator.memory_hierarchy.get_memory_levels(mem_op=mem_op), energies):
                levels[level.name] = levels.get(level.name, 0.0) + pj
        assert layer.macs == cme.layer.total_mac_count
        assert layer.compute_pj == layer.engine_compute_pj == cme.mac_energy
        assert {k: v for k, v in layer.memory_pj.items() if k in levels} == levels
        assert set(layer.memory_pj) == {"rf_128B", "rf_2B", "sram_2MB", "dram"}
        assert layer.latency_cycles == cme.latency_total2
        assert layer.utilization == cme.mac_utilization2
        assert layer.compute_pj + layer.memory_total_pj == pytest.approx(cme.energy_total, rel=1e-12)


@pytest.fixture(scope="module")
def small_net():
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), AdderConv2d(16, 16, 3, padding=1),
                          AdderConv2d(16, 16, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    return layer_specs(model, (1, 3, 8, 8))


@zigzag_installed
def test_repricing_is_exact_and_changes_nothing_else(small_net, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    before = (list(root.handlers), root.level, logging.getLogger("zigzag").level)
    prices = {"0": 0.3, "1": 0.13, "2": 0.13, "5": 0.3}       # int8 MAC vs SAD unit with int32 accumulation
    first = run_dataflow(small_net, "tpu_like", unit_pj=prices, lpf_limit=2)
    second = run_dataflow(small_net, "tpu_like", unit_pj={k: 1.0 for k in prices}, lpf_limit=2)
    unit = _unit_energy("tpu_like")
    assert [layer.name for layer in first.layers] == ["0", "1", "2", "5"]
    for layer in first.layers:
        assert layer.compute_pj == layer.macs * prices[layer.name]
        assert layer.engine_compute_pj == unit * layer.macs
    assert first.compute_pj == sum(layer.macs * prices[layer.name] for layer in first.layers)
    assert first.memory_pj == second.memory_pj and first.latency_cycles == second.latency_cycles
    assert first.layers[1].memory_pj == first.layers[2].memory_pj        # one geometry, one search
    assert first.total_pj == first.compute_pj + sum(first.memory_pj.values())
    assert 0 < min(layer.utilization for layer in first.layers) <= 1
    # 32-bit partial sums do not fit tpu_like's 16-bit output register: widened, and said so
    assert any(note.startswith("rf_2B widened") for note in first.notes)
    # our output stays clean: no log lines, no progress bar, no outputs/ folder, the logging setup as it was
    out = capsys.readouterr()
    assert out.out == out.err == ""
    assert list(tmp_path.iterdir()) == []
    assert (list(root.handlers), root.level, logging.getLogger("zigzag").level) == before


@zigzag_installed
def test_run_dataflow_bad_input(small_net):
    with pytest.raises(AdderconvError, match="no unit energy for layer '5'"):
        run_dataflow(small_net, "tpu_like", unit_pj={"0": 1, "1": 1, "2": 1})
    with pytest.raises(AdderconvError, match="unknown accelerator"):
        run_dataflow(small_net, "tpu", unit_pj=dict.fromkeys("0125", 1.0))
    with pytest.raises(AdderconvError, match="`array_scale` must be a positive factor"):
        run_dataflow(small_net, "tpu_like", unit_pj=dict.fromkeys("0125", 1.0), array_scale=0)


@zigzag_installed
def test_larger_array_is_not_slower():
    """The same-area comparison: a ResNet-20 layer (3x3, 32 channels, 16x16) on 2.4x the units."""
    specs = [LayerSpec("layer2.1.conv1", "adder", 1, 32, 32, 16, 16, 3, 3, py=1, px=1)]
    base = run_dataflow(specs, "tpu_like", unit_pj={"layer2.1.conv1": 0.13}, lpf_limit=2)
    big = run_dataflow(specs, "tpu_like", unit_pj={"layer2.1.conv1": 0.13}, lpf_limit=2, array_scale=2.4)
    assert base.array_sizes == (32, 32) and base.array_scale == 1
    assert big.array_scale == pytest.approx(big.array_sizes[0] * big.array_sizes[1] / 1024)
    assert abs(big.array_scale / 2.4 - 1) < 0.01
    assert any("operational array 32x32" in note for note in big.notes)
    assert big.latency_cycles <= base.latency_cycles
    assert big.compute_pj == base.compute_pj                 # the same operations, priced the same


@zigzag_installed
def test_one_search_per_geometry_and_setup_in_a_process(small_net, monkeypatch):
    """A CNN and its adder net have the same geometries: the second report re-prices the first one's search."""
    calls = []
    search = zz._search
    monkeypatch.setattr(zz, "_search", lambda workload, *a: calls.append(len(workload)) or search(workload, *a))
    monkeypatch.setattr(zz, "_SEARCHED", {})
    a = run_dataflow(small_net, "tpu_like", unit_pj=dict.fromkeys("0125", 0.3), lpf_limit=2)
    b = run_dataflow(small_net, "tpu_like", unit_pj=dict.fromkeys("0125", 0.13), lpf_limit=2)
    assert calls == [3]                   # 4 layers, 3 geometries (the two adder layers are alike), one search
    assert a.memory_pj == b.memory_pj and a.latency_cycles == b.latency_cycles and b.seconds < a.seconds
    assert b.compute_pj == pytest.approx(a.compute_pj * 0.13 / 0.3)
    run_dataflow(small_net, "tpu_like", unit_pj=dict.fromkeys("0125", 0.3), lpf_limit=2, accumulator_bits=16)
    assert calls == [3, 3]                # other widths: another setup, another search
