"""adderconv.quantize: the quantised net equals its own float simulation of the same integer arithmetic,
is close to the float net, round-trips through safetensors bit for bit, and rejects bad input in one line."""
from __future__ import annotations

import json
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import adderconv
from adderconv import AdderconvError, AdderConv2d, get_model
from adderconv.kernels import int8
from adderconv.ops import adder_conv2d
from adderconv.quant import QuantAdderConv2d, save_quantized
from adderconv.quant.scheme import Grid


@pytest.fixture(scope="module")
def resnet(with_bn_stats):
    net = with_bn_stats(get_model("resnet20_adder"))
    gen = torch.Generator().manual_seed(1)
    return net, adderconv.quantize(net, [torch.randn(16, 3, 32, 32, generator=gen) for _ in range(2)])


def _simulate(layer: QuantAdderConv2d, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    """The layer's arithmetic through the float adder op: codes as floats, zero-point padding, S exact in float64;
    a fused residual added in float32 after the epilogue (then the ReLU), as the unfused block does. Inputs are
    quantised here from the float tensor (never from codes a fused layer emitted)."""
    if x.dtype != torch.uint8:
        x = layer.grid.codes(x).permute(0, 2, 3, 1)
    q = x.permute(0, 3, 1, 2).double()
    ph, pw = layer.padding
    q = F.pad(q, (pw, pw, ph, ph), value=float(layer.zero_point))
    s = -adder_conv2d(q, layer.weight.double(), layer.stride, 0, layer.dilation, layer.groups)
    s = s.round().to(torch.int32).permute(0, 2, 3, 1)
    v = (s.to(torch.float32) * layer.out_scale + layer.out_shift).contiguous()   # channels-last, as the kernel
    if layer.out_mode == "float":
        v = v.permute(0, 3, 1, 2)
        if layer.residual:
            v = v + residual
            v = torch.relu(v) if layer.residual == "add_relu" else v
            if layer.codes_only:   # nothing but the next layers read the sum: their codes of it
                return Grid(float(layer.codes_scale), layer.codes_zero_point).codes(v).permute(0, 2, 3, 1)
        return v
    return torch.round(v).clamp(layer.out_lo, 255).to(torch.uint8)


def test_structure_folds_bn_and_chains_codes(resnet):
    _, q = resnet
    block = q.layer2[0]
    assert isinstance(block.conv1, QuantAdderConv2d) and block.conv1.out_mode == "uint8"
    assert block.conv1.out_lo == block.conv2.zero_point          # the ReLU folded into the clamp
    assert block.conv2.out_mode == "float" and q.adderconv_quant.layers["layer2.0.conv1"]["bn"] == "layer2.0.bn1"
    assert isinstance(block.get_submodule("downsample.0"), QuantAdderConv2d)
    assert q.adderconv_quant.layers["layer2.0.downsample.0"]["bn"] == "layer2.0.downsample.1"
    # the folded BatchNorms (now no-ops) leave the block's graph, and the residual add + ReLU join an epilogue
    assert not hasattr(block, "bn1") and not hasattr(block, "bn2")
    fused = {n: m.residual for n, m in q.named_modules() if isinstance(m, QuantAdderConv2d) and m.residual}
    assert len(fused) == 9 and set(fused.values()) == {"add_relu"}
    # a block's sum is handed on as codes on the grid its readers share (the next conv1 and its downsample)
    assert q.layer1[2].conv2.codes_zero_point == q.layer2[0].conv1.zero_point
    assert q.layer2[0].conv1.grid == q.get_submodule("layer2.0.downsample.0").grid
    assert q.layer3[2].conv2.codes_zero_point == -1    # the last block's sum goes to the pooling
    # layer1.2's sum is read by layer2.0's conv1 and downsample only: the codes alone; layer1.1's is also the
    # identity of layer1.2, so it is written as float too
    assert q.layer1[2].conv2.codes_only and not q.layer1[1].conv2.codes_only
    assert isinstance(q.conv1, nn.Conv2d) and isinstance(q.bn1, nn.BatchNorm2d)   # the stem stays float
    assert q.layer1[0].conv1.energy_precision == "int8" and not q.training


def test_equals_its_float_simulation(resnet):
    _, q = resnet
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        got = q(x)
        layers = [m for m in q.modules() if isinstance(m, QuantAdderConv2d)]
        try:
            for m in layers:
                m.forward = types.MethodType(_simulate, m)
            want = q(x)
        finally:
            for m in layers:
                del m.forward
    assert torch.equal(got, want)


def test_close_to_the_float_net(resnet):
    net, q = resnet
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        a, b = net(x), q(x)
    assert (a - b).abs().mean() < 0.1 * a.std()     # an untrained net; trained ones: benchmarks/int8.py
    assert (a.argmax(1) == b.argmax(1)).float().mean() >= 0.7


@pytest.mark.skipif(not int8.available(), reason="the int8 extension cannot be built here")
def test_same_output_on_every_vector_path_and_the_fallback(resnet, monkeypatch):
    _, q = resnet
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = q(x)
        before = int8.isa_name()
        try:
            for isa in int8.supported_isas():
                int8.set_isa(isa)
                assert torch.equal(q(x), want), isa
        finally:
            int8.set_isa(before)
        monkeypatch.setenv("ADDERCONV_INT8_KERNEL", "portable")
        assert adderconv.quant.kernel_name() == "portable"
        assert torch.equal(q(x), want)


def test_save_load_bit_identical(resnet, tmp_path):
    _, q = resnet
    path = tmp_path / "q.safetensors"
    save_quantized(q, path, {"adderconv.arch": "resnet20_adder"})
    loaded = adderconv.load_model(path)
    a, b = q.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(q(x), loaded(x))
    # weights: 1 byte per value instead of 4, on disk and in memory
    adders = [m for m in loaded.modules() if isinstance(m, QuantAdderConv2d)]
    assert all(m.weight.dtype == torch.uint8 for m in adders)
    assert sum(m.weight.numel() * m.weight.element_size() for m in adders) * 4 == sum(
        m.weight.numel() * 4 for m in adders)


def test_recipe_is_validated_data(resnet, tmp_path):
    from safetensors.torch import load_file, save_file

    _, q = resnet
    path = tmp_path / "q.safetensors"
    save_quantized(q, path, {"adderconv.arch": "resnet20_adder"})
    recipe = json.loads(adderconv.quant.recipe_json(q))
    for bad in ({**recipe, "layers": {"conv1": {"zero_point": 3, "out": "float"}}},          # a float conv
                {**recipe, "layers": {"layer1.0.conv1": {"zero_point": 300, "out": "float"}}},
                {**recipe, "folded": ["os.system"]}, {**recipe, "bits": 3}):   # 4-bit recipes: test_quant_lowbit
        bad_path = tmp_path / "bad.safetensors"
        save_file(load_file(str(path)), str(bad_path),
                  metadata={"format": "pt", "adderconv.arch": "resnet20_adder", "adderconv.quant": json.dumps(bad)})
        with pytest.raises(AdderconvError, match="quantisation recipe"):
            adderconv.load_model(bad_path)


def test_depthwise_grouped_strided_dilated_layers(with_bn_stats):
    torch.manual_seed(0)
    net = nn.Sequential(AdderConv2d(8, 8, 3, padding=2, dilation=2, groups=8), nn.BatchNorm2d(8), nn.ReLU(),
                        AdderConv2d(8, 12, 3, stride=2, padding=1, groups=2), nn.BatchNorm2d(12), nn.ReLU(),
                        AdderConv2d(12, 5, 1))
    net = with_bn_stats(net, (8, 11, 13))
    q = adderconv.quantize(net, torch.randn(8, 8, 11, 13))
    assert q[0].out_mode == "uint8" and q[3].out_mode == "uint8" and q[6].out_mode == "float"
    x = torch.randn(4, 8, 11, 13)
    with torch.no_grad():
        a, b = net(x), q(x)
    assert (a - b).abs().mean() < 0.05 * a.abs().mean()


@pytest.mark.parametrize("method", ["minmax", "percentile", "mse"])
def test_calibration_methods_report(method, with_bn_stats):
    net = with_bn_stats(get_model("lenet5_bn_adder"), (1, 32, 32))
    q = adderconv.quantize(net, [torch.randn(8, 1, 32, 32)] * 2, method=method)
    report = q.adderconv_quant
    assert report.method == method and report.batches == 2 and report.samples == 16
    assert method in report.describe_calibration()
    for info in report.layers.values():
        g = Grid(info["scale"], info["zero_point"])
        assert g.values(g.codes(torch.zeros(1))).item() == 0.0    # float 0 (padding) is exactly the zero point


def test_original_model_untouched(resnet):
    net, _ = resnet
    assert all(type(m) is not QuantAdderConv2d for m in net.modules())
    assert isinstance(net.layer1[0].bn1, nn.BatchNorm2d)


def test_bad_input_one_line(with_bn_stats):
    net = with_bn_stats(get_model("resnet20_adder"))
    with pytest.raises(AdderconvError, match=r"calibration batch of shape \(4, 1, 32, 32\) does not fit"):
        adderconv.quantize(net, torch.randn(4, 1, 32, 32))
    with pytest.raises(AdderconvError, match="no adder layers"):
        adderconv.quantize(get_model("resnet20"), torch.randn(4, 3, 32, 32))
    for bits in (16, 3, "fp16", True):   # 4..8 are widths (tests/test_quant_lowbit.py)
        with pytest.raises(AdderconvError, match="`bits` must be an integer from 4 to 8"):
            adderconv.quantize(net, torch.randn(4, 3, 32, 32), bits=bits)
    with pytest.raises(AdderconvError, match="calibration method"):
        adderconv.quantize(net, torch.randn(4, 3, 32, 32), method="kl")
    with pytest.raises(AdderconvError, match="empty"):
        adderconv.quantize(net, [])


def test_adder_linear_layers_quantised_and_reloaded(tmp_path, with_bn_stats):
    from adderconv.converters import Policy, convert, save_converted
    from adderconv.quant import QuantAdderLinear

    cnn = get_model("lenet5_bn").eval()
    net = convert(cnn, Policy(convert_linear=True), example_inputs=(torch.zeros(1, 1, 32, 32),))
    net = with_bn_stats(net, (1, 32, 32))
    src = tmp_path / "adder.safetensors"
    save_converted(net, src, arch="lenet5_bn")
    q = adderconv.quantize(net, torch.randn(16, 1, 32, 32))
    assert isinstance(q[9], QuantAdderLinear) and q[9].out_mode == "uint8" and isinstance(q[10], nn.Identity)
    assert isinstance(q[12], QuantAdderLinear) and q[12].out_mode == "float" and q[9].out_lo == q[12].zero_point
    x = torch.randn(5, 1, 32, 32)
    with torch.no_grad():
        h = q[:9](x)                                        # the layer itself against the float adder op
        s = -adder_conv2d(q[9].grid.codes(h)[:, :, None, None].double(), q[9].weight.double())
        want = torch.round(s.flatten(1).float() * q[9].out_scale + q[9].out_shift).clamp(q[9].out_lo, 255)
        assert torch.equal(q[9](h).flatten(1), want.to(torch.uint8))
    from safetensors.torch import safe_open
    with safe_open(str(src), framework="pt") as f:
        md = {k: v for k, v in f.metadata().items() if k.startswith("adderconv.")}
    path = tmp_path / "q.safetensors"
    save_quantized(q, path, md)
    loaded = adderconv.load_model(path)
    with torch.no_grad():
        assert torch.equal(loaded(x), q(x))
