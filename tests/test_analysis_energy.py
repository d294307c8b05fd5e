"""Energy = price list x counts: the built-in table, user tables, per-layer precision, memory model."""
import pytest
import torch
from torch import nn

from adderconv.analysis import Tally, analyze, load_table
from adderconv.analysis.tables import PRECISIONS
from adderconv.errors import AdderconvError


def test_builtin_table_has_horowitz_numbers_and_marks_estimates():
    t = load_table()
    published = {("int8", "add"): 0.03, ("int8", "mul"): 0.2, ("int16", "add"): 0.05, ("int32", "add"): 0.1,
                 ("int32", "mul"): 3.1, ("fp16", "add"): 0.4, ("fp16", "mul"): 1.1, ("fp32", "add"): 0.9,
                 ("fp32", "mul"): 3.7}
    for (p, k), pj in published.items():
        e = t.entry(p, k)
        assert e.pj == pj and not e.estimate and "Horowitz" in e.source
    for p, k in (("int16", "mul"), ("bf16", "add"), ("bf16", "mul")):
        assert t.entry(p, k).estimate and "estimate" in t.entry(p, k).source
    assert set(t.compute) == set(PRECISIONS)
    assert (t.memory_price("sram_8kb"), t.memory_price("dram")) == (5.0, 640.0)
    assert t.price("fp32", "exp") is None                     # unpriced, never 0


def test_energy_is_counts_times_prices_per_layer():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    r = analyze(model, (1, 3, 8, 8), precision="fp32", layer_precision={"3": "int8"})
    conv, relu, fc = r.layers
    assert conv.energy_pj == pytest.approx(conv.mul * 3.7 + conv.add * 0.9)
    assert relu.energy_pj == pytest.approx(relu.counts["cmp"] * 0.9)
    # int8 operands (0.2 pJ mult), accumulated in int32 (0.1 pJ add), the bias too
    assert fc.precision == "int8" and fc.energy_pj == pytest.approx(fc.mul * 0.2 + fc.counts["acc"] * 0.1)
    assert fc.counts["acc"] == fc.add == fc.mul + 5
    assert r.totals.energy_pj == pytest.approx(sum(le.energy_pj for le in r.layers))
    assert sum(r.share(le) for le in r.layers) == pytest.approx(1.0)
    assert r.estimates == [] and r.totals.memory_pj == 0


def test_memory_model_by_hand():
    conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
    r = analyze(conv, (1, 2, 5, 5), precision="int8", memory="dram")
    # weights 72 + input 50 + output 100 elements, 1 byte each at int8, packed into 32-bit words, 640 pJ/word
    assert r.totals.memory_pj == pytest.approx((72 + 50 + 100) / 4 * 640)
    with pytest.raises(AdderconvError, match="no memory level 'l3'"):
        analyze(conv, (1, 2, 5, 5), memory="l3")


def test_estimates_are_reported_and_scaling_multiplies_every_price():
    lin = nn.Linear(8, 8)
    r = analyze(lin, (1, 8), precision="bf16")
    assert any(e.startswith("bf16 mul") for e in r.estimates)
    base, half = analyze(lin, (1, 8)), analyze(lin, (1, 8), energy_scale=0.5)
    assert half.totals.energy_pj == pytest.approx(base.totals.energy_pj / 2)


def test_bad_tables_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[compute.fp32]\nadd = { pj = 1.0 }\n')
    with pytest.raises(AdderconvError, match="non-empty 'source'"):
        load_table(bad)
    bad.write_text('[compute.fp32]\nflop = { pj = 1.0, source = "x" }\n')
    with pytest.raises(AdderconvError, match="unknown operation kind 'flop'"):
        load_table(bad)
    bad.write_text("not toml [")
    with pytest.raises(AdderconvError, match="not valid TOML"):
        load_table(bad)
    with pytest.raises(AdderconvError, match="cannot read price list"):
        load_table(tmp_path / "missing.toml")


def test_analyze_restores_training_mode_and_needs_a_shape_for_modules():
    model = nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)).train()
    r = analyze(model, (1, 1, 2, 2))
    assert model.training and r.layers[1].counts == Tally(mul=4, add=4)     # counted in eval mode
    with pytest.raises(AdderconvError, match="input shape"):
        analyze(model)
    with pytest.raises(AdderconvError, match="does not run on an input of shape"):
        analyze(model, (1, 3, 2, 2))
    assert torch.is_grad_enabled()
