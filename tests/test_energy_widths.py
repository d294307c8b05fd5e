"""Accumulations priced at the accumulator's width, the papers' one-width convention, processing-element area,
and the gate across conventions. Every expected figure is written out by hand from the Horowitz 45 nm table
(pJ: int8 add 0.03, mult 0.2; int32 add 0.1; fp32 add 0.9, mult 3.7; um^2: int8 add 36, mult 282, int32 add
137, fp32 add 4184, mult 7700)."""
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from adderconv.analysis import analyze
from adderconv.analysis.energy import accumulator_for
from adderconv.analysis.export import SCHEMA, to_dict
from adderconv.analysis.gate import compare_to_baseline, parse_increase
from adderconv.errors import AdderconvError
from adderconv.layers import AdderConv2d

MACS = 1 * 8 * 4 * 4 * (4 * 3 * 3)       # a 3x3, 4 -> 8 channel layer on 1x4x6x6: 4,608 MACs
BEFORE = json.loads((Path(__file__).parent / "data" / "energy_before_acc.json").read_text())["models"]


def _layer(layer: nn.Module, **kw):
    report = analyze(nn.Sequential(layer), (1, 4, 6, 6), **kw)
    return report, report.layers[-1]


@pytest.mark.parametrize("pricing, conv_pj, adder_pj", [
    ("hardware", MACS * (0.2 + 0.1), MACS * (0.03 + 0.1)),     # int8 operands, int32 accumulator
    ("papers", MACS * (0.2 + 0.03), MACS * (0.03 + 0.03)),     # everything at 8 bits, as before
])
def test_one_conv_and_one_adder_layer_priced_by_hand_at_int8(pricing, conv_pj, adder_pj):
    _, conv = _layer(nn.Conv2d(4, 8, 3, bias=False), precision="int8", pricing=pricing)
    _, adder = _layer(AdderConv2d(4, 8, 3), precision="int8", pricing=pricing)
    assert (conv.mul, conv.counts["acc"], conv.counts["add"]) == (MACS, MACS, 0)
    assert (adder.mul, adder.counts["add"], adder.counts["acc"]) == (0, MACS, MACS)
    assert conv.add == adder.add / 2 == MACS                    # the papers' #Add: add + acc
    assert conv.energy_pj == pytest.approx(conv_pj, rel=1e-12)
    assert adder.energy_pj == pytest.approx(adder_pj, rel=1e-12)
    assert conv.accumulator == adder.accumulator == ("int32" if pricing == "hardware" else "int8")


def test_a_bias_is_added_into_the_accumulator():
    _, conv = _layer(nn.Conv2d(4, 8, 3, bias=True), precision="int8")
    assert conv.counts["acc"] == MACS + 8 * 4 * 4
    assert conv.energy_pj == pytest.approx(MACS * 0.2 + (MACS + 128) * 0.1)


def test_an_explicit_accumulator_and_fp16_defaults():
    _, conv = _layer(nn.Conv2d(4, 8, 3, bias=False), precision="int8", accumulator="int16")
    assert conv.energy_pj == pytest.approx(MACS * (0.2 + 0.05))
    _, conv = _layer(nn.Conv2d(4, 8, 3, bias=False), precision="fp16")
    assert conv.accumulator == "fp32" and conv.energy_pj == pytest.approx(MACS * (1.1 + 0.9))
    assert [accumulator_for(p) for p in ("int8", "int16", "fp16", "bf16", "fp32")] == \
        ["int32", "int32", "fp32", "fp32", "fp32"]


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_the_papers_convention_reproduces_the_figures_from_before_the_split(name):
    ref = BEFORE[name]
    for precision in ("fp32", "int8"):
        r = analyze(name, precision=precision, pricing="papers")
        assert (r.totals.mul, r.totals.add) == (ref["mul"], ref["add"])
        assert round(r.totals.energy_pj, 3) == pytest.approx(ref[f"energy_{precision}_pj"], abs=1e-3)
    if precision == "fp32":                 # fp32 accumulates in fp32 anyway: both conventions agree
        assert analyze(name).totals.energy_pj == pytest.approx(ref["energy_fp32_pj"])


def test_resnet20_int8_ratio_with_int32_accumulators_is_near_the_hand_estimate():
    cnn, adder = analyze("resnet20", precision="int8"), analyze("resnet20_adder", precision="int8")
    ratio = adder.totals.energy_pj / cnn.totals.energy_pj
    papers = (analyze("resnet20_adder", precision="int8", pricing="papers").totals.energy_pj
              / analyze("resnet20", precision="int8", pricing="papers").totals.energy_pj)
    # the MACs alone: (0.03 + 0.1) / (0.2 + 0.1) = 0.433; BatchNorm, ReLU and the kept layers move it a little
    assert 0.40 < ratio < 0.47 and papers == pytest.approx(0.273, abs=0.002)


@pytest.mark.parametrize("precision, mac, sad", [("int8", 282 + 137, 36 + 137), ("fp32", 7700 + 4184, 4184 + 4184)])
def test_processing_element_area_of_a_mac_and_a_sad_unit(precision, mac, sad):
    cnn, adder = analyze("resnet20", precision=precision), analyze("resnet20_adder", precision=precision)
    assert (cnn.main_unit.unit, cnn.main_unit.um2) == ("MAC", mac)
    assert (adder.main_unit.unit, adder.main_unit.um2) == ("SAD", sad)
    kept = [u for u in adder.units if u.unit == "MAC"]        # the first conv and the classifier stay MACs
    assert len(kept) == 1 and kept[0].macs < adder.main_unit.macs / 50
    layer = next(le for le in adder.layers if le.unit == "SAD")
    assert layer.unit_um2 == sad
    _, papers = _layer(AdderConv2d(4, 8, 3), precision="int8", pricing="papers")
    assert papers.unit_um2 == 36 + 36


