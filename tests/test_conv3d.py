"""3-d adder layers against the float64 definition, and video nets that convert, count, save and export."""
import numpy as np
import pytest
import torch
from torch import nn

import adderconv
from adderconv import AdderConv3d, adder_conv3d
from adderconv.converters import convert
from adderconv.reference import adder_conv3d_reference, adder_conv3d_reference_grads

# (N, C, D, H, W, O, kernel, stride, padding, dilation, groups)
CASES = [
    (2, 3, 5, 6, 6, 4, 3, 1, 1, 1, 1),
    (1, 4, 6, 7, 5, 6, (3, 1, 2), (2, 1, 2), (1, 0, 1), (1, 1, 2), 2),   # everything asymmetric, groups
    (2, 4, 4, 5, 5, 4, 3, 1, (2, 1, 1), (2, 1, 1), 4),                   # depthwise, depth dilation
    (2, 3, 3, 4, 4, 5, 1, 1, 0, 1, 1),                                   # 1x1x1
]


def _make(case):
    n, c, d, h, w, o, k, stride, padding, dilation, groups = case
    k = (k,) * 3 if isinstance(k, int) else k
    x = torch.randn(n, c, d, h, w, requires_grad=True)
    weight = (torch.randn(o, c // groups, *k) * 0.5).requires_grad_()
    return x, weight, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


@pytest.mark.parametrize("case", CASES)
def test_forward_and_addernet_gradients_match_the_float64_definition(case):
    x, w, conf = _make(case)
    y = adder_conv3d(x, w, **conf)
    ref = adder_conv3d_reference(x, w, **conf)
    assert y.shape == ref.shape
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-4)
    g = torch.randn_like(y)
    y.backward(g)
    gx, gw = adder_conv3d_reference_grads(g, x, w, **conf)
    torch.testing.assert_close(x.grad.double(), gx, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(w.grad.double(), gw, rtol=1e-5, atol=1e-4)


def test_layer_from_conv3d_keeps_geometry_and_pads_like_conv3d():
    conv = nn.Conv3d(3, 4, (3, 2, 3), stride=1, padding="same", bias=True, padding_mode="replicate")
    layer = AdderConv3d.from_conv(conv)
    assert torch.equal(layer.weight, conv.weight) and torch.equal(layer.bias, conv.bias)
    x = torch.randn(2, 3, 4, 5, 6)
    padded = nn.functional.pad(x, (1, 1, 0, 1, 1, 1), mode="replicate")      # 'same' for kernel (3, 2, 3)
    expected = adder_conv3d_reference(padded, conv.weight) + conv.bias.double().view(1, -1, 1, 1, 1)
    torch.testing.assert_close(layer(x).double(), expected, rtol=1e-5, atol=1e-4)
    assert layer(x).shape == conv(x).shape
    with pytest.raises(TypeError):
        AdderConv3d.from_conv(nn.Conv2d(3, 4, 3))


def test_video_resnet_converts_saves_and_reloads(tmp_path, run_cli):
    out = tmp_path / "r3d.safetensors"
    code, stdout, err = run_cli("convert", "torchvision:r3d_18", "-s", "1,3,4,32,32", "-o", out)
    assert code == 0, err
    assert "converted 19 of 21" in stdout
    net = adderconv.load_model(out)                 # an allow-listed builder: rebuilt with no --arch
    assert sum(isinstance(m, AdderConv3d) for m in net.modules()) == 19
    assert sum(isinstance(m, nn.BatchNorm3d) for m in net.modules()) == 20   # r3d's own BNs follow every conv


def test_adder_conv3d_counts_two_adds_per_mac():
    from adderconv.analysis import count_model

    net = nn.Sequential(AdderConv3d(3, 4, 3, padding=1), nn.BatchNorm3d(4)).eval()
    counts = count_model(net, (2, 3, 4, 6, 6))
    outputs = 2 * 4 * 4 * 6 * 6                                       # N*O*D*H*W
    macs = outputs * 3 * 27                                           # x C*k^3
    layer = next(le for le in counts.layers if le.name == "0")
    # |x - w| (add) and the accumulation (acc) per MAC, plus the sums of the kernel's 3 depth taps (2 adds per
    # output) that the op really does.
    assert layer.tally["add"] == macs + 2 * outputs and layer.tally["acc"] == macs and layer.tally["mul"] == 0


def test_onnx_export_of_a_3d_adder_runs_in_onnxruntime(tmp_path):
    import onnxruntime as ort

    from adderconv.converters.onnx_export import export_onnx

    net = nn.Sequential(AdderConv3d(2, 3, 3, padding=1), nn.ReLU(), AdderConv3d(3, 2, (1, 3, 3), stride=(1, 2, 2)))
    path = export_onnx(net, tmp_path / "a3d.onnx", (1, 2, 4, 8, 8)).path
    x = torch.randn(3, 2, 4, 8, 8)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, net(x).numpy(), rtol=1e-4, atol=1e-3)


def test_transposed_convolutions_are_listed_as_kept_with_the_reason():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ConvTranspose2d(8, 8, 2, stride=2), nn.Conv2d(8, 8, 3),
                        nn.Conv2d(8, 3, 3))
    report = convert(net, example_inputs=(torch.zeros(1, 3, 16, 16),)).adderconv_report
    kept = {r.name: r.reason for r in report.kept}
    assert "transposed convolution" in kept["1"] and report.converted[0].name == "2"
    assert not report.functional                 # not listed twice (as a functional conv too)
