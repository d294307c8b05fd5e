"""ONNX-level conversion: rewrite ``Conv`` nodes of any ONNX model into ``ai.adderconv::AdderConv2d``.

The same :class:`~adderconv.converters.policy.Policy` decides as for PyTorch models: every multiplicative node
(Conv, Gemm, MatMul) is described as a framework-neutral :class:`LayerInfo`; first/last are found on the
graph (no multiplicative node upstream / downstream on any path), the index is the topological order. The
pass (:class:`ConvToAdderPass`, an onnx-ir in-place pass returning ``(model, modified)``) records for every
node whether it was rewritten and why not. The rewritten node keeps ``X, W[, B]`` and Conv's attributes
(``auto_pad`` is resolved into explicit pads, which needs static spatial sizes), so models from other
frameworks can be analysed (``adderconv energy``) and run (onnxruntime) as adder networks.

What the PyTorch converter does but this pass does not, said in the result's notes: BatchNorm insertion and
the AdderSR preset (they change the network; fine-tune in PyTorch for that), Gemm/MatMul rewriting. An ONNX
file whose BatchNorm was folded into the Conv keeps the folded weights (gamma * |x - w| is not |x - w'|: the
outputs change either way; the adder network needs fine-tuning before its outputs mean anything).

>>> result = convert_onnx("resnet18.onnx", "resnet18_adder.onnx", Policy())       # doctest: +SKIP
>>> print(result)                                                                 # doctest: +SKIP
19 of 21 multiplicative nodes rewritten into ai.adderconv::AdderConv2d (2 kept)
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from adderconv.errors import AdderconvError, first_line
from adderconv.io import atomic_write

from .onnx_function import DOMAIN, MIN_OPSET, OP_TYPE, attach_functions
from .policy import LayerInfo, Policy, decide

__all__ = ["RewriteRecord", "OnnxConversion", "ConvToAdderPass", "convert_onnx", "MULTIPLICATIVE_OPS"]

MULTIPLICATIVE_OPS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class RewriteRecord:
    name: str
    op_type: str
    converted: bool
    reason: str


@dataclass
class OnnxConversion:
    """What :func:`convert_onnx` did, node by node."""

    path: Path | None
    records: list[RewriteRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def converted(self) -> list[RewriteRecord]:
        return [r for r in self.records if r.converted]

    def __str__(self) -> str:
        n = len(self.converted)
        return (f"{n} of {len(self.records)} multiplicative nodes rewritten into {DOMAIN}::{OP_TYPE} "
                f"({len(self.records) - n} kept)")


def _attrs(node: ir.Node) -> dict:
    return {name: attr.value for name, attr in node.attributes.items()}


def _shape(value: ir.Value | None) -> tuple | None:
    if value is None:
        return None
    const = ir.convenience.get_const_tensor(value)
    if const is not None:
        return tuple(int(d) for d in const.shape)
    if value.shape is None:
        return None
    return tuple(d if isinstance(d, int) else None for d in value.shape)


def _layer_name(node: ir.Node) -> str:
    return node.name or (node.outputs[0].name if node.outputs and node.outputs[0].name else f"{node.op_type}?")


def _flags(graph: ir.Graph, mult: set[ir.Node]) -> tuple[set[ir.Node], set[ir.Node]]:
    """(nodes with a multiplicative node upstream, nodes with one downstream), over the main graph's edges."""
    upstream_values: set[ir.Value] = set()
    has_up: set[ir.Node] = set()
    for node in graph:                                     # ONNX graphs are topologically sorted
        if any(v in upstream_values for v in node.inputs if v is not None):
            has_up.add(node)
        if node in mult or node in has_up:
            upstream_values.update(node.outputs)
    has_down: set[ir.Node] = set()
    for node in reversed(list(graph)):
        users = {user for out in node.outputs for user, _ in out.uses()}
        if any(u in mult or u in has_down for u in users):
            has_down.add(node)
    return has_up, has_down


