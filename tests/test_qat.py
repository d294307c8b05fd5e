"""Quantisation-aware fine-tuning (issue 26): a few SGD steps through the fake-quantised grids, then quantize gives
the fake-quantised model's outputs (up to float rounding), at several widths and group counts."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import adderconv
from adderconv import AdderconvError, get_model
from adderconv.quant import FakeQuantAdder, QuantAdderConv2d, prepare_qat
from adderconv.quant.scheme import Grid, fake_quant


def test_fake_quant_is_the_grid_with_a_straight_through_gradient():
    g = Grid.from_range(0.0, 2.0, 4)
    v = torch.tensor([-1.0, 0.07, 0.5, 1.93, 3.0], requires_grad=True)
    q = fake_quant(v, g)
    assert torch.equal(q.detach(), g.values(g.codes(v.detach())))
    q.sum().backward()
    assert v.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]          # clipped inputs get no gradient
    kept = fake_quant(v.detach(), g, keep_outside=True)           # weights outside stay: the clamp is exact
    assert kept[0].item() == -1.0 and kept[4].item() == 3.0 and kept[2].item() == q[2].item()


@pytest.mark.parametrize("bits, groups", [(8, 1), (6, 2), (4, 1), (4, 2)])
def test_quantize_after_qat_equals_the_fake_quant_model(bits, groups, with_bn_stats):
    torch.manual_seed(0)
    net = with_bn_stats(get_model("lenet5_bn_adder"), (1, 32, 32))
    gen = torch.Generator().manual_seed(1)
    calib = torch.randn(32, 1, 32, 32, generator=gen)
    qat = prepare_qat(net, calib, bits=bits, groups=groups)
    fq = [m for m in qat.modules() if isinstance(m, FakeQuantAdder)]
    assert fq and all(len(m.grids) == groups and m.bits == bits for m in fq)
    before = [m.adder.weight.detach().clone() for m in fq]
    opt = torch.optim.SGD(qat.parameters(), lr=0.05, momentum=0.9)
    qat.train()
    for _ in range(4):
        x, y = torch.randn(16, 1, 32, 32, generator=gen), torch.randint(0, 10, (16,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(qat(x), y).backward()
        opt.step()
    assert all(not torch.equal(b, m.adder.weight) for b, m in zip(before, fq))   # it trained
    qat.eval()
    q = adderconv.quantize(qat, None, bits=bits, groups=groups)
    layers = [m for m in q.modules() if isinstance(m, QuantAdderConv2d)]
    assert len(layers) == len(fq) and all(m.bits == bits and m.grid_groups == groups for m in layers)
    for m, f in zip(layers, fq):      # the trained grids, not new ones
        assert m.grids == list(f.grids)
    x = torch.randn(8, 1, 32, 32, generator=gen)
    with torch.no_grad():
        want, got = qat(x), q(x)
    err = (got - want).abs()
    # the same codes up to float rounding: a code can flip where a value sits on a rounding boundary
    assert err.mean() < 1e-3 * want.std() and err.max() < 0.05 * want.std(), (err.mean(), err.max(), want.std())
    assert isinstance(net.get_submodule("4"), adderconv.AdderConv2d)   # the model given is unchanged


def test_a_qat_model_is_quantised_at_its_own_width(with_bn_stats):
    net = with_bn_stats(get_model("lenet5_bn_adder"), (1, 32, 32))
    qat = prepare_qat(net, torch.randn(8, 1, 32, 32), bits=6)
    with pytest.raises(AdderconvError, match="bits=6, groups=1"):
        adderconv.quantize(qat.eval(), None, bits=4)