def test_every_view_states_the_widths(energy, tmp_path):
    code, out, err = energy("resnet20_adder", "--precision", "int8", "--json", tmp_path / "r.json",
                            "--markdown", tmp_path / "r.md")
    assert code == 0, err
    assert "int8 / int32" in out and "SAD" in out and "173 um^2" in out
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["schema"] == SCHEMA and data["pricing"] == "hardware" and "int8 / int32" in data["widths"]
    assert data["totals"]["acc"] > 0 and data["units"][0] == {"unit": "SAD", "precision": "int8",
                                                              "accumulator": "int32", "um2": 173.0,
                                                              "macs": data["units"][0]["macs"],
                                                              "layers": data["units"][0]["layers"]}
    assert "int8 / int32" in (tmp_path / "r.md").read_text() and "engine arithmetic" in (tmp_path / "r.md").read_text()
    assert "engine arithmetic" in out
    code, out, _ = energy("resnet20_adder", "--precision", "int8", "--pricing", "papers")
    assert code == 0 and "papers' convention" in out


@pytest.mark.parametrize("args, message", [
    (("--accumulator", "int2"), "precision 'int2'"),   # int4..int7 are widths (issue 26)
    (("--pricing", "paper"), "unknown pricing convention 'paper'"),
    (("--pricing", "papers", "--accumulator", "int32"), "contradicts"),
    (("--engine", "dataflow"), "unknown energy engine 'dataflow'"),
    (("--same-area",), "belong to the zigzag engine"),
    (("--accelerator", "eyeriss_like"), "belong to the zigzag engine"),
])
def test_bad_width_and_engine_options_are_one_line(energy, args, message):
    code, out, err = energy("lenet5_bn", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def _report(name="lenet5_bn", **kw):
    return to_dict(analyze(name, **kw))


def test_the_gate_refuses_another_convention_engine_shape_or_model():
    base = _report(precision="int8")
    for other, what in ((_report(precision="int8", pricing="papers"), "widths"),
                        (_report(precision="fp32"), "precision"),
                        (_report("lenet5_bn_adder", precision="int8"), "model"),
                        (_report(precision="int8", accumulator="int16"), "widths"),
                        ({**base, "engine": "zigzag", "accelerator": "tpu_like"}, "engine")):
        with pytest.raises(AdderconvError, match=what):
            compare_to_baseline(other, base, 0.01)
    assert compare_to_baseline(base, base, 0.0).ok


def test_the_gate_reads_an_older_schema_under_the_papers_convention():
    now = _report(precision="int8", pricing="papers")
    old = json.loads(json.dumps(now))
    old["schema"] = "adderconv.energy/2"
    for t in (old["totals"], *old["layers"]):
        t["add"] += t.pop("acc")                # an older report counted accumulations as adds
    for key in ("pricing", "accumulator", "engine", "accelerator"):
        old.pop(key)
    assert compare_to_baseline(now, old, 0.0).ok
    with pytest.raises(AdderconvError, match="widths"):          # /2 was priced the papers' way
        compare_to_baseline(_report(precision="int8"), old, 0.01)
    old["totals"]["add"] -= 1000
    assert [r.metric for r in compare_to_baseline(now, old, 0.0).regressions] == ["add"]


def test_the_gate_catches_kinds_it_does_not_price_and_operators_without_a_handle():
    base = _report()
    more = json.loads(json.dumps(base))
    more["totals"]["div"] += 9_800_000                             # unpriced work, energy unchanged
    assert "div" in [r.metric for r in compare_to_baseline(more, base, 0.01).regressions]
    more = json.loads(json.dumps(base))
    more["unsupported"] = {"aten::mystery": 200}
    metrics = [r.metric for r in compare_to_baseline(more, base, 0.01).regressions]
    assert "aten::mystery" in metrics and "unsupported" in metrics


@pytest.mark.parametrize("text", ["1%%%", "1_0%", "\u0661%", "-1%", "nan", "1e2%", "inf", "", "%"])
def test_the_allowed_increase_has_one_plain_form(text):
    with pytest.raises(AdderconvError, match="percentage"):
        parse_increase(text)


@pytest.mark.parametrize("text, value", [("1%", 0.01), ("0.5", 0.005), (" 2.5% ", 0.025), ("0", 0.0)])
def test_plain_percentages_parse(text, value):
    assert parse_increase(text) == pytest.approx(value)


def test_a_baseline_with_a_400_digit_integer_is_one_line(energy, tmp_path):
    base = _report()
    base["totals"]["mul"] = 10 ** 400
    path = tmp_path / "base.json"
    path.write_text(json.dumps(base))
    code, _, err = energy("lenet5_bn", "--baseline", path)
    assert code == 2 and "too large" in err and "Traceback" not in err


def test_int8_quantised_layers_carry_their_int32_accumulator():
    """A layer that declares int8 (a quantised adder) is priced with an int32 accumulator in an fp32 report."""
    class Declared(nn.Conv2d):
        energy_precision = "int8"

    report = analyze(nn.Sequential(Declared(4, 8, 3, bias=False), nn.Conv2d(8, 8, 1, bias=False)), (1, 4, 6, 6))
    layers = {le.name: le for le in report.layers}
    declared, plain = layers["0"], layers["1"]
    assert (declared.precision, declared.accumulator) == ("int8", "int32")
    assert (plain.precision, plain.accumulator) == ("fp32", "fp32")
    assert declared.energy_pj == pytest.approx(MACS * 0.3)
    torch.testing.assert_close(torch.tensor(report.totals.energy_pj),
                               torch.tensor(MACS * 0.3 + 8 * 8 * 4 * 4 * (3.7 + 0.9)), rtol=1e-9, atol=0)
