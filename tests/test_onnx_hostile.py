"""Hostile ONNX files: shape inference stays linear in the graph's size, and names from the file are plain text."""
import onnx
from onnx import TensorProto, helper

from adderconv.analysis.onnx_frontend import count_onnx


def adder_chain(n: int, name=lambda i: f"adder{i}") -> onnx.ModelProto:
    """``n`` x (AdderConv2d 3x3 -> Relu): every adder's output shape depends on the one before it."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4, 3, 3], [0.1] * 144)
    nodes, prev = [], "x"
    for i in range(n):
        nodes += [helper.make_node("AdderConv2d", [prev, "w"], [f"a{i}"], name=name(i), domain="ai.adderconv",
                                   kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"a{i}"], [f"r{i}"], name=f"relu{i}")]
        prev = f"r{i}"
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)], initializer=[w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.adderconv", 1)])


def _inference_runs(monkeypatch, model) -> int:
    from onnx import shape_inference

    calls = []
    real = shape_inference.infer_shapes
    monkeypatch.setattr(shape_inference, "infer_shapes", lambda *a, **k: calls.append(1) or real(*a, **k))
    counts = count_onnx(model)
    assert counts.unsupported == {} and counts.total["add"] == len(model.graph.node) // 2 * 64 * 4 * 36
    return len(calls)


def test_an_adder_chain_is_inferred_in_a_constant_number_of_passes(monkeypatch):
    # was one whole-graph inference per adder node (quadratic: 800 nodes 34 s, 1,600 nodes 96 s)
    short, long = _inference_runs(monkeypatch, adder_chain(100)), _inference_runs(monkeypatch, adder_chain(200))
    assert short == long <= 2, (short, long)


def test_node_names_and_op_types_enter_as_one_plain_line():
    model = adder_chain(2, name=lambda i: ["a\r```\n<!--", "b\x1b]52;c;aGk=\x07\x1b[2J\u202e"][i])
    model.graph.node[3].op_type = "Re\x1b[31mlu"       # an unknown op: listed as unsupported under its name
    counts = count_onnx(model)
    assert [layer.name for layer in counts.layers] == ["a ``` <!--", "relu0", "b", "relu1"]
    assert counts.unsupported == {"Relu": 1}
