"""Module-swap conversion: the hard cases, the zoo's adder networks, recipes, hooks, dtypes, BN re-estimation."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import adderconv
from adderconv import AdderConv1d, AdderConv2d, AdderLinear, get_model
from adderconv.converters import AdderBlock, Policy, apply_recipe, convert, recalibrate_bn, save_converted
from adderconv.errors import AdderconvError
from adderconv.reference import adder_conv2d_reference

from conftest import X, HardCase  # noqa: F401  (tests/conftest.py; `test_convert:HardCase` is an arch below)




def _conv_reference(conv, x):
    """The adder computation with the conv's geometry, padded as the conv pads (independent of the layers)."""
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    x = F.pad(x, conv._reversed_padding_repeated_twice, mode=mode)
    if isinstance(conv, nn.Conv1d):
        y = adder_conv2d_reference(x.unsqueeze(2), conv.weight.unsqueeze(2), (1, conv.stride[0]), 0,
                                   (1, conv.dilation[0]), conv.groups).squeeze(2)
    else:
        y = adder_conv2d_reference(x, conv.weight, conv.stride, 0, conv.dilation, conv.groups)
    if conv.bias is not None:
        y = y + conv.bias.double().view(1, -1, *([1] * (y.dim() - 2)))
    return y


def test_hard_case_converts_every_module_conv_and_reports_the_rest():
    model = HardCase()
    net = convert(model, example_inputs=(X,))
    report = net.adderconv_report
    assert report.traced
    converted = {r.name for r in report.converted}
    assert converted == {"blocks.0.0", "blocks.1.0", "shared", "dw", "grouped", "heads.a", "heads.unused", "seq"}
    kept = {r.name: r.reason for r in report.kept}
    assert kept["stem"].startswith("kept: first") and "Linear" in kept["fc"]
    assert len(report.functional) == 1 and "conv2d" in report.functional[0]
    assert any("functional" in w for w in report.warnings)
    # shared module: converted once, still shared, registered under both names
    assert net.shared is net.shared_again and isinstance(net.shared, AdderBlock)
    assert report.converted[[r.name for r in report.converted].index("shared")].aliases == ("shared_again",)
    # BN is inserted exactly where the adder output meets no normalisation
    assert {r.name for r in report.converted if r.bn_inserted} == {"shared", "heads.a", "heads.unused", "seq"}
    assert isinstance(net.blocks[0][0], AdderConv2d) and isinstance(net.seq.adder, AdderConv1d)
    assert isinstance(net.stem, nn.Conv2d) and isinstance(net.fc, nn.Linear)
    # the caller's model is untouched (inplace=False)
    assert type(model.blocks[0][0]) is nn.Conv2d and not hasattr(model, "adderconv_report")


def test_each_converted_layer_computes_the_adder_op_with_the_convs_geometry():
    model = HardCase().double()
    net = convert(model, example_inputs=(X.double(),))
    for name in ("blocks.0.0", "blocks.1.0", "dw", "grouped", "heads.a", "seq"):
        conv, new = model.get_submodule(name), net.get_submodule(name)
        adder = new.adder if isinstance(new, AdderBlock) else new
        assert adder.weight.dtype == torch.float64
        torch.testing.assert_close(adder.weight, conv.weight)          # weights copied (weight_init="copy")
        shape = (2, conv.in_channels, 9) if isinstance(conv, nn.Conv1d) else (2, conv.in_channels, 9, 9)
        x = torch.randn(shape, dtype=torch.float64)
        torch.testing.assert_close(adder(x), _conv_reference(conv, x), msg=name)


def test_hard_case_runs_forward_backward_and_recipe_rebuilds_it():
    net = convert(HardCase(), example_inputs=(X,))
    y = net(X)
    y.square().mean().backward()
    assert torch.isfinite(y).all()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    fresh = apply_recipe(HardCase(), net.adderconv_report.recipe())
    assert fresh.shared is fresh.shared_again
    fresh.load_state_dict(net.state_dict())
    net.eval(), fresh.eval()
    torch.testing.assert_close(fresh(X), net(X), rtol=0, atol=0)


def test_untraced_conversion_warns_and_uses_registration_order():
    net = convert(HardCase())
    report = net.adderconv_report
    assert not report.traced and any("no example inputs" in w for w in report.warnings)
    assert {r.name for r in report.kept} == {"stem", "fc"}


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 4, 1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        x = self.bn(self.b(self.a(x)))
        if x.sum() > 0:            # data-dependent control flow: torch.export refuses it
            x = x * 2
        return self.c(x)


def test_untraceable_model_converts_by_hooked_execution_order_with_a_warning():
    net = convert(Untraceable(), example_inputs=(torch.randn(1, 3, 8, 8),))
    report = net.adderconv_report
    assert not report.traced and any("cannot trace" in w for w in report.warnings)
    assert [r.name for r in report.converted] == ["b"] and not report.converted[0].bn_inserted
    assert isinstance(net.b, AdderConv2d)