def _explicit_pads(node: ir.Node, x_shape: tuple | None, kernel, strides, dilations) -> list[int] | str:
    """Conv's pads in ONNX order (top, left, bottom, right), auto_pad resolved; a str says why not."""
    attrs = _attrs(node)
    auto = attrs.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        return [int(p) for p in attrs.get("pads", (0, 0, 0, 0))]
    if auto == "VALID":
        return [0, 0, 0, 0]
    if x_shape is None or len(x_shape) != 4 or None in x_shape[2:]:
        return f"kept: auto_pad={auto} needs static spatial input sizes"
    begin, end = [], []
    for size, k, s, d in zip(x_shape[2:], kernel, strides, dilations):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else large)
        end.append(large if auto == "SAME_UPPER" else small)
    return begin + end


class ConvToAdderPass(ir.passes.InPlacePass):
    """Rewrite the main graph's Conv nodes chosen by ``policy`` into AdderConv2d nodes (with functions).

    ``weight_init`` follows the policy: ``copy`` keeps W, ``copy_rescaled`` divides it by its standard
    deviation (AdderNet's N(0, 1) scale), ``normal`` draws N(0, 1) with ``seed``. After ``call``,
    ``records`` lists every multiplicative node with its fate.
    """

    def __init__(self, policy: Policy | None = None, seed: int = 0) -> None:
        super().__init__()
        self.policy = policy or Policy()
        self.rng = np.random.default_rng(seed)
        self.records: list[RewriteRecord] = []

    def _describe(self, node: ir.Node, index: int, first: bool, last: bool) -> LayerInfo | str:
        w = _shape(node.inputs[1]) if len(node.inputs) > 1 else None
        name = _layer_name(node)
        if node.op_type == "Conv":
            if w is None or None in w:
                return "kept: weight shape unknown"
            group = int(_attrs(node).get("group", 1))
            return LayerInfo(name, "conv", w[1] * group, w[0], group, tuple(w[2:]), index, first, last, "Conv")
        dims = (w[-2], w[-1]) if w and len(w) >= 2 and None not in w[-2:] else (0, 0)
        transposed = node.op_type == "Gemm" and _attrs(node).get("transB", 0)
        fan_in, fan_out = (dims[1], dims[0]) if transposed else dims
        return LayerInfo(name, "linear", fan_in, fan_out, 1, (), index, first, last, node.op_type)

    def _new_weight(self, graph: ir.Graph, w: ir.Value) -> ir.Value | str:
        init = self.policy.weight_init
        if init == "copy":
            return w
        const = ir.convenience.get_const_tensor(w)
        if const is None:
            return f"kept: weight_init={init} needs a constant weight"
        array = const.numpy().astype(np.float64)
        array = array / (array.std() or 1.0) if init == "copy_rescaled" else self.rng.standard_normal(array.shape)
        value = ir.Value(name=f"{w.name}_adder", const_value=ir.tensor(array.astype(const.numpy().dtype)))
        value.shape, value.type = ir.Shape(array.shape), w.type
        graph.register_initializer(value)
        return value

    def _rewrite(self, graph: ir.Graph, node: ir.Node) -> str | None:
        """Replace one Conv; returns why not, or None when done."""
        w_shape = _shape(node.inputs[1])
        if len(w_shape) != 4:
            return f"kept: only 2-d convolutions are rewritten (weight rank {len(w_shape)})"
        attrs = _attrs(node)
        kernel = [int(k) for k in attrs.get("kernel_shape", w_shape[2:])]
        strides = [int(s) for s in attrs.get("strides", (1, 1))]
        dilations = [int(d) for d in attrs.get("dilations", (1, 1))]
        pads = _explicit_pads(node, _shape(node.inputs[0]), kernel, strides, dilations)
        if isinstance(pads, str):
            return pads
        weight = self._new_weight(graph, node.inputs[1])
        if isinstance(weight, str):
            return weight
        inputs = [node.inputs[0], weight] + ([node.inputs[2]] if len(node.inputs) > 2 and node.inputs[2] else [])
        new = ir.Node(DOMAIN, OP_TYPE, inputs, name=node.name, attributes=[
            ir.AttrInt64s("kernel_shape", kernel), ir.AttrInt64s("strides", strides),
            ir.AttrInt64s("pads", pads), ir.AttrInt64s("dilations", dilations),
            ir.AttrInt64("group", int(attrs.get("group", 1)))])
        for key, value in node.metadata_props.items():          # keep e.g. the exporter's module names
            new.metadata_props[key] = value
        ir.convenience.replace_nodes_and_values(graph, node, [node], [new], node.outputs, new.outputs)
        return None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        self.records = []
        mult = [n for n in graph if n.domain in ("", "ai.onnx") and n.op_type in MULTIPLICATIVE_OPS]
        has_up, has_down = _flags(graph, set(mult))
        for index, node in enumerate(mult):
            info = self._describe(node, index, node not in has_up, node not in has_down)
            if isinstance(info, str):
                self.records.append(RewriteRecord(_layer_name(node), node.op_type, False, info))
                continue
            convert, reason = decide(info, self.policy)
            if convert and node.op_type != "Conv":
                convert, reason = False, f"kept: {node.op_type} is not rewritten at the ONNX level"
            if convert:
                why_not = self._rewrite(graph, node)
                convert, reason = why_not is None, why_not or reason
            self.records.append(RewriteRecord(info.name, node.op_type, convert, reason))
        modified = any(r.converted for r in self.records)
        if modified:
            attach_functions(model)
        return ir.passes.PassResult(model, modified)


