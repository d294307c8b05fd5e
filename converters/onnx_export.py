"""Export PyTorch models with adder layers to ONNX files that plain onnxruntime runs.

torch.onnx's exporter (torch.export-based) translates every ``torch.ops.adderconv.adder_conv2d`` node into one
``ai.adderconv::AdderConv2d`` node (see :mod:`.onnx_function` for the contract); a pass then names each node
after its module (``layer1.0.conv1``), sets its overload and adds the multiplication-free ONNX function that
defines it. The batch dimension is dynamic. The file is checked with ``onnx.checker`` (full check) and written
atomically.

>>> from adderconv import get_model
>>> info = export_onnx(get_model("resnet20_adder"), "resnet20_adder.onnx", (1, 3, 32, 32))  # doctest: +SKIP
>>> len(info.adder_nodes)                                                                # doctest: +SKIP
18
"""
from __future__ import annotations

import ast
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch
from torch import nn

import adderconv.ops  # noqa: F401  (registers torch.ops.adderconv.adder_conv2d, translated below)
from adderconv.errors import AdderconvError
from adderconv.io import atomic_write

from .onnx_function import ATTRIBUTES, DOMAIN, DOMAIN_VERSION, INT_OP_TYPE, MIN_OPSET, OP_TYPE, attach_functions

__all__ = ["OnnxExport", "export_onnx", "export_onnx_model", "translation_table", "resolve_input_shape"]

