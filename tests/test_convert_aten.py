"""The ATen-level rewrite of a torch.export graph: functional convs, padding modes, the same policy."""
import torch
import torch.nn.functional as F
from torch import nn

from adderconv.converters import Policy, convert
from adderconv.converters.aten_rewrite import convert_exported
from adderconv.converters.report import conversion_report
from adderconv.functional import adder_conv as adder_conv_like
from adderconv.reference import adder_conv2d_reference

from conftest import X, HardCase  # tests/conftest.py (tests/ is on sys.path, pytest prepend mode)


def _targets(gm):
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


def test_hard_case_rewrite_reaches_the_functional_conv():
    gm = convert_exported(HardCase(), (X,))
    report = conversion_report(gm)
    names = {r.name for r in report.converted}
    functional = [r for r in report.converted if r.type_name == "functional"]
    assert len(functional) == 1 and functional[0].name.startswith("conv2d")
    assert names - {functional[0].name} == {"blocks.0.0", "blocks.1.0", "shared", "dw", "grouped", "heads.a", "seq"}
    assert {r.name for r in report.kept} == {"stem", "fc"}      # heads.unused never runs: not in the graph
    assert _targets(gm).count(adder_conv_like) == 9               # the shared conv runs twice: two sites
    aten = torch.ops.aten
    assert sum(t in (aten.conv2d.default, aten.conv2d.padding, aten.conv1d.default) for t in _targets(gm)) == 1
    y = gm(X)
    assert y.shape == (2, 5) and torch.isfinite(y).all()
    # BN inserted where the adder output meets no norm: shared (both calls), the functional conv, heads.a, seq
    assert sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for n, m in gm.named_children()
               if n.startswith("adder_bn_")) == 5


def test_rewrite_matches_module_swap_on_the_same_layers():
    model = HardCase().eval()
    policy = Policy(insert_bn=False, exclude=("conv2d*",))          # leave the functional conv to both
    gm = convert_exported(model, (X,), policy)
    report = conversion_report(gm)
    swapped = convert(model, policy, example_inputs=(X,)).eval()
    assert {r.name for r in report.converted} == {r.name for r in swapped.adderconv_report.converted} - {"heads.unused"}
    torch.testing.assert_close(gm(X), swapped(X), rtol=1e-5, atol=1e-4)


def test_functional_conv_with_padding_modes_matches_the_reference():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.w1 = nn.Parameter(torch.randn(6, 3, 3, 3))
            self.w2 = nn.Parameter(torch.randn(6, 6, 3, 3))

        def forward(self, x):
            y = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.w1)
            return F.conv2d(y, self.w2, padding="same", dilation=2)

    net = Net().double()
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    gm = convert_exported(net, (x,), Policy(keep_first=False, keep_last=False, insert_bn=False))
    report = conversion_report(gm)
    assert len(report.converted) == 2
    ref = adder_conv2d_reference(F.pad(x, (1, 1, 1, 1), mode="reflect"), net.w1)
    ref = adder_conv2d_reference(ref, net.w2, padding=2, dilation=2)
    torch.testing.assert_close(gm(x), ref)


def test_addersr_preset_in_the_graph():
    sr = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                       nn.Conv2d(8, 1, 3, padding=1))
    gm = convert_exported(sr, (torch.randn(1, 1, 10, 10),), Policy.addersr())
    report = conversion_report(gm)
    (rec,) = report.converted
    assert rec.name == "2" and rec.shortcut and rec.bn_inserted and rec.power
    assert torch.add in _targets(gm)
    assert gm(torch.randn(2, 1, 10, 10)).shape == (2, 1, 10, 10)


def test_inserted_bn_in_the_graph_is_recalibrated_and_the_graph_refuses_training():
    import pytest

    from adderconv.converters import recalibrate_bn
    from adderconv.errors import AdderconvError

    chain = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 2, 1))
    gm = convert_exported(chain, (torch.randn(1, 3, 10, 10),))
    (bn,) = [m for n, m in gm.named_children() if n.startswith("adder_bn_")]
    feats = []
    h = bn.register_forward_hook(lambda m, i, o: feats.append(i[0].detach()))
    data = [torch.randn(4, 3, 10, 10) for _ in range(2)]
    recalibrate_bn(gm, data)
    h.remove()
    torch.testing.assert_close(bn.running_mean, torch.cat(feats).transpose(0, 1).flatten(1).mean(1))
    assert not gm.training
    with pytest.raises(AdderconvError, match="eval mode"):
        gm.train()
