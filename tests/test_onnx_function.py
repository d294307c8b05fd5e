"""The ai.adderconv::AdderConv2d function: onnxruntime runs it, it matches the float64 reference, no multiplies."""
import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from adderconv.converters.onnx_function import AdderConfig, attach_functions, build_function
from adderconv.reference import adder_conv2d_reference

FORBIDDEN = {"Mul", "MatMul", "Conv", "Gemm", "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul",
             "Einsum", "Div", "Pow"}

# (N, C, O, H, W, kernel, strides, pads (t, l, b, r), dilations, group, bias, opset)
CASES = [
    (2, 4, 6, 7, 9, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, False, 20),
    (2, 4, 6, 7, 9, (3, 2), (2, 1), (1, 0, 2, 1), (2, 1), 2, True, 20),     # asymmetric pads, grouped
    (3, 6, 6, 8, 8, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 6, False, 17),    # depthwise, strided, old ReduceL1
    (1, 6, 12, 8, 5, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 3, False, 13),   # 1x1, grouped, minimum opset
    (1, 5, 3, 10, 11, (5, 3), (3, 2), (2, 0, 0, 1), (2, 3), 1, True, 18),   # dilated and strided, non-square
    (2, 3, 4, 5, 5, (5, 5), (1, 1), (0, 0, 0, 0), (1, 1), 1, False, 20),    # kernel = input: 1x1 output
]


def _single_node_model(cfg: AdderConfig, c: int, o: int, opset: int) -> onnx.ModelProto:
    names = ["x", "w"] + (["b"] if cfg.bias else [])
    node = helper.make_node("AdderConv2d", names, ["y"], domain="ai.adderconv", **cfg.attributes())
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c, "H", "W"]),
              helper.make_tensor_value_info("w", TensorProto.FLOAT, [o, c // cfg.group, *cfg.kernel_shape])]
    if cfg.bias:
        inputs.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, [o]))
    graph = helper.make_graph([node], "g", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", o, "Ho", "Wo"])])
    model = ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))
    assert attach_functions(model) == 1
    return ir.serde.serialize_model(model)


@pytest.mark.parametrize("case", CASES, ids=lambda c: AdderConfig(c[5], c[6], c[7], c[8], c[9], c[10]).overload)
def test_function_matches_float64_reference(case):
    n, c, o, h, w, k, s, p, d, g, bias, opset = case
    cfg = AdderConfig(k, s, p, d, g, bias)
    model = _single_node_model(cfg, c, o, opset)
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (1, n + 2):                                   # one file, several batch sizes
        x, wt, b = torch.randn(batch, c, h, w), torch.randn(o, c // g, *k), torch.randn(o)
        xp = torch.nn.functional.pad(x.double(), (p[1], p[3], p[0], p[2]))
        expected = adder_conv2d_reference(xp, wt.double(), s, 0, d, g)
        if bias:
            expected = expected + b.double().view(1, -1, 1, 1)
        feed = {"x": x.numpy(), "w": wt.numpy(), **({"b": b.numpy()} if bias else {})}
        (got,) = session.run(None, feed)
        assert got.shape == tuple(expected.shape)
        np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


@pytest.mark.parametrize("group", [1, 2])
def test_function_body_is_multiplication_free(group):
    fn = build_function(AdderConfig((3, 3), (2, 2), (1, 1, 1, 1), (2, 2), group, True), opset=20)
    ops = {n.op_type for n in fn.node}
    assert not ops & FORBIDDEN, ops & FORBIDDEN
    assert {"Slice", "Sub", "ReduceL1", "Sum", "Neg", "Pad"} <= ops
    assert all(n.domain in ("", "ai.onnx") for n in fn.node)
    assert sum(n.op_type == "Sub" for n in fn.node) == 9       # one Sub per kernel tap


def test_attach_functions_is_idempotent_and_shares_configurations():
    cfg = AdderConfig((3, 3), pads=(1, 1, 1, 1))
    nodes = [helper.make_node("AdderConv2d", ["x", "w"], ["y1"], domain="ai.adderconv", **cfg.attributes()),
             helper.make_node("AdderConv2d", ["y1", "w"], ["y"], domain="ai.adderconv", **cfg.attributes())]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5]),
                                           helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 2, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 5, 5])])
    model = ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]))
    assert attach_functions(model) == 1
    assert attach_functions(model) == 0
    assert {n.overload for n in model.graph} == {cfg.overload}
    assert model.opset_imports["ai.adderconv"] == 1 and model.ir_version >= 10


def test_bad_configurations_raise():
    with pytest.raises(ValueError, match="pads"):
        AdderConfig((3, 3), pads=(1, 1))
    with pytest.raises(ValueError, match="kernel_shape"):
        AdderConfig.from_attributes({"strides": [1, 1]})
    with pytest.raises(ValueError, match="opset"):
        build_function(AdderConfig((3, 3)), opset=11)