# Exporter metadata that records the exporting machine's source paths and FX text: not part of the model.
_DROPPED_METADATA = ("pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node")


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote."""

    path: Path | None
    opset: int
    input_names: list[str]
    output_names: list[str]
    adder_nodes: list[str] = field(default_factory=list)       # node names, one per adder layer call
    overloads: list[str] = field(default_factory=list)         # one function per kernel configuration
    node_types: dict[str, int] = field(default_factory=dict)   # op type -> nodes (AdderConv2d, AdderConv2dInteger)

    def describe_nodes(self) -> str:
        """The adder nodes by type, in words: ``18 AdderConv2dInteger nodes`` for a quantised model.

        >>> OnnxExport(None, 20, ["x"], ["y"], node_types={"AdderConv2d": 1, "AdderConv2dInteger": 18}).describe_nodes()
        '1 AdderConv2d and 18 AdderConv2dInteger nodes'
        """
        if not self.node_types:
            return f"0 {OP_TYPE} nodes"
        parts = [f"{n} {op}" for op, n in sorted(self.node_types.items())]
        return (" and ".join(parts) if len(parts) < 3 else ", ".join(parts)) + \
            (" node" if len(parts) == 1 and sum(self.node_types.values()) == 1 else " nodes")


def resolve_input_shape(source: str, arch: str | None, shape: Sequence[int] | None) -> tuple[int, ...]:
    """The given shape, else the zoo default of ``source``, ``arch`` or the file's recorded architecture; an
    error when there is none."""
    from adderconv.io import input_shape_of

    found = tuple(shape) if shape else input_shape_of(source, arch)
    if found is None:
        raise AdderconvError(f"{source}: no default input shape; an input shape is needed, e.g. 1,3,224,224")
    return found


def _adder_schema() -> onnx.defs.OpSchema:
    """A schema object (never registered globally) so onnxscript can record a node of our domain."""
    S = onnx.defs.OpSchema
    optional = S.FormalParameterOption.Optional
    return S(OP_TYPE, DOMAIN, DOMAIN_VERSION, "AdderNet layer Y = -sum |X - W| (+ B); attributes as Conv.",
             inputs=[S.FormalParameter("X", "T"), S.FormalParameter("W", "T"),
                     S.FormalParameter("B", "T", param_option=optional)],
             outputs=[S.FormalParameter("Y", "T")],
             type_constraints=[("T", ["tensor(float)", "tensor(double)", "tensor(float16)", "tensor(bfloat16)"],
                                "float tensors")],
             attributes=[S.Attribute(name, S.AttrType.INT if name == "group" else S.AttrType.INTS, "")
                         for name in ATTRIBUTES])


def translation_table() -> dict:
    """``custom_translation_table`` for :func:`torch.onnx.export`: the adder op -> our node."""
    from onnxscript import values

    adder = values.Op(values.Opset(DOMAIN, DOMAIN_VERSION), OP_TYPE, _adder_schema())

    def adder_conv2d(x, weight, stride, padding, dilation, groups):
        # The op pads symmetrically: padding (ph, pw) is ONNX pads (top, left, bottom, right) = (ph, pw, ph, pw).
        kernel = [int(d) for d in weight.shape[2:]]
        return adder(x, weight, kernel_shape=kernel, strides=list(stride), pads=[*padding, *padding],
                     dilations=list(dilation), group=int(groups))

    table = {torch.ops.adderconv.adder_conv2d.default: adder_conv2d}
    table.update(_int8_translations())
    return table


def _int_schema() -> onnx.defs.OpSchema:
    S = onnx.defs.OpSchema
    return S(INT_OP_TYPE, DOMAIN, DOMAIN_VERSION, "int8 AdderNet core Y = sum |X - W| on uint8 codes (int32).",
             inputs=[S.FormalParameter("X", "T"), S.FormalParameter("W", "T"), S.FormalParameter("X_zero_point", "T")],
             outputs=[S.FormalParameter("Y", "T1")],
             type_constraints=[("T", ["tensor(uint8)"], "uint8 codes"), ("T1", ["tensor(int32)"], "int32 sums")],
             attributes=[S.Attribute(name, S.AttrType.INT if name == "group" else S.AttrType.INTS, "")
                         for name in ATTRIBUTES])


def _int8_translations() -> dict:
    """The int8 adder layer in standard QDQ form: ``QuantizeLinear`` -> ``ai.adderconv::AdderConv2dInteger``
    (int32 sums) -> ``DequantizeLinear`` (per-channel scale) + shift [-> ``QuantizeLinear`` (scale 1) + floor];
    the PyTorch ops work channels-last, so Transposes frame each one. A ReLU on uint8 codes is an Identity (the
    floor already holds it; ONNX Relu has no uint8)."""
    import onnx_ir as ir
    from onnxscript import opset18 as op
    from onnxscript import values

    import adderconv.quant.op  # noqa: F401  (registers the int8 ops)

    integer = values.Op(values.Opset(DOMAIN, DOMAIN_VERSION), INT_OP_TYPE, _int_schema())

    def u8(v: int):
        return op.Constant(value=onnx.helper.make_tensor("c", onnx.TensorProto.UINT8, [], [int(v)]))

    def f32(v: float):
        return op.Constant(value=onnx.helper.make_tensor("c", onnx.TensorProto.FLOAT, [], [float(v)]))

    def quantize_uint8(x, scale, zero_point, lo):
        q = op.QuantizeLinear(op.Transpose(x, perm=[0, 2, 3, 1]), f32(scale), u8(zero_point))
        return op.Max(q, u8(lo)) if lo else q

    def adder_conv2d_int8(x, weight, zero_point, stride, padding, dilation, groups, scale, shift, mode, lo):
        kernel = [int(d) for d in weight.shape[2:]]
        s = integer(op.Transpose(x, perm=[0, 3, 1, 2]), weight, u8(zero_point), kernel_shape=kernel,
                    strides=list(stride), pads=[*padding, *padding], dilations=list(dilation), group=int(groups))
        y = s
        if mode:
            y = op.Add(op.DequantizeLinear(s, scale, axis=1), op.Unsqueeze(shift, op.Constant(value_ints=[1, 2])))
            if mode == 2:
                y = op.QuantizeLinear(y, f32(1.0), u8(0))           # round half to even, clamp to [0, 255]
                y = op.Max(y, u8(lo)) if lo else y
        return op.Transpose(y, perm=[0, 2, 3, 1])

    def relu(x):
        return op.Identity(x) if x.dtype == ir.DataType.UINT8 else op.Relu(x)

    return {torch.ops.adderconv.quantize_uint8.default: quantize_uint8,
            torch.ops.adderconv.adder_conv2d_int8.default: adder_conv2d_int8,
            torch.ops.aten.relu.default: relu}


def _module_path(node) -> str | None:
    """The module that called the op, from the exporter's name-scope metadata (``['', 'layer1', ..., op]``)."""
    scopes = node.metadata_props.get("pkg.torch.onnx.name_scopes")
    try:
        names = ast.literal_eval(scopes) if scopes else []
    except (ValueError, SyntaxError):
        return None
    return names[-2] if len(names) >= 2 and names[-2] else None


