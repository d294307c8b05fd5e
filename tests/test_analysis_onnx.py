"""The ONNX front end: our adder node (shape inference fed back by hand), and agreement with PyTorch."""
import warnings

import onnx
import pytest
import torch
from onnx import TensorProto, helper

import adderconv
from adderconv.analysis import Tally, analyze, count_model
from adderconv.analysis.onnx_frontend import count_onnx
from adderconv.errors import AdderconvError


def _adder(name, x, w, y, **attrs):
    return helper.make_node("AdderConv2d", [x, w], [y], name=name, domain="ai.adderconv", **attrs)


def _chain(batch="N"):
    # x (N,4,11,9) -> adder 3x3 s2 d1 g2, pads (top,left,bottom,right)=(1,0,0,1) -> Relu -> adder 1x1 -> y
    nodes = [
        _adder("a1", "x", "w1", "h", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 0, 1], dilations=[1, 1],
               group=2),
        helper.make_node("Relu", ["h"], ["r"], name="act"),
        _adder("a2", "r", "w2", "y", kernel_shape=[1, 1], strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1],
               group=1),
    ]
    inits = [helper.make_tensor("w1", TensorProto.FLOAT, [6, 2, 3, 3], [0.0] * 108),
             helper.make_tensor("w2", TensorProto.FLOAT, [5, 6, 1, 1], [0.0] * 30)]
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4, 11, 9])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("ai.adderconv", 1)])


def test_adder_node_chain_counts_by_hand():
    # first: H = (11 + 1 + 0 - 3) // 2 + 1 = 5, W = (9 + 0 + 1 - 3) // 2 + 1 = 4
    h1 = 6 * 5 * 4
    c = count_onnx(_chain(), input_shape=(2, 4, 11, 9))
    macs = 2 * h1 * 2 * 9                                                   # N*C_out*H*W x (C_in/g)*k*k
    assert c.layer("a1").tally == Tally(add=macs, acc=macs)                 # |x - w|, then the accumulation
    assert c.layer("act").tally == Tally(cmp=2 * h1)                        # shape known only via our feed-back
    assert c.layer("a2").tally == Tally(add=2 * 5 * 5 * 4 * 6, acc=2 * 5 * 5 * 4 * 6)
    assert c.total["mul"] == 0 and c.unsupported == {}
    # a symbolic batch counts as 1 when no shape is given
    assert count_onnx(_chain()).layer("a2").tally == Tally(add=5 * 5 * 4 * 6, acc=5 * 5 * 4 * 6)


def test_wrong_input_shape_is_a_clear_error():
    fixed = _chain(batch=1)
    with pytest.raises(AdderconvError, match="does not fit"):
        count_onnx(fixed, input_shape=(1, 3, 11, 9))
    with pytest.raises(AdderconvError, match="has 3 dims"):
        count_onnx(fixed, input_shape=(1, 4, 11))


def _export(model, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # BatchNormalization nodes kept (both exporters fold them into Conv by default, which the PyTorch
        # count does not assume); the TorchScript exporter is used for speed (0.3 s against ~4 s for dynamo),
        # the dynamo exporter's name scopes are read the same way (see _layer_name)
        torch.onnx.export(model.eval(), (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False,
                          training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    return onnx.load(str(path))


def _by_layer(counts):
    return {layer.name: layer.tally for layer in counts.layers if layer.by_category().keys() & {"conv", "adder"}}


@pytest.fixture(scope="module")
def resnet20_onnx(tmp_path_factory):
    return _export(adderconv.get_model("resnet20"), tmp_path_factory.mktemp("onnx") / "resnet20.onnx")


def test_pytorch_and_onnx_front_ends_agree_on_the_cnn(resnet20_onnx):
    torch_counts = count_model(adderconv.get_model("resnet20"), (1, 3, 32, 32))
    onnx_counts = count_onnx(resnet20_onnx)
    assert onnx_counts.total == torch_counts.total
    assert _by_layer(onnx_counts) == _by_layer(torch_counts)
    assert onnx_counts.unsupported == {}


def test_pytorch_and_onnx_front_ends_agree_on_the_adder_net(resnet20_onnx, tmp_path):
    torch_model = adderconv.get_model("resnet20_adder")
    adder_layers = {n for n, m in torch_model.named_modules() if isinstance(m, adderconv.AdderConv2d)}
    model = onnx.ModelProto.FromString(resnet20_onnx.SerializeToString())
    from adderconv.analysis.onnx_frontend import _layer_name

    rewritten = 0
    for node in model.graph.node:
        if node.op_type == "Conv" and _layer_name(node) in adder_layers:
            node.op_type, node.domain = "AdderConv2d", "ai.adderconv"   # same attributes as Conv
            rewritten += 1
    assert rewritten == len(adder_layers) == 20       # 18 3x3 convs and 2 downsampling 1x1s
    path = tmp_path / "adder.onnx"
    onnx.save(model, str(path))
    onnx_report = analyze(str(path))
    torch_report = analyze("resnet20_adder")
    assert onnx_report.totals.counts == torch_report.totals.counts
    assert onnx_report.totals.energy_pj == pytest.approx(torch_report.totals.energy_pj)
    assert onnx_report.by_category["adder"] == torch_report.by_category["adder"]
    assert onnx_report.frontend == "onnx" and onnx_report.totals.mul == torch_report.totals.mul


@pytest.mark.slow
def test_dynamo_exporter_layer_names_agree_too(tmp_path):
    model = adderconv.get_model("resnet20").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), str(tmp_path / "d.onnx"), dynamo=True,
                          optimize=False, verbose=False)
    onnx_counts = count_onnx(tmp_path / "d.onnx")
    torch_counts = count_model(model, (1, 3, 32, 32))
    assert onnx_counts.total == torch_counts.total
    assert _by_layer(onnx_counts) == _by_layer(torch_counts)


def test_counts_the_node_that_adderconv_export_writes(tmp_path):
    from adderconv.converters.onnx_export import export_onnx

    model = adderconv.get_model("resnet20_adder").eval()
    export_onnx(model, tmp_path / "a.onnx", (1, 3, 32, 32))
    onnx_counts = count_onnx(tmp_path / "a.onnx")
    torch_counts = count_model(model, (1, 3, 32, 32))
    adders = {layer.name: layer.tally for layer in torch_counts.layers if layer.type == "AdderConv2d"}
    assert len(adders) == 20
    assert {n: onnx_counts.layer(n).tally for n in adders} == adders       # 2 add per MAC, 0 mul, same layers
    assert onnx_counts.unsupported == {}
    # the exporter folds BatchNorms that follow a multiplicative conv (stem, classifier) into it; every
    # other count is the same
    norms = {layer.name for layer in onnx_counts.layers if "norm" in layer.by_category()}
    folded = [layer for layer in torch_counts.layers if layer.type == "BatchNorm2d" and layer.name not in norms]
    assert sorted(layer.name for layer in folded) == ["bn1", "bn2"]
    assert onnx_counts.total + Tally.sum(layer.tally for layer in folded) == torch_counts.total
