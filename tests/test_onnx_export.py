"""ONNX export: zoo and torchvision adder nets run in plain onnxruntime, at batch 1 and 4 from one file, and
match PyTorch; every adder layer variant exports; the node keeps its contract; the CLI's export/verify."""
import copy
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision
from torch import nn

import adderconv
from adderconv import AdderConv1d, AdderConv2d, AdderLinear
from adderconv.converters.onnx_export import export_onnx
from adderconv.converters.onnx_verify import relative_error, verify_onnx

FORBIDDEN = {"Mul", "MatMul", "Conv", "Gemm", "ConvInteger", "MatMulInteger", "QLinearConv", "Einsum"}
TOL = 1e-4


def calibrated(model: nn.Module, shape, batches: int = 64) -> nn.Module:
    """Give BatchNorm real statistics (one pass in train mode), so eval outputs depend on the input: with the
    initial statistics an adder net's negative outputs all die in the next ReLU and any comparison is weak."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(torch.randn(batches, *shape[1:]))
    return model.eval()


def adder_layer_calls(model: nn.Module, x: torch.Tensor) -> int:
    calls = []
    hooks = [m.register_forward_hook(lambda *a: calls.append(1)) for m in model.modules()
             if isinstance(m, (AdderConv2d, AdderLinear))]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return len(calls)


def check_file(path, model, shape, n_adders, dtype=torch.float32):
    """The file passes the full checker, holds one AdderConv2d per adder call, and runs batch 1 and 4 within
    TOL of PyTorch (float32 as it runs, and float64; a float64 model: float64 only)."""
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    adders = [n for n in proto.graph.node if n.domain == "ai.adderconv" and n.op_type == "AdderConv2d"]
    assert len(adders) == n_adders
    assert {(f.domain, f.name, f.overload) for f in proto.functions} == \
        {("ai.adderconv", "AdderConv2d", n.overload) for n in adders}
    for f in proto.functions:
        assert not {n.op_type for n in f.node} & FORBIDDEN
    assert not isinstance(proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value or None, int)  # dynamic
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    exact = copy.deepcopy(model).double()
    for batch in (1, 4):
        x = torch.randn(batch, *shape[1:], dtype=dtype)
        with torch.no_grad():
            want, want64 = model(x).numpy(), exact(x.double()).numpy()
        (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        assert got.shape == want.shape
        assert relative_error(got, want) <= TOL, (batch, relative_error(got, want))
        assert relative_error(got, want64) <= TOL, (batch, relative_error(got, want64))
        if batch > 1:   # the comparison means something: outputs differ between samples
            assert np.ptp(want, axis=0).max() > 1e-3 * np.abs(want).max()


@pytest.mark.parametrize("name", ["resnet20_adder", pytest.param("vgg_small_adder", marks=pytest.mark.slow),
                                  "lenet5_bn_adder", "sr_vdsr_adder"])
def test_zoo_models_export_and_match_pytorch(name, tmp_path):
    shape = adderconv.default_input_shape(name)
    model = calibrated(adderconv.get_model(name), shape)
    info = export_onnx(model, tmp_path / f"{name}.onnx", shape)
    n = adder_layer_calls(model, torch.randn(*shape))
    assert len(info.adder_nodes) == n > 0
    check_file(info.path, model, shape, n)


def _swap_convs(model: nn.Module, keep_first: bool = True) -> nn.Module:
    """Every nn.Conv2d (but the stem) becomes an AdderConv2d with the conv's weights, as the converter does."""
    convs = [(name, m) for name, m in model.named_modules() if type(m) is nn.Conv2d][int(keep_first):]
    for name, conv in convs:
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, AdderConv2d.from_conv(conv))
    return model


@pytest.mark.slow
def test_converted_torchvision_resnet18_exports_and_matches_pytorch(tmp_path):
    shape = (1, 3, 64, 64)
    net = adderconv.convert(torchvision.models.resnet18(num_classes=10), example_inputs=(torch.randn(*shape),))
    model = calibrated(net, shape, batches=8)                 # the converter's default policy and weights
    info = export_onnx(model, tmp_path / "m.onnx", shape)
    check_file(info.path, model, shape, adder_layer_calls(model, torch.randn(*shape)))