def convert_onnx(src: str | os.PathLike, dst: str | os.PathLike, policy: Policy | None = None, *,
                 seed: int = 0) -> OnnxConversion:
    """Rewrite ``src``'s Conv nodes by ``policy`` and write ``dst`` atomically (checked with the full checker)."""
    policy = policy or Policy()
    try:
        proto = onnx.load(str(src))
    except (OSError, onnx.onnx_cpp2py_export.checker.ValidationError, Exception) as e:  # protobuf DecodeError
        raise AdderconvError(f"{src}: not a readable ONNX file ({first_line(e)})") from None
    from adderconv.analysis.onnx_frontend import check_onnx_model

    check_onnx_model(proto, str(src))          # an empty file, no nodes or inputs, a negative dimension
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        try:
            proto = onnx.version_converter.convert_version(proto, MIN_OPSET)
        except Exception as e:
            raise AdderconvError(f"{src}: opset {opset} is below {MIN_OPSET} and could not be upgraded ({e})") from None
    proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    model = ir.serde.deserialize_model(proto)
    pass_ = ConvToAdderPass(policy, seed)
    result = pass_(model)
    result_info = OnnxConversion(None, pass_.records)
    if not pass_.records:
        raise AdderconvError(f"{src}: the graph has no Conv, Gemm or MatMul nodes to convert")
    if not result.modified:
        reasons = sorted({r.reason for r in pass_.records})
        raise AdderconvError(f"{src}: the policy rewrites none of the {len(pass_.records)} multiplicative nodes "
                             f"({'; '.join(reasons)})")
    if policy.insert_bn or policy.shortcut or policy.power:
        result_info.notes.append("insert_bn/shortcut/power are PyTorch-side changes: not applied to the ONNX graph")
    out = ir.serde.serialize_model(result.model)
    try:
        onnx.checker.check_model(out, full_check=True)
    except Exception as e:
        raise AdderconvError(f"{src}: the rewritten model fails onnx.checker ({first_line(e)})") from None
    with atomic_write(dst) as tmp:
        onnx.save(out, str(tmp))
    result_info.path = Path(dst)
    return result_info
