"""Adder layers mirror torch.nn: same geometry, every padding mode, from_conv, 1-d and linear forms."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adderconv import AdderConv1d, AdderConv2d, AdderLinear
from adderconv.reference import adder_conv2d_reference


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_padding_modes_match_explicit_pad(padding_mode):
    layer = AdderConv2d(3, 5, 3, padding=(1, 2), padding_mode=padding_mode)
    x = torch.randn(2, 3, 7, 8)
    mode = "constant" if padding_mode == "zeros" else padding_mode
    ref = adder_conv2d_reference(F.pad(x, (2, 2, 1, 1), mode=mode), layer.weight)
    torch.testing.assert_close(layer(x).double(), ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("kernel,dilation", [(3, 1), (4, 1), ((2, 5), (2, 1))])
def test_same_padding_keeps_size_and_matches_conv_geometry(kernel, dilation):
    layer = AdderConv2d(2, 3, kernel, padding="same", dilation=dilation)
    conv = nn.Conv2d(2, 3, kernel, padding="same", dilation=dilation)
    x = torch.randn(1, 2, 9, 10)
    assert layer(x).shape == conv(x).shape == (1, 3, 9, 10)
    # torch puts the odd padding pixel after: reproduce it explicitly
    kh, kw = layer.kernel_size
    th, tw = dilation if isinstance(dilation, tuple) else (dilation, dilation)
    ph, pw = th * (kh - 1), tw * (kw - 1)
    ref = adder_conv2d_reference(F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)), layer.weight,
                                 dilation=layer.dilation)
    torch.testing.assert_close(layer(x).double(), ref, rtol=1e-5, atol=1e-4)


def test_valid_padding_and_bias():
    layer = AdderConv2d(2, 3, 3, padding="valid", bias=True)
    x = torch.randn(2, 2, 6, 6)
    ref = adder_conv2d_reference(x, layer.weight) + layer.bias.double().view(1, -1, 1, 1)
    torch.testing.assert_close(layer(x).double(), ref, rtol=1e-5, atol=1e-4)


def test_from_conv_copies_geometry_weights_and_dtype():
    conv = nn.Conv2d(4, 8, 3, stride=2, padding=1, dilation=1, groups=2, bias=True, dtype=torch.float64)
    layer = AdderConv2d.from_conv(conv)
    assert (layer.stride, layer.padding, layer.groups, layer.weight.dtype) == ((2, 2), (1, 1), 2, torch.float64)
    assert torch.equal(layer.weight, conv.weight) and torch.equal(layer.bias, conv.bias)
    assert layer.weight.data_ptr() != conv.weight.data_ptr()
    with pytest.raises(TypeError, match="Conv2d"):
        AdderConv2d.from_conv(nn.Linear(2, 2))


def test_repr_reads_like_torch():
    assert repr(AdderConv2d(16, 32, 3, stride=2, padding=1, bias=False)) == \
        "AdderConv2d(16, 32, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), bias=False)"
    assert "groups=4" in repr(AdderConv2d(8, 8, 3, groups=4))
    assert "in_features=5, out_features=3" in repr(AdderLinear(5, 3))


def test_invalid_arguments():
    with pytest.raises(ValueError, match="divisible"):
        AdderConv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="padding_mode"):
        AdderConv2d(3, 4, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match="'same'"):
        AdderConv2d(3, 4, 3, padding="full")


def test_conv1d_matches_definition_and_swaps_state_with_nn_conv1d():
    conv = nn.Conv1d(4, 6, 3, stride=2, padding=1, bias=True)
    layer = AdderConv1d.from_conv(conv)
    assert layer.weight.shape == conv.weight.shape
    x = torch.randn(2, 4, 11)
    cols = F.unfold(x.unsqueeze(2).double(), (1, 3), padding=(0, 1), stride=(1, 2))     # (N, 12, L)
    ref = -(cols.unsqueeze(1) - conv.weight.double().view(1, 6, 12, 1)).abs().sum(2) + conv.bias.double().view(1, -1, 1)
    torch.testing.assert_close(layer(x).double(), ref, rtol=1e-5, atol=1e-4)
    nn.Conv1d(4, 6, 3, stride=2, padding=1, bias=True).load_state_dict(layer.state_dict())


def test_adder_linear_matches_definition_on_any_leading_shape():
    layer = AdderLinear(5, 3, bias=True)
    x = torch.randn(2, 4, 5)
    ref = -(x.double().unsqueeze(-2) - layer.weight.double()).abs().sum(-1) + layer.bias.double()
    torch.testing.assert_close(layer(x).double(), ref, rtol=1e-5, atol=1e-5)
    linear = nn.Linear(5, 3)
    assert torch.equal(AdderLinear.from_linear(linear).weight, linear.weight)


def test_the_1d_layer_is_a_sibling_of_the_2d_layer_not_a_kind_of_it():
    """isinstance(m, AdderConv2d) means a 4-d weight; every place that meant 'any adder conv' lists the 1-d layer."""
    from adderconv.adaptive_lr import adder_weights

    one, two = AdderConv1d(3, 4, 3), AdderConv2d(3, 4, 3)
    assert not isinstance(one, AdderConv2d) and not isinstance(two, AdderConv1d)
    assert one.weight.dim() == 3 and two.weight.dim() == 4
    model = torch.nn.Sequential(one, torch.nn.Flatten(), AdderLinear(4 * 6, 2))
    assert [p.shape for p in adder_weights(model)] == [one.weight.shape, (2, 24)]