@pytest.mark.slow
def test_converted_torchvision_mobilenet_v2_exports_and_matches_pytorch_in_float64(tmp_path):
    # 52 stacked adder+BN layers with the conv's (small) weights: BatchNorm divides a large, nearly constant
    # sum by its small spread, so PyTorch's own float32 output is ~3e-2 away from float64 and no float32
    # runtime can agree with it to 1e-4. Exported and run in float64 the file must match PyTorch exactly;
    # onnxruntime has no float64 Conv, so the stem is converted too.
    shape = (1, 3, 64, 64)
    model = calibrated(_swap_convs(torchvision.models.mobilenet_v2(num_classes=10), keep_first=False), shape,
                       batches=8).double()
    info = export_onnx(model, tmp_path / "m.onnx", shape)
    check_file(info.path, model, shape, adder_layer_calls(model, torch.randn(*shape).double()), torch.float64)
    groups = {a.i for n in onnx.load(str(info.path)).graph.node for a in n.attribute if a.name == "group"}
    assert max(groups) > 1                                     # depthwise layers kept their groups
    assert verify_onnx(info.path, model).ok                    # verify feeds a float64 file float64


class _Variants(nn.Module):
    def __init__(self, layer: nn.Module, head: int) -> None:
        super().__init__()
        self.layer, self.bn = layer, nn.BatchNorm2d(head) if head else nn.Identity()

    def forward(self, x):
        return self.bn(self.layer(x))


