"""What fvcore / ptflops / torchinfo users look for (issue 27, 8): one MACs figure, a parameter count, totals per
parent module (fvcore's ``by_module``) and a tree view, in the API, the console, JSON (/4, read by the gate) and
the other views. References are independent: fvcore's own counts, ``model.parameters()``, hand formulas."""
import io
import json
import warnings

import pytest
import torch
from rich.console import Console
from torch import nn

from adderconv.analysis import analyze, count_ops
from adderconv.analysis.export import to_dict, to_json, to_markdown
from adderconv.analysis.gate import compare_to_baseline, load_baseline
from adderconv.analysis.registry import HANDLES
from adderconv.analysis.render import render_report, render_tree
from adderconv.counting import LayerCounts, ModelCounts, OpCount, Tally, macs_of, roll_up
from adderconv.zoo import get_model

aten = torch.ops.aten
#: fvcore's operator names for the products it counts (its "flops" are MACs)
FVCORE_MAC_OPS = ("conv", "linear", "matmul", "addmm", "bmm", "mm", "einsum")


def _fvcore(model, x):
    from fvcore.nn import FlopCountAnalysis

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = FlopCountAnalysis(model, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        f.by_operator()   # runs the trace once
    return f


# --- the MAC rule, handle by handle ------------------------------------------------------------------------

def _macs(op, outs, **named) -> int:
    return HANDLES[op](outs, named).macs


def test_macs_of_every_multiply_accumulate_handle():
    conv = 1 * 8 * 4 * 4 * 3 * 3 * 3                 # outputs x taps
    assert _macs(aten.convolution, [(1, 8, 4, 4)], input=(1, 3, 4, 4), weight=(8, 3, 3, 3), bias=(8,),
                 transposed=False) == conv           # the bias (8 x 16 acc) is no MAC
    assert _macs(aten.convolution_backward, [None], grad_output=(1, 8, 4, 4), input=(1, 3, 4, 4),
                 weight=(8, 3, 3, 3), transposed=False, output_mask=[True, True, True]) == 2 * conv   # dX, dW
    assert _macs(aten.linear, [(4, 5)], input=(4, 3), weight=(5, 3), bias=(5,)) == 60
    assert _macs(aten.addmm, [(4, 5)], mat1=(4, 3)) == 60
    assert _macs(aten.bmm, [(2, 4, 5)], self=(2, 4, 3)) == 120
    assert _macs(aten.matmul, [(2, 4, 5)], self=(2, 4, 3)) == 120
    assert _macs(aten.einsum, [(2, 4, 5)], equation="bij,bjk->bik", tensors=[(2, 4, 3), (2, 3, 5)]) == 120
    assert _macs(aten.einsum, [(4,)], equation="ij->i", tensors=[(4, 3)]) == 0     # a sum is no MAC
    b, h, L, S, d = 2, 4, 5, 7, 8
    assert _macs(aten.scaled_dot_product_attention, [(b, h, L, d)], query=(b, h, L, d), key=(b, h, S, d),
                 value=(b, h, S, d), attn_mask=(L, S)) == b * h * L * S * 2 * d     # Q K^T and P V


def test_macs_of_fused_ops_where_a_rule_on_their_sum_would_fail():
    """nn.MultiheadAttention's fast path and an LSTM add biases (acc alone) to elementwise work (mul/add alone):
    min(mul + add, acc) over their sum counts some of those as MACs; the rule applied per term does not."""
    b, L, S, e, h = 2, 5, 7, 16, 4
    t = HANDLES[aten._native_multi_head_attention]([(b, L, e)], dict(
        query=(b, L, e), key=(b, S, e), embed_dim=e, num_head=h, qkv_bias=(3 * e,), proj_bias=(e,), mask=None))
    expected = b * (L + 2 * S) * e * e + b * L * e * e + 2 * b * h * L * S * (e // h)   # projections, attention
    assert t.macs == expected and macs_of(t) > expected
    T, B, inp, hid = 3, 2, 5, 6
    t = HANDLES[aten.lstm.input]([(T, B, hid)], dict(
        input=(T, B, inp), params=[(4 * hid, inp), (4 * hid, hid), (4 * hid,), (4 * hid,)], has_biases=True,
        num_layers=1, bidirectional=False, batch_first=False))
    assert t.macs == T * B * 4 * hid * (inp + hid) and macs_of(t) > t.macs


def test_macs_of_adder_ops_are_their_abs_diff_accumulates():
    import adderconv.quant.op  # noqa: F401  (registers the int8 ops)

    adder = torch.ops.adderconv
    macs = 1 * 8 * 4 * 4 * 3 * 3 * 3
    assert _macs(adder.adder_conv2d, [(1, 8, 4, 4)], x=(1, 3, 4, 4), weight=(8, 3, 3, 3)) == macs
    assert _macs(adder.adder_conv2d_grad_weight, [(8, 3, 3, 3)], grad=(1, 8, 4, 4), x=(1, 3, 4, 4),
                 weight=(8, 3, 3, 3)) == macs
    assert _macs(adder.adder_conv2d_grad_input, [(1, 3, 4, 4)], grad=(1, 8, 4, 4), x=(1, 3, 4, 4),
                 weight=(8, 3, 3, 3)) == macs
    for mode in (0, 1, 2):     # the fused epilogue (scale, shift, requantise) adds no MAC
        assert _macs(adder.adder_conv2d_int8, [(1, 4, 4, 8)], x=(1, 4, 4, 3), weight=(8, 3, 3, 3), mode=mode) == macs


def test_macs_travel_with_tallies_and_roll_up():
    t = Tally(mul=4, acc=6) + Tally(mul=5, add=5)      # products with 2 biases, then a fused op's elementwise work
    assert (t.macs, (t * 3).macs, Tally.sum([t, Tally(add=3, acc=3)]).macs, macs_of(t)) == (4, 12, 7, 6)
    assert t == {"mul": 9, "add": 5, "acc": 6}           # MACs are no kind: equality sees the kinds
    assert roll_up([("b.y", 2), ("a", 1), ("b.x", 3), ("b", 4)], 0) == {"": 10, "b": 9, "b.y": 2, "b.x": 3, "a": 1}
    assert list(roll_up([("b.y", 2), ("a", 1), ("b.x", 3)], 0)) == ["", "b", "b.y", "b.x", "a"]   # depth first


# --- against fvcore, on the same models --------------------------------------------------------------------

@pytest.mark.parametrize("name", ["resnet18", "resnet20"])
def test_macs_equal_fvcores_products(name):
    if name == "resnet18":
        import torchvision

        model, x = torchvision.models.resnet18(weights=None).eval(), torch.randn(1, 3, 224, 224)
    else:
        model, x = get_model(name).eval(), torch.randn(1, 3, 32, 32)
    ours = count_ops(model, x)
    theirs = _fvcore(model, x).by_operator()
    assert ours.macs == sum(theirs.get(op, 0) for op in FVCORE_MAC_OPS) > 0
    assert ours.macs == sum(le.macs for le in ours.layers) == ours.macs_by_module()[""]


def test_by_module_of_resnet20_is_its_layers_sum_and_fvcores_conv_part():
    model, x = get_model("resnet20").eval(), torch.randn(1, 3, 32, 32)
    counts = count_ops(model, x)
    layer1 = [le for le in counts.layers if le.name.startswith("layer1.")]
    assert counts.by_module()["layer1"] == Tally.sum(le.tally for le in layer1)
    assert counts.macs_by_module()["layer1"] == sum(le.macs for le in layer1) == 6 * 16 * 16 * 9 * 32 * 32
    fv = _fvcore(model, x).by_module_and_operator()["layer1"]
    assert fv["conv"] + fv["batch_norm"] == 14_352_384 == _fvcore(model, x).by_module()["layer1"]   # the figure
    assert counts.macs_by_module()["layer1"] == fv["conv"]
    # fvcore counts an eval BatchNorm with an affine as 2 "flops" per element; we count 1 mul + 1 add, not a MAC
    bn = sum(le.tally["mul"] for le in layer1 if le.type == "BatchNorm2d")
    assert 2 * bn == fv["batch_norm"]
    with pytest.raises(KeyError, match=r"by_module\(\)\['layer1'\]"):
        counts.layer("layer1")
    with pytest.raises(KeyError, match="no layer named 'nope'"):
        counts.layer("nope")


def test_adder_net_has_the_macs_of_its_cnn():
    from adderconv.analysis.api import default_shape

    for cnn in ("resnet20", "lenet5_bn"):
        a = count_ops(get_model(cnn).eval(), torch.randn(*default_shape(cnn)))
        b = count_ops(get_model(cnn + "_adder").eval(), torch.randn(*default_shape(cnn)))
        assert a.macs == b.macs > 0 and a.macs_by_module() == b.macs_by_module()
        assert b.by_category()["adder"]["acc"] > 0


# --- parameters ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["resnet20", "resnet20_adder", "lenet5_bn_adder", "vgg_small", "sr_vdsr_adder"])
def test_params_are_the_models_parameters(name):
    model = get_model(name)
    from adderconv.analysis.api import default_shape

    counts = count_ops(model, torch.randn(*default_shape(name)))
    assert counts.params == sum(p.numel() for p in model.parameters()) == counts.trainable
    assert counts.params_by_module()[""] == counts.params
    buffers = sum(b.numel() for b in model.buffers())
    assert buffers == 0 or counts.params != counts.params + buffers                  # buffers are not counted


class _Tied(nn.Module):
    """A shared parameter (tied in/out projections), a module called twice, a module that never runs, a buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.out = nn.Linear(8, 8, bias=False), nn.Linear(8, 8)
        self.out.weight = self.inp.weight
        self.act = nn.Linear(8, 8)
        self.unused = nn.Linear(3, 2)
        self.register_buffer("stat", torch.ones(100))

    def forward(self, x):
        return self.out(self.act(self.act(self.inp(x))))


def test_params_count_a_shared_parameter_once_and_modules_that_never_ran():
    model = _Tied()
    model.act.bias.requires_grad_(False)
    expected = sum(p.numel() for p in model.parameters())
    assert expected == 64 + 8 + 72 + 8
    for capture in ("dispatch", "jit"):
        counts = count_ops(model, torch.randn(2, 8), capture=capture)
        assert counts.params == expected and counts.trainable == expected - 8, capture
        assert counts.parameters == {"inp": 64, "out": 8, "act": 72, "unused": 8}
        assert "unused" not in [le.name for le in counts.layers] and "unused" in counts.params_by_module()
    assert count_ops(torch.export.export(model, (torch.randn(2, 8),)), torch.randn(2, 8)).params == expected
    report = analyze(model, (2, 8))
    assert report.params == expected and report.module("unused").params == 8 and report.module("unused").macs == 0


def test_onnx_params_are_the_models_with_folded_batchnorms_stated():
    """An ONNX file holds the parameters the exporter kept: a BatchNorm it folded into the conv before it (the first
    conv and the classifier of the adder net; every one in the CNN) leaves one bias per channel where the model had
    a scale and a shift. Distinct values are needed: the exporter merges equal initializers (a fresh BatchNorm's)."""
    from adderconv.analysis.onnx_frontend import count_onnx
    from adderconv.converters.onnx_export import export_onnx_model

    for name in ("resnet20_adder", "resnet20"):
        model = get_model(name).eval()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    for t in (m.weight, m.bias, m.running_mean, m.running_var):
                        t.uniform_(0.5, 1.5)
        ours = count_ops(model, torch.randn(1, 3, 32, 32))
        onnx_counts = count_onnx(export_onnx_model(model, (1, 3, 32, 32))[0])
        folded = {k for k in ours.parameters if k not in onnx_counts.parameters}
        assert folded and all(type(model.get_submodule(k)) is nn.BatchNorm2d for k in folded)
        channels = sum(model.get_submodule(k).num_features for k in folded)
        assert onnx_counts.params == ours.params - channels and onnx_counts.trainable is None
        assert onnx_counts.macs == ours.macs
        if name == "resnet20_adder":      # BatchNorm after an adder layer is never folded
            assert folded == {"bn1", "bn2"}


# --- views: JSON /4 and the gate, the tree ---------------------------------------------------------------------

def test_json_4_round_trips_through_the_gate_and_reads_a_3_baseline(tmp_path):
    report = analyze("resnet20_adder", precision="int8")
    data = json.loads(to_json(report))
    assert data["schema"] == "adderconv.energy/4" and data["params"] == 272_484 and data["macs"] == report.macs
    top = [m for m in data["modules"] if m["depth"] == 1]
    assert sum(m["params"] for m in top) == data["params"] and sum(m["macs"] for m in top) == data["macs"]
    assert sum(m["energy_pj"] for m in top) == pytest.approx(data["totals"]["energy_pj"])
    path = tmp_path / "base4.json"
    path.write_text(to_json(report))
    result = compare_to_baseline(to_dict(report), load_baseline(path), 0.01)
    assert result.ok and "params" in [r.metric for r in result.rows]
    old = {k: v for k, v in data.items() if k not in ("params", "trainable_params", "macs", "modules")}
    old["schema"] = "adderconv.energy/3"
    (tmp_path / "base3.json").write_text(json.dumps(old))
    result = compare_to_baseline(to_dict(report), load_baseline(tmp_path / "base3.json"), 0.01)
    assert result.ok and "params" not in [r.metric for r in result.rows]
    assert {r.metric: r.current for r in result.rows}["acc"] == data["totals"]["acc"]   # /3 has acc: not folded
    grown = {**to_dict(report), "params": data["params"] + 10_000}       # a model that grew, counts unchanged
    assert [r.metric for r in compare_to_baseline(grown, data, 0.01).regressions] == ["params"]


def _tree(report, depth):
    console = Console(file=io.StringIO(), width=140)
    render_tree(report, console, depth=depth)
    return console.file.getvalue().splitlines()


def test_tree_indents_each_module_under_its_parent_with_its_sums():
    report = analyze("resnet20")
    lines = _tree(report, 2)
    rows = {line.split()[0]: line for line in lines if line.strip() and line.split()[0] in
            ("(model)", "layer1", "layer1.0", "conv1")}
    indent = {k: len(v) - len(v.lstrip()) for k, v in rows.items()}
    assert indent["layer1"] == indent["(model)"] + 2 == indent["conv1"] and indent["layer1.0"] == indent["layer1"] + 2
    assert rows["(model)"].split()[1] == f"{report.params:,}" == "272,484"
    assert rows["layer1"].split()[1:3] == ["14,016", "14.16M"] and rows["layer1"].rstrip().endswith("%")
    assert not any("layer1.0.conv1" in line for line in lines)                  # below depth 2: folded
    assert any("layer1.0.conv1" in line for line in _tree(report, None))
    assert sum(1 for line in _tree(report, 0) if "(model)" in line) == 1 and not any(
        "layer1" in line for line in _tree(report, 0))
    with pytest.raises(Exception, match="`depth` must be"):
        render_tree(report, Console(file=io.StringIO()), depth=-1)


def test_console_markdown_and_html_state_params_and_macs():
    report = analyze("resnet20_adder")
    console = Console(file=io.StringIO(), width=140)
    render_report(report, console, top=3)
    out = console.file.getvalue()
    assert "272,484 parameters (all trainable); 40.81M MACs" in out
    md = to_markdown(report)
    assert "272,484 parameters (all trainable), 40.81M MACs" in md and "&nbsp;&nbsp;`layer1`" in md
    pytest.importorskip("matplotlib")
    from adderconv.analysis.html_report import to_html

    page = to_html(report)
    assert "<h2>Modules</h2>" in page and "<details open>" in page and '<td class="n" data-v="272484">' in page


def test_a_model_counts_record_without_captures():
    conv = LayerCounts("b.conv", "Conv2d", [OpCount("aten::convolution", "conv", Tally(mul=8, acc=10))])
    counts = ModelCounts([conv], parameters={"b.conv": 36, "c": 5})
    assert counts.by_module().keys() == counts.macs_by_module().keys() == counts.params_by_module().keys()
    assert counts.params_by_module() == {"": 41, "b": 36, "b.conv": 36, "c": 5}


def test_energy_tree_on_the_command_line(run_cli):
    code, out, err = run_cli("energy", "resnet20", "--tree", "--depth", "1")
    assert code == 0, err
    tree = out[out.index("Modules ("):]
    rows = [line.split() for line in tree.splitlines() if line.strip().startswith(("(model)", "layer1"))]
    assert [r[0] for r in rows] == ["(model)", "layer1"] and rows[0][1] == "272,484"      # depth 1: no layer1.0
    code, _, err = run_cli("energy", "resnet20", "--tree", "--depth", "-1")
    assert code == 2 and err.startswith("error: --depth must be"), err