def _finish(model) -> tuple[list[str], list[str], dict[str, int]]:
    """Name adder nodes after their modules, attach the functions, drop machine-specific metadata."""
    taken = {n.name for n in model.graph}
    adder_nodes, types = [], {}
    for node in model.graph:
        for key in _DROPPED_METADATA:
            node.metadata_props.pop(key, None)
        if node.domain == DOMAIN and node.op_type in (OP_TYPE, INT_OP_TYPE):
            path = _module_path(node)
            if path and path not in taken:     # a module called twice keeps the exporter's unique name
                taken.discard(node.name)
                node.name = path
                taken.add(path)
            adder_nodes.append(node.name)
            types[node.op_type] = types.get(node.op_type, 0) + 1
    attach_functions(model)
    overloads = sorted({n.overload for n in model.graph if n.domain == DOMAIN and n.op_type in (OP_TYPE, INT_OP_TYPE)})
    return adder_nodes, overloads, types


def export_onnx_model(
    model: nn.Module,
    input_shape: Sequence[int] | None = None,
    *,
    example_inputs: tuple | None = None,
    opset: int | None = None,
    dynamic_batch: bool = True,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
) -> tuple[onnx.ModelProto, OnnxExport]:
    """Export ``model`` (in eval mode) to an in-memory ``onnx.ModelProto``, checked with the full checker."""
    if opset is not None and not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise AdderconvError(f"the opset must be {MIN_OPSET}..{onnx.defs.onnx_opset_version()} (the AdderConv2d "
                             f"function needs {MIN_OPSET}; this onnx knows up to {onnx.defs.onnx_opset_version()}), "
                             f"got {opset}")
    if example_inputs is None:
        if not input_shape or len(input_shape) < 2 or min(input_shape) < 1:
            raise AdderconvError(f"export needs an input shape like (1, 3, 32, 32), got {input_shape!r}")
        shape = list(input_shape)
        if dynamic_batch and shape[0] == 1:
            shape[0] = 2          # torch.export specialises size-1 dimensions; trace with 2, export dynamic
        ref = next(iter(model.parameters()), None)
        device = ref.device if ref is not None else torch.device("cpu")
        dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
        example_inputs = (torch.randn(*shape, device=device, dtype=dtype),)
    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch")
        dynamic_shapes = tuple({0: batch} if isinstance(t, torch.Tensor) else None for t in example_inputs)
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model, example_inputs, dynamo=True, verbose=False, opset_version=opset,
                custom_translation_table=translation_table(), dynamic_shapes=dynamic_shapes,
                input_names=list(input_names) if input_names else None,
                output_names=list(output_names) if output_names else None, optimize=True)
    except Exception as e:  # the exporter raises many types; the first line says what failed
        detail = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        detail = re.sub(r"\x1b\[[0-9;]*m", "", detail)                 # the exporter colours its messages
        raise AdderconvError(f"ONNX export failed: {detail}") from e
    finally:
        model.train(was_training)
    ir_model = program.model
    adder_nodes, overloads, types = _finish(ir_model)
    import onnx_ir as ir

    proto = ir.serde.serialize_model(ir_model)
    onnx.checker.check_model(proto, full_check=True)
    used_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset is not None and used_opset != opset:   # the exporter falls back to its own opset instead of failing
        raise AdderconvError(f"the exporter could not write opset {opset} (it produced {used_opset}); "
                             f"choose an opset torch's exporter supports")
    info = OnnxExport(None, used_opset, [i.name for i in proto.graph.input], [o.name for o in proto.graph.output],
                      adder_nodes, overloads, types)
    return proto, info


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    input_shape: Sequence[int] | None = None,
    **kwargs,
) -> OnnxExport:
    """Export ``model`` to ``path`` (atomically); keyword arguments as :func:`export_onnx_model`.

    The file holds one ``ai.adderconv::AdderConv2d`` node per adder layer call and the functions defining
    them, so ``onnxruntime.InferenceSession(path)`` runs it with no plugin, at any batch size.
    """
    proto, info = export_onnx_model(model, input_shape, **kwargs)
    try:
        with atomic_write(path) as tmp:
            onnx.save(proto, str(tmp))
    except ValueError as e:   # protobuf's 2 GiB limit
        raise AdderconvError(f"cannot write {path}: {e}") from None
    info.path = Path(path)
    return info