VARIANTS = {
    "grouped": (AdderConv2d(8, 12, 3, padding=1, groups=4), (1, 8, 9, 9)),
    "depthwise": (AdderConv2d(8, 8, 3, padding=1, groups=8), (1, 8, 9, 9)),
    "dilated": (AdderConv2d(4, 6, 3, padding=2, dilation=2), (1, 4, 11, 10)),
    "strided": (AdderConv2d(4, 6, 3, stride=2, padding=1), (1, 4, 11, 10)),
    "strided_nonsquare": (AdderConv2d(4, 6, (3, 1), stride=(2, 1), padding=(1, 0)), (1, 4, 11, 10)),
    "reflect": (AdderConv2d(4, 6, 3, padding=1, padding_mode="reflect"), (1, 4, 9, 9)),
    "circular": (AdderConv2d(4, 6, 3, padding=1, padding_mode="circular"), (1, 4, 9, 9)),
    "same_even_kernel": (AdderConv2d(4, 6, 4, padding="same"), (1, 4, 9, 9)),
    "bias": (AdderConv2d(4, 6, 3, bias=True), (1, 4, 9, 9)),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_adder_layer_variants_export_correctly(variant, tmp_path):
    layer, shape = VARIANTS[variant]
    model = calibrated(_Variants(layer, layer.out_channels), shape)
    info = export_onnx(model, tmp_path / "v.onnx", shape)
    check_file(info.path, model, shape, 1)
    proto = onnx.load(str(info.path))
    (node,) = [n for n in proto.graph.node if n.op_type == "AdderConv2d"]
    attrs = {a.name: (a.i if a.type == onnx.AttributeProto.INT else list(a.ints)) for a in node.attribute}
    assert set(attrs) == {"kernel_shape", "strides", "pads", "dilations", "group"}
    assert attrs["kernel_shape"] == list(layer.kernel_size) and attrs["strides"] == list(layer.stride)
    assert attrs["dilations"] == list(layer.dilation) and attrs["group"] == layer.groups
    if variant in ("reflect", "circular", "same_even_kernel"):   # padded before the op; the node pads nothing
        assert attrs["pads"] == [0, 0, 0, 0]
        producer = {o: n for n in proto.graph.node for o in n.output}[node.input[0]]
        assert producer.op_type in ("Pad", "Concat", "Slice")  # torch exports circular padding as Slice+Concat
    elif variant.startswith(("grouped", "depthwise", "dilated", "strided")):
        ph, pw = layer.padding
        assert attrs["pads"] == [ph, pw, ph, pw]


def test_conv1d_and_linear_adders_export(tmp_path):
    model = nn.Sequential(AdderConv1d(3, 5, 3, padding=1), nn.BatchNorm1d(5), nn.Flatten(),
                          AdderLinear(5 * 7, 4, bias=True))
    shape = (1, 3, 7)
    model = calibrated(model, shape)
    info = export_onnx(model, tmp_path / "m.onnx", shape)
    check_file(info.path, model, shape, 2)


def test_node_names_follow_modules_and_training_mode_is_restored(tmp_path):
    model = adderconv.get_model("resnet20_adder").train()
    info = export_onnx(model, tmp_path / "r.onnx", (1, 3, 32, 32))
    assert model.training
    assert info.adder_nodes[0] == "layer1.0.conv1" and "layer2.0.downsample.0" in info.adder_nodes
    assert len(info.overloads) == 3                   # 3x3 s1, 3x3 s2, 1x1 s2
    # the export says which node types it holds (a quantised model's are AdderConv2dInteger, not AdderConv2d)
    assert info.node_types == {"AdderConv2d": 20} and info.describe_nodes() == "20 AdderConv2d nodes"
    info.node_types = {"AdderConv2dInteger": 18, "AdderConv2d": 2}
    assert info.describe_nodes() == "2 AdderConv2d and 18 AdderConv2dInteger nodes"


def test_export_without_shape_is_a_user_error(tmp_path):
    with pytest.raises(adderconv.AdderconvError, match="input shape"):
        export_onnx(adderconv.get_model("lenet5_bn_adder"), tmp_path / "x.onnx", None)
    with pytest.raises(adderconv.AdderconvError, match="opset must be 13\\.\\."):
        export_onnx(adderconv.get_model("lenet5_bn_adder"), tmp_path / "x.onnx", (1, 1, 32, 32), opset=11)
    assert not list(tmp_path.iterdir())


def _cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    from adderconv.cli import main

    monkeypatch.setattr(sys, "argv", ["adderconv", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out + out.err


def test_cli_export_then_verify(tmp_path, monkeypatch, capsys):
    from adderconv.converters import save_converted

    weights = str(tmp_path / "lenet.safetensors")
    save_converted(calibrated(adderconv.get_model("lenet5_bn_adder"), (1, 1, 32, 32)), weights, arch="lenet5_bn_adder")
    path = str(tmp_path / "lenet.onnx")
    code, out = _cli(monkeypatch, capsys, "export", weights, "-o", path)
    assert code == 0 and "3 AdderConv2d nodes" in out, out      # 1 conv + 2 linear adders
    code, out = _cli(monkeypatch, capsys, "verify", path, "--against", weights)
    assert code == 0 and "OK" in out, out
    code, out = _cli(monkeypatch, capsys, "verify", path, "--against", "lenet5_bn")
    assert code == 1 and "FAILED" in out, out              # a different model is caught
    code, out = _cli(monkeypatch, capsys, "verify", path, "--against", "resnet20")
    assert code == 2 and "does not run on the file's input" in out and "Traceback" not in out, out
    # An untrained adder net's outputs do not depend on its input, so agreement of the outputs proves nothing:
    # verify compares the adder nodes' own outputs instead and says so in a note (issue 27, 3: the README's
    # example exits 0; tests/test_verify.py checks the note and that the nodes tell models apart)
    raw = str(tmp_path / "raw.onnx")
    assert _cli(monkeypatch, capsys, "export", "lenet5_bn_adder", "-o", raw)[0] == 0
    code, out = _cli(monkeypatch, capsys, "verify", raw, "--against", "lenet5_bn_adder")
    assert code == 0 and "OK" in out and "cannot tell models apart" in out, out
    code, out = _cli(monkeypatch, capsys, "verify", raw, "--against", str(tmp_path / "lenet.safetensors"))
    assert code == 1 and "FAILED" in out, out              # calibrated weights: its outputs differ
    code, out = _cli(monkeypatch, capsys, "verify", str(tmp_path / "missing.onnx"), "--against", "lenet5_bn")
    assert code == 2 and "no such file" in out, out


def test_verify_api_reports_batches(tmp_path):
    shape = (1, 1, 32, 32)
    model = calibrated(adderconv.get_model("lenet5_bn_adder"), shape)
    path = export_onnx(model, tmp_path / "l.onnx", shape).path
    result = verify_onnx(path, model)
    assert result.ok and [c.batch for c in result.checks] == [1, 4] and not result.input_independent
    with torch.no_grad():
        model[4].weight.add_(0.5)                          # a changed weight shows up as an error
    assert not verify_onnx(path, model).ok


def test_energy_front_end_counts_the_exported_node(tmp_path):
    """The contract with the ONNX counter: per MAC an add (|x - w|) and an accumulation, no multiplications,
    nothing unsupported."""
    from adderconv.analysis.onnx_frontend import count_onnx

    model = adderconv.get_model("resnet20_adder").eval()
    path = export_onnx(model, tmp_path / "r.onnx", (1, 3, 32, 32)).path
    macs = []
    hooks = [m.register_forward_hook(lambda mod, i, o: macs.append(
        o.numel() * mod.weight[0].numel())) for m in model.modules() if isinstance(m, AdderConv2d)]
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    counts = count_onnx(path, (1, 3, 32, 32))
    adder = counts.by_operator()["ai.adderconv::AdderConv2d"]
    assert adder["mul"] == 0 and adder["add"] == adder["acc"] == sum(macs)
    assert not counts.unsupported


def test_static_batch_export(tmp_path):
    shape = (4, 1, 32, 32)
    model = calibrated(adderconv.get_model("lenet5_bn_adder"), shape)
    path = export_onnx(model, tmp_path / "s.onnx", shape, dynamic_batch=False).path
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4
    result = verify_onnx(path, model)
    assert result.ok and [c.batch for c in result.checks] == [4]
