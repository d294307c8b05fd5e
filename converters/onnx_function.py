"""The ONNX form of the adder layer: the ``ai.adderconv::AdderConv2d`` node and the function that defines it.

The node is a contract with every ONNX consumer (the energy front end counts it, onnxruntime runs it):

- domain ``ai.adderconv``, op_type ``AdderConv2d``, inputs ``(X, W[, B])``, one output ``Y``;
- attributes exactly like ONNX ``Conv``: ``kernel_shape`` (2 ints), ``strides`` (2), ``pads`` (4, ONNX order
  top, left, bottom, right), ``dilations`` (2), ``group`` (int);
- ``Y[n, o, p] = -sum_j |X_col[n, j, p] - W[o, j]| (+ B[o])`` with zero padding.

A model carries one ONNX function per kernel configuration (ONNX function *overloads*, IR version >= 10): the
node names its overload (``k3x3_s1x1_p1x1x1x1_d1x1_g1``, ``..._b`` with a bias), the function of that overload
is specialised to it. Specialisation is needed because the body is unrolled over the kernel taps: for each tap
a strided ``Slice`` of the padded input, ``Sub`` the matching weight column, ``ReduceL1`` over the input
channels (= Abs + ReduceSum); then ``Sum`` over taps and ``Neg``. No Mul, MatMul, Conv or Gemm anywhere, so the
graph onnxruntime runs is itself multiplication-free. Slices end at negative offsets from the end of each axis,
so the body works for any batch size and any spatial size.

>>> cfg = AdderConfig.from_attributes({"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]})
>>> cfg.overload
'k3x3_s1x1_p1x1x1x1_d1x1_g1'
>>> fn = build_function(cfg, opset=20)          # an onnx.FunctionProto
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import onnx
from onnx import TensorProto, helper

__all__ = ["DOMAIN", "OP_TYPE", "INT_OP_TYPE", "DOMAIN_VERSION", "MIN_OPSET", "ATTRIBUTES", "AdderConfig",
           "build_function", "build_integer_function", "attach_functions"]

DOMAIN = "ai.adderconv"
OP_TYPE = "AdderConv2d"
INT_OP_TYPE = "AdderConv2dInteger"   # the int8 layer's integer core (see build_integer_function)
DOMAIN_VERSION = 1
MIN_OPSET = 13          # Unsqueeze/Slice/Pad take their indices as inputs from 13 on
ATTRIBUTES = ("kernel_shape", "strides", "pads", "dilations", "group")
_INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class AdderConfig:
    """One kernel configuration of the node (everything the function body is specialised to)."""

    kernel_shape: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)       # ONNX order: top, left, bottom, right
    dilations: tuple[int, int] = (1, 1)
    group: int = 1
    bias: bool = False

    def __post_init__(self) -> None:
        checks = {"kernel_shape": (self.kernel_shape, 2, 1), "strides": (self.strides, 2, 1),
                  "pads": (self.pads, 4, 0), "dilations": (self.dilations, 2, 1)}
        for name, (value, length, low) in checks.items():
            if len(value) != length or any(int(v) < low for v in value):
                raise ValueError(f"AdderConv2d attribute {name} must be {length} ints >= {low}, got {list(value)}")
        if self.group < 1:
            raise ValueError(f"AdderConv2d attribute group must be >= 1, got {self.group}")

    @classmethod
    def from_attributes(cls, attrs: Mapping[str, object], bias: bool = False) -> "AdderConfig":
        """From a node's attribute values (missing ones take ONNX Conv's defaults, except kernel_shape)."""
        if "kernel_shape" not in attrs:
            raise ValueError("AdderConv2d node needs a kernel_shape attribute")
        return cls(tuple(int(v) for v in attrs["kernel_shape"]),  # type: ignore[arg-type,union-attr]
                   tuple(int(v) for v in attrs.get("strides", (1, 1))),  # type: ignore[arg-type,union-attr]
                   tuple(int(v) for v in attrs.get("pads", (0, 0, 0, 0))),  # type: ignore[arg-type,union-attr]
                   tuple(int(v) for v in attrs.get("dilations", (1, 1))),  # type: ignore[arg-type,union-attr]
                   int(attrs.get("group", 1)), bias)  # type: ignore[arg-type]

    def attributes(self) -> dict[str, object]:
        return {"kernel_shape": list(self.kernel_shape), "strides": list(self.strides), "pads": list(self.pads),
                "dilations": list(self.dilations), "group": self.group}

    @property
    def overload(self) -> str:
        j = lambda v: "x".join(map(str, v))  # noqa: E731
        return (f"k{j(self.kernel_shape)}_s{j(self.strides)}_p{j(self.pads)}_d{j(self.dilations)}_g{self.group}"
                + ("_b" if self.bias else ""))


class _Body:
    """Collects the nodes of a function body; constants are int64 Constant nodes."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self._n = 0

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        self._n += 1
        out = f"{op_type.lower()}_{self._n}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def ints(self, values: Sequence[int]) -> str:
        self._n += 1
        out = f"const_{self._n}"
        self.nodes.append(helper.make_node("Constant", [], [out], value=helper.make_tensor(
            out, TensorProto.INT64, [len(values)], [int(v) for v in values])))
        return out