def test_zoo_cnns_convert_to_the_zoos_adder_networks():
    for cnn, adder, policy in [("resnet20", "resnet20_adder", Policy()),
                               ("vgg_small", "vgg_small_adder", Policy()),
                               ("lenet5_bn", "lenet5_bn_adder", Policy(convert_linear=True))]:
        shape = adderconv.default_input_shape(cnn)
        net = convert(get_model(cnn), policy, example_inputs=(torch.randn(shape),))
        ref = get_model(adder)
        assert [(n, type(m)) for n, m in net.named_modules()] == [(n, type(m)) for n, m in ref.named_modules()]
        assert {k: v.shape for k, v in net.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
        assert not any(r.bn_inserted for r in net.adderconv_report.layers)
        net.load_state_dict(ref.state_dict())
        net.eval(), ref.eval()
        x = torch.randn(2, *shape[1:])
        torch.testing.assert_close(net(x), ref(x), rtol=0, atol=0)


def test_hooks_mode_requires_grad_and_inplace_carry_over():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8),
                          nn.Conv2d(8, 2, 1)).eval()
    seen = []
    model[2].register_forward_hook(lambda m, i, o: seen.append(type(m).__name__))
    model[2].weight.requires_grad_(False)
    out = convert(model, example_inputs=(torch.randn(1, 3, 10, 10),), inplace=True)
    assert out is model and isinstance(model[2], AdderConv2d) and not model[2].training
    assert not model[2].weight.requires_grad
    seen.clear()                   # tracing ran the hook once (on fake tensors): the trace is faithful
    model(torch.randn(1, 3, 10, 10))
    assert seen == ["AdderConv2d"]


def test_weight_init_options():
    conv = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 8, 3))
    rescaled = convert(conv, Policy(weight_init="copy_rescaled", insert_bn=False))[1].weight
    torch.testing.assert_close(rescaled * conv[1].weight.std(), conv[1].weight)
    assert abs(rescaled.std().item() - 1) < 1e-5
    normal = convert(conv, Policy(weight_init="normal", insert_bn=False))[1].weight
    assert 0.7 < normal.std().item() < 1.3


def test_addersr_preset_adds_shortcut_power_and_bn_where_shapes_match():
    sr = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                       nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 1, 3, padding=1))
    net = convert(sr, Policy.addersr(), example_inputs=(torch.randn(1, 1, 12, 12),))
    block, widen = net[2], net[4]
    assert isinstance(block, AdderBlock) and block.shortcut and block.power is not None and block.bn is not None
    assert isinstance(widen, AdderBlock) and not widen.shortcut       # 16 -> 32 channels: no identity
    x = torch.randn(2, 16, 12, 12)
    expected = block.power(block.bn(block.adder(x)) + x)
    torch.testing.assert_close(block(x), expected)
    y = net(torch.randn(2, 1, 12, 12))
    y.mean().backward()
    assert torch.isfinite(block.power.alpha.grad).all()


def test_linear_conversion_bn_handles_sequence_inputs():
    model = nn.Sequential(nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3))
    net = convert(model, Policy(convert_linear=True), example_inputs=(torch.randn(2, 4, 6),))
    assert isinstance(net[1], AdderBlock) and isinstance(net[1].adder, AdderLinear)
    assert net(torch.randn(2, 4, 6)).shape == (2, 4, 3)


def test_errors_are_one_line_user_errors():
    with pytest.raises(AdderconvError, match="no convolutions"):
        convert(nn.Sequential(nn.ReLU()))
    with pytest.raises(AdderconvError, match="converts none"):
        convert(get_model("resnet20"), Policy(include=("nothing.*",)))
    with pytest.raises(AdderconvError, match="recipe"):
        apply_recipe(get_model("resnet20"), "{not json")
    with pytest.raises(AdderconvError, match="lacks"):
        apply_recipe(get_model("lenet5_bn"), convert(get_model("resnet20")).adderconv_report.recipe())


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    net = convert(get_model("resnet20"), example_inputs=(torch.randn(1, 3, 32, 32),)).eval()
    x = torch.randn(2, 3, 32, 32)
    save_converted(net, tmp_path / "r.safetensors", arch="resnet20")
    back = adderconv.load_model(tmp_path / "r.safetensors").eval()
    torch.testing.assert_close(back(x), net(x), rtol=0, atol=0)
    shared = convert(HardCase(), example_inputs=(X,)).eval()
    save_converted(shared, tmp_path / "h.safetensors")       # shared weights are written under both names
    again = adderconv.load_model(tmp_path / "h.safetensors", arch="test_convert:HardCase").eval()
    torch.testing.assert_close(again(X), shared(X), rtol=0, atol=0)
    save_converted(net, tmp_path / "r.pt2", fmt="pt2", example_inputs=(x,))
    torch.testing.assert_close(adderconv.load_model(tmp_path / "r.pt2", trust=True)(x), net(x), rtol=0, atol=0)


def test_recalibrate_bn_estimates_the_adder_output_statistics():
    net = convert(get_model("resnet20"), example_inputs=(torch.randn(1, 3, 32, 32),))
    data = [torch.randn(8, 3, 32, 32) for _ in range(3)]
    feats = []
    h = net.layer1[0].conv1.register_forward_hook(lambda m, i, o: feats.append(o.detach()))
    recalibrate_bn(net, data)
    h.remove()
    expected = torch.cat(feats).transpose(0, 1).flatten(1).mean(1)
    torch.testing.assert_close(net.layer1[0].bn1.running_mean, expected, rtol=1e-4, atol=1e-3)
    assert net.training and net.layer1[0].bn1.momentum == 0.1
    with pytest.raises(AdderconvError):
        recalibrate_bn(net, [])


def test_converting_a_converted_model_again_keeps_both_recipes(tmp_path):
    first = convert(get_model("resnet20"), Policy(include=("layer1.*",)), example_inputs=(torch.randn(1, 3, 32, 32),))
    save_converted(first, tmp_path / "a.safetensors", arch="resnet20")
    loaded = adderconv.load_model(tmp_path / "a.safetensors")
    second = convert(loaded, Policy(include=("layer2.*",)), example_inputs=(torch.randn(1, 3, 32, 32),)).eval()
    save_converted(second, tmp_path / "b.safetensors", arch="resnet20")
    back = adderconv.load_model(tmp_path / "b.safetensors").eval()
    assert isinstance(back.layer1[0].conv1, AdderConv2d) and isinstance(back.layer2[0].conv1, AdderConv2d)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(back(x), second(x), rtol=0, atol=0)
