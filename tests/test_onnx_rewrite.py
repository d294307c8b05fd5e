"""ONNX-level conversion: Conv nodes become AdderConv2d by the converter's policy, and the rewritten file
computes what the same conversion does in PyTorch."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from adderconv import AdderConv2d, AdderconvError
from adderconv.converters.onnx_rewrite import convert_onnx
from adderconv.converters.onnx_verify import relative_error
from adderconv.converters.policy import Policy
from adderconv.reference import adder_conv2d_reference


class _Branchy(nn.Module):
    """Two stems read the input (both are 'first'), grouped/strided/dilated middle convs, a conv head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem_a, self.stem_b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 1)
        self.mid = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.ReLU(),
                                 nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2), nn.ReLU())
        self.head = nn.Conv2d(8, 5, 1)

    def forward(self, x):
        y = torch.cat([self.stem_a(x), self.stem_b(x)], 1).relu()
        return self.head(self.mid(y)).mean((2, 3))


def _export_cnn(model: nn.Module, path, shape) -> None:
    torch.onnx.export(model.eval(), (torch.randn(*shape),), str(path), dynamo=True, verbose=False,
                      dynamic_shapes=({0: torch.export.Dim("batch")},))


def _run(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_rewritten_graph_matches_the_same_conversion_in_pytorch(tmp_path):
    model, shape = _Branchy(), (1, 3, 12, 12)
    _export_cnn(model, tmp_path / "cnn.onnx", shape)
    result = convert_onnx(tmp_path / "cnn.onnx", tmp_path / "adder.onnx", Policy())
    kept = {r.reason for r in result.records if not r.converted}
    assert len(result.converted) == 2                      # the two middle convs
    assert kept == {"kept: first multiplicative layer (keep_first)", "kept: last multiplicative layer (keep_last)"}
    assert sum(not r.converted for r in result.records) == 3
    proto = onnx.load(str(tmp_path / "adder.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    assert sum(n.op_type == "AdderConv2d" for n in proto.graph.node) == 2
    assert sum(n.op_type == "Conv" for n in proto.graph.node) == 3
    # the same conversion in PyTorch, by hand
    model.mid[0], model.mid[2] = AdderConv2d.from_conv(model.mid[0]), AdderConv2d.from_conv(model.mid[2])
    for batch in (1, 4):
        x = torch.randn(batch, *shape[1:])
        with torch.no_grad():
            want = model.double()(x.double()).numpy()
        assert relative_error(_run(tmp_path / "adder.onnx", x.numpy()), want) <= 1e-4


def _conv_model(auto_pad: str, opset: int = 17, conv_1d: bool = False) -> tuple[onnx.ModelProto, np.ndarray]:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3) if conv_1d else (4, 3, 3, 2)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    attrs = {"auto_pad": auto_pad, "strides": [2] if conv_1d else [2, 3]}
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", **attrs)
    x_shape = [2, 3, 9] if conv_1d else [2, 3, 9, 10]
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), w


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID", "NOTSET"])
def test_auto_pad_is_resolved_into_explicit_pads(auto_pad, tmp_path):
    src, w = _conv_model(auto_pad)
    onnx.save(src, str(tmp_path / "c.onnx"))
    policy = Policy(keep_first=False, keep_last=False)
    assert len(convert_onnx(tmp_path / "c.onnx", tmp_path / "a.onnx", policy).converted) == 1
    x = np.random.default_rng(1).standard_normal((2, 3, 9, 10)).astype(np.float32)
    conv_out = _run(tmp_path / "c.onnx", x)                # onnxruntime's own Conv fixes the geometry
    got = _run(tmp_path / "a.onnx", x)
    assert got.shape == conv_out.shape
    (node,) = onnx.load(str(tmp_path / "a.onnx")).graph.node
    top, left, bottom, right = [list(a.ints) for a in node.attribute if a.name == "pads"][0]
    xp = torch.nn.functional.pad(torch.from_numpy(x).double(), (left, right, top, bottom))
    want = adder_conv2d_reference(xp, torch.from_numpy(w).double(), (2, 3)).numpy()
    want += numpy_helper.to_array(src.graph.initializer[1])[None, :, None, None]      # the bias
    assert relative_error(got, want) <= 1e-5


def test_weight_init_policies(tmp_path):
    src, w = _conv_model("VALID")
    onnx.save(src, str(tmp_path / "c.onnx"))
    for init in ("copy_rescaled", "normal"):
        convert_onnx(tmp_path / "c.onnx", tmp_path / f"{init}.onnx",
                     Policy(keep_first=False, keep_last=False, weight_init=init))
        proto = onnx.load(str(tmp_path / f"{init}.onnx"))
        (node,) = proto.graph.node
        new_w = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}[node.input[1]]
        assert new_w.shape == w.shape and abs(new_w.std() - 1) < 0.35
        if init == "copy_rescaled":
            np.testing.assert_allclose(new_w, w / w.astype(np.float64).std(), rtol=1e-5)


def test_declines_are_explained_and_errors_are_clear(tmp_path):
    src, _ = _conv_model("NOTSET", conv_1d=True)
    onnx.save(src, str(tmp_path / "c1.onnx"))
    with pytest.raises(AdderconvError, match="only 2-d convolutions"):
        convert_onnx(tmp_path / "c1.onnx", tmp_path / "o.onnx", Policy(keep_first=False, keep_last=False))
    src, _ = _conv_model("NOTSET")
    onnx.save(src, str(tmp_path / "c.onnx"))
    with pytest.raises(AdderconvError, match="first multiplicative layer"):
        convert_onnx(tmp_path / "c.onnx", tmp_path / "o.onnx", Policy())    # the only conv is first and last
    with pytest.raises(AdderconvError, match="matches no include"):
        convert_onnx(tmp_path / "c.onnx", tmp_path / "o.onnx", Policy(keep_first=False, keep_last=False,
                                                                       include=("layer9.*",)))
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(AdderconvError, match="not a readable ONNX file"):
        convert_onnx(tmp_path / "bad.onnx", tmp_path / "o.onnx")
    assert not (tmp_path / "o.onnx").exists()


def test_old_opset_is_upgraded(tmp_path):
    src, _ = _conv_model("NOTSET", opset=11)
    onnx.save(src, str(tmp_path / "c.onnx"))
    convert_onnx(tmp_path / "c.onnx", tmp_path / "a.onnx", Policy(keep_first=False, keep_last=False))
    proto = onnx.load(str(tmp_path / "a.onnx"))
    assert {o.domain: o.version for o in proto.opset_import}[""] >= 13
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 10)).astype(np.float32)
    assert _run(tmp_path / "a.onnx", x).shape == _run(tmp_path / "c.onnx", x).shape