def _tap_end(offset: int, extent: int) -> int:
    """Slice end for a tap at ``offset`` of a kernel spanning ``extent + 1`` pixels: relative to the axis end,
    so the slice has exactly the output size (ceil((size - extent) / stride)) for any input size."""
    return offset - extent if offset < extent else _INT64_MAX


def _taps(b: _Body, cfg: AdderConfig, x: str, w: str, opset: int, integer: bool) -> str:
    """``sum_j |X_col - W|`` over the taps of padded ``x`` (N, C, H, W) and ``w`` (O, C/g, kh, kw): (N, O, Ho, Wo).
    Float: ReduceL1 over the channels; integer (int32): Abs, ReduceSum and Add (ONNX Sum is float-only)."""
    (kh, kw), (sh, sw), (dh, dw), g = cfg.kernel_shape, cfg.strides, cfg.dilations, cfg.group
    if g == 1:
        x = b.op("Unsqueeze", x, b.ints([1]))                                  # (N, 1, C, H, W)
        spatial, reduce_axis = (3, 4), 2                                       # W taps: (O, C, 1, 1)
    else:
        # (N, G, 1, C/G, H, W) against W taps (G, O/G, C/G, 1, 1); Reshape's 0 copies a dimension, -1 infers.
        x = b.op("Reshape", b.op("Unsqueeze", x, b.ints([1])), b.ints([0, g, -1, 0, 0]))
        x = b.op("Unsqueeze", x, b.ints([2]))
        w = b.op("Reshape", b.op("Unsqueeze", w, b.ints([0])), b.ints([g, -1, 0, 0, 0]))
        spatial, reduce_axis = (4, 5), 3
    w_axes = (3, 4) if g > 1 else (2, 3)                                         # kh, kw axes of the W view
    taps = []
    for i in range(kh):
        for jj in range(kw):
            xs = b.op("Slice", x, b.ints([i * dh, jj * dw]),
                      b.ints([_tap_end(i * dh, (kh - 1) * dh), _tap_end(jj * dw, (kw - 1) * dw)]),
                      b.ints(spatial), b.ints([sh, sw]))
            ws = b.op("Slice", w, b.ints([i, jj]), b.ints([i + 1, jj + 1]), b.ints(w_axes))
            diff = b.op("Sub", xs, ws)
            if integer:
                taps.append(b.op("ReduceSum", b.op("Abs", diff), b.ints([reduce_axis]), keepdims=0))
            elif opset >= 18:
                taps.append(b.op("ReduceL1", diff, b.ints([reduce_axis]), keepdims=0))
            else:
                taps.append(b.op("ReduceL1", diff, axes=[reduce_axis], keepdims=0))
    if integer:
        y = taps[0]
        for t in taps[1:]:
            y = b.op("Add", y, t)
    else:
        y = b.op("Sum", *taps) if len(taps) > 1 else taps[0]
    if g > 1:   # (N, G, O/G, Ho, Wo) -> (N, O, Ho, Wo)
        hw = b.op("Slice", b.op("Shape", y), b.ints([3]), b.ints([5]))
        y = b.op("Reshape", y, b.op("Concat", b.ints([0, -1]), hw, axis=0))
    return y


