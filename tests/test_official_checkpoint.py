"""Official AdderNet checkpoints (nn.DataParallel state dicts, adder weights under `.adder`) load into the zoo's
ResNet-20 and ResNet-50 and give the official model's outputs.

The official model is rebuilt here the way its code is written: every adder layer an ``adder2d`` module whose
weight is the parameter ``adder`` and whose forward is the unfold formula of its ``adder2d_function``.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import adderconv
from adderconv.loading import open_model


class OfficialAdder2d(nn.Module):
    """The official layer's parameters and forward (``-sum |W_col - X_col|`` over an unfold), in float64."""

    def __init__(self, layer: adderconv.AdderConv2d) -> None:
        super().__init__()
        self.adder = nn.Parameter(layer.weight.detach().clone())
        self.stride, self.padding = layer.stride[0], layer.padding[0]

    def forward(self, x):
        n, _, h, w = x.shape
        o, _, k, _ = self.adder.shape
        ho, wo = (h - k + 2 * self.padding) // self.stride + 1, (w - k + 2 * self.padding) // self.stride + 1
        cols = F.unfold(x.double(), k, padding=self.padding, stride=self.stride)            # n, c*k*k, L
        out = -(cols.unsqueeze(1) - self.adder.double().view(1, o, -1, 1)).abs().sum(2)     # n, o, L
        return out.view(n, o, ho, wo).to(x.dtype)


def _official(net: nn.Module) -> nn.Module:
    """The same network with official adder layers, wrapped as the official training script wraps it."""
    for m in list(net.modules()):
        for child_name, child in list(m.named_children()):
            if isinstance(child, adderconv.AdderConv2d):
                setattr(m, child_name, OfficialAdder2d(child))
    return nn.DataParallel(net)


def _randomise_bn(net: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 50)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 400 + 100)
    return net.eval()


@pytest.mark.parametrize("arch, shape", [("resnet20_adder", (2, 3, 32, 32)), ("resnet50_adder", (1, 3, 64, 64))])
def test_official_checkpoint_loads_and_matches_the_official_model(tmp_path, arch, shape):
    ours = _randomise_bn(adderconv.get_model(arch))
    theirs = _official(adderconv.get_model(arch)).eval()
    theirs.module.load_state_dict(
        {k.replace(".weight", ".adder") if isinstance(ours.get_submodule(k.rsplit(".", 1)[0]), adderconv.AdderConv2d)
         else k: v for k, v in ours.state_dict().items()})
    path = tmp_path / "official.pth"
    torch.save(theirs.state_dict(), path)
    keys = list(torch.load(path, weights_only=True))
    assert all(k.startswith("module.") for k in keys) and any(k.endswith(".adder") for k in keys)

    loaded = open_model(path, arch=arch)
    assert any("official AdderNet layout remapped" in n for n in loaded.notes)
    x = torch.randn(*shape)
    with torch.no_grad():
        expected = theirs(x)
        got = loaded.model.eval()(x)
    torch.testing.assert_close(got.double(), expected.double(), rtol=1e-4, atol=1e-3)


def test_official_layout_is_said_in_the_conversion_report(tmp_path, run_cli):
    theirs = _official(adderconv.get_model("resnet20_adder"))
    path = tmp_path / "official.pth"
    torch.save(theirs.state_dict(), path)
    code, out, err = run_cli("convert", path, "--arch", "resnet20_adder", "--convert-first",
                             "-o", tmp_path / "r.safetensors")
    assert code == 0 and "official AdderNet layout remapped" in out and "20 adder weights" in out, err


def test_resnet50_zoo_matches_the_official_structure():
    net = adderconv.get_model("resnet50_adder")
    assert isinstance(net.fc, nn.Conv2d) and net.fc.bias is not None and isinstance(net.bn2, nn.BatchNorm2d)
    assert sum(isinstance(m, adderconv.AdderConv2d) for m in net.modules()) == 52    # 3*16 convs + 4 downsamples
    assert type(net.conv1) is nn.Conv2d
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