def build_function(cfg: AdderConfig, opset: int) -> onnx.FunctionProto:
    """The ONNX function (standard ops only, no multiplications) of one configuration of the node."""
    if opset < MIN_OPSET:
        raise ValueError(f"the AdderConv2d function needs default-domain opset >= {MIN_OPSET}, got {opset}")
    b = _Body()
    top, left, bottom, right = cfg.pads
    x = "X"
    if any(cfg.pads):
        x = b.op("Pad", x, b.ints([0, 0, top, left, 0, 0, bottom, right]))   # constant 0: |0 - w| as in torch
    y = b.op("Neg", _taps(b, cfg, x, "W", opset, integer=False))
    inputs = ["X", "W"]
    if cfg.bias:
        inputs.append("B")
        y = b.op("Add", y, b.op("Unsqueeze", "B", b.ints([1, 2])))
    b.nodes.append(helper.make_node("Identity", [y], ["Y"]))
    return helper.make_function(
        DOMAIN, OP_TYPE, inputs, ["Y"], b.nodes, [helper.make_opsetid("", opset)],
        attributes=list(ATTRIBUTES), overload=cfg.overload,
        doc_string=f"AdderNet layer Y = -sum |X - W| ({cfg.overload}); multiplication-free.")


def build_integer_function(cfg: AdderConfig, opset: int) -> onnx.FunctionProto:
    """``ai.adderconv::AdderConv2dInteger(X, W, X_zero_point) -> Y``: uint8 codes on one grid (NCHW), padding
    with the zero point, ``Y = sum_j |X_col - W|`` in int32 (exact; the int8 adder layer's integer core)."""
    if opset < MIN_OPSET:
        raise ValueError(f"the AdderConv2dInteger function needs default-domain opset >= {MIN_OPSET}, got {opset}")
    if cfg.bias:
        raise ValueError("AdderConv2dInteger takes no bias (the layer's affine follows the node)")
    b = _Body()
    i32 = TensorProto.INT32
    x, w, z = b.op("Cast", "X", to=i32), b.op("Cast", "W", to=i32), b.op("Cast", "X_zero_point", to=i32)
    top, left, bottom, right = cfg.pads
    if any(cfg.pads):
        x = b.op("Pad", x, b.ints([0, 0, top, left, 0, 0, bottom, right]), z)   # the zero point: float 0
    b.nodes.append(helper.make_node("Identity", [_taps(b, cfg, x, w, opset, integer=True)], ["Y"]))
    return helper.make_function(
        DOMAIN, INT_OP_TYPE, ["X", "W", "X_zero_point"], ["Y"], b.nodes, [helper.make_opsetid("", opset)],
        attributes=list(ATTRIBUTES), overload=cfg.overload,
        doc_string=f"int8 AdderNet layer core Y = sum |X - W| on uint8 codes, int32 ({cfg.overload}).")


def attach_functions(model) -> int:
    """Give every AdderConv2d node of an ``onnx_ir.Model`` its overload and the model the matching functions.

    Idempotent; returns the number of functions added. Raises ValueError for a node that breaks the contract.
    """
    import onnx_ir as ir

    opset = model.opset_imports.get("", None)
    if opset is None or opset < MIN_OPSET:
        raise ValueError(f"AdderConv2d functions need default-domain opset >= {MIN_OPSET}, the model has {opset}")
    model.opset_imports.setdefault(DOMAIN, DOMAIN_VERSION)
    model.ir_version = max(model.ir_version or 0, 10)                  # function overloads arrived in IR 10
    added = 0
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if node.domain != DOMAIN or node.op_type not in (OP_TYPE, INT_OP_TYPE):
            continue
        attrs = {name: attr.value for name, attr in node.attributes.items()}
        unknown = set(attrs) - set(ATTRIBUTES)
        if unknown:
            raise ValueError(f"AdderConv2d node {node.name!r} has unknown attributes {sorted(unknown)}")
        integer = node.op_type == INT_OP_TYPE
        has_bias = not integer and len(node.inputs) > 2 and node.inputs[2] is not None
        cfg = AdderConfig.from_attributes(attrs, bias=has_bias)
        for name, value in cfg.attributes().items():        # write every attribute out, as the contract says
            if name not in node.attributes:
                node.attributes[name] = ir.Attr(name, ir.AttributeType.INT if name == "group"
                                                else ir.AttributeType.INTS, value)
        node.overload = cfg.overload
        key = (DOMAIN, node.op_type, cfg.overload)
        if key not in model.functions:
            build = build_integer_function if integer else build_function
            model.functions[key] = ir.serde.deserialize_function(build(cfg, opset))
            added += 1
    return added
