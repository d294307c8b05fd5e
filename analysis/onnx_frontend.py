"""The ONNX front end: count an ONNX graph with shape inference, our ``ai.adderconv::AdderConv2d`` included.

ONNX's shape inference does not know our domain, so the adder node's output shape is computed here from
its Conv-style attributes and fed back until every shape is known. Per-element conventions reuse the
PyTorch handles (one definition each); structured ops (Conv, Gemm, MatMul, norms, pools, Resize) have
their own readers because their attributes differ from ATen's arguments. Layers are named by the path of
the PyTorch module that did the work, as the PyTorch front end names them, so the two reports line up layer
for layer (see :func:`_layer_name`; a Conv into which the exporter folded a BatchNorm is the conv's, and the
folded BatchNorm is listed in ``ignored``, see :func:`norm_convention`).

>>> import onnx
>>> from onnx import helper, TensorProto as T
>>> node = helper.make_node("AdderConv2d", ["x", "w"], ["y"], domain="ai.adderconv", kernel_shape=[3, 3],
...                         strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=1)
>>> g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", T.FLOAT, [1, 4, 8, 8]),
...                       helper.make_tensor_value_info("w", T.FLOAT, [8, 4, 3, 3])],
...                       [helper.make_tensor_value_info("y", T.FLOAT, None)])
>>> t = count_onnx(helper.make_model(g)).total  # (1*8*8*8) x (4*3*3) MACs: |x - w| (add), then acc
>>> t["add"], t["acc"]
(18432, 18432)
"""
from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import onnx
from onnx import helper, shape_inference

from adderconv.errors import AdderconvError
from adderconv.untrusted import plain

from .counts import LayerCounts, ModelCounts, OpCount, Tally
from .handles import HANDLES, conv_macs, norm_tally
from .registry import resolve

__all__ = ["count_onnx", "check_onnx_model", "norm_convention", "folded_norm", "ADDER_DOMAIN", "ADDER_OP"]

ADDER_DOMAIN, ADDER_OP = "ai.adderconv", "AdderConv2d"
Shape = tuple[int, ...]
OnnxHandle = Callable[[Any, list, list], Tally]    # (node, input shapes, output shapes) -> Tally

_ONNX: dict[str, tuple[str, OnnxHandle]] = {}
_SAME_AS_ATEN = {  # elementwise ops whose count depends only on the output shape: reuse the ATen handle
    "Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Relu": "relu", "Clip": "clamp",
    "LeakyRelu": "leaky_relu", "PRelu": "prelu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Gelu": "gelu",
    "Elu": "elu", "Selu": "selu", "Celu": "celu", "Mish": "mish", "HardSigmoid": "hardsigmoid",
    "HardSwish": "hardswish", "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Reciprocal": "reciprocal",
    "Softmax": "softmax", "LogSoftmax": "log_softmax", "Equal": "eq", "Less": "lt", "Greater": "gt",
    "LessOrEqual": "le", "GreaterOrEqual": "ge",
}
_IGNORED = {
    "Identity", "Constant", "ConstantOfShape", "Shape", "Size", "Reshape", "Flatten", "Squeeze", "Unsqueeze",
    "Transpose", "Concat", "Split", "Slice", "Gather", "GatherElements", "Expand", "Cast", "CastLike", "Pad",
    "Tile", "Dropout", "Range", "Abs", "Neg", "DepthToSpace", "SpaceToDepth", "ScatterND", "Where", "Not",
    "And", "Or",
}


def _reg(op: str, category: str):
    def wrap(fn: OnnxHandle) -> OnnxHandle:
        if op in _ONNX:
            raise ValueError(f"ONNX op {op!r} already has a handle")
        _ONNX[op] = (category, fn)
        return fn
    return wrap


def _attr(node, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


@_reg("Conv", "conv")
def _conv(node, i, o):
    macs = conv_macs(i[0], i[1], o[0], False)
    return Tally(mul=macs, acc=macs + (math.prod(o[0]) if len(i) > 2 and i[2] is not None else 0))


@_reg("ConvTranspose", "conv")
def _conv_t(node, i, o):
    macs = conv_macs(i[0], i[1], o[0], True)
    return Tally(mul=macs, acc=macs + (math.prod(o[0]) if len(i) > 2 and i[2] is not None else 0))


@_reg(ADDER_OP, "adder")
def _adder(node, i, o):
    macs = conv_macs(i[0], i[1], o[0], False)
    return Tally(add=macs, acc=macs + (math.prod(o[0]) if len(i) > 2 and i[2] is not None else 0))


@_reg("Gemm", "linear")
def _gemm(node, i, o):
    k = i[0][0] if _attr(node, "transA", 0) else i[0][1]
    macs = math.prod(o[0]) * k
    return Tally(mul=macs, acc=macs + (math.prod(o[0]) if len(i) > 2 and i[2] is not None else 0))


@_reg("MatMul", "matmul")
def _matmul(node, i, o):
    macs = math.prod(o[0]) * i[0][-1]
    return Tally(mul=macs, acc=macs)


@_reg("BatchNormalization", "norm")
def _bn(node, i, o):
    n = math.prod(i[0])
    return Tally(mul=n, add=n)        # eval: one affine per element, as the PyTorch handle


@_reg("LayerNormalization", "norm")
def _ln(node, i, o):
    axis = _attr(node, "axis", -1) % len(i[0])
    return norm_tally(math.prod(i[0]), math.prod(i[0][:axis]), len(i) > 1 and i[1] is not None)


@_reg("GroupNormalization", "norm")
def _gn(node, i, o):
    return norm_tally(math.prod(i[0]), i[0][0] * int(_attr(node, "num_groups")), True)


@_reg("InstanceNormalization", "norm")
def _in(node, i, o):
    return norm_tally(math.prod(i[0]), i[0][0] * i[0][1], True)


_MAX_COUNT = 2**63 - 1   # a count beyond int64 is no real model, and would overflow every float that prices it
# Geometry attributes of Conv-like and pooling nodes: (smallest value, needed). A node whose attribute breaks
# this cannot be counted (a stride 0 divides by zero); a pool without kernel_shape is malformed.
_GEOMETRY = {"kernel_shape": 1, "strides": 1, "dilations": 1, "pads": 0}
_GEOMETRY_OPS = {"Conv": (), "ConvTranspose": (), ADDER_OP: (), "MaxPool": ("kernel_shape",),
                 "AveragePool": ("kernel_shape",), "LpPool": ("kernel_shape",)}


def _check_geometry(node, key: str) -> None:
    """A Conv-like or pooling node's geometry attributes are ints in range (and the required ones present)."""
    for name in _GEOMETRY_OPS[key]:
        if _attr(node, name) is None:
            raise AdderconvError(f"ONNX node {plain(node.name)!r} ({key}) has no {name} attribute")
    for name, low in [*_GEOMETRY.items(), ("group", 1)]:
        value = _attr(node, name)
        if value is None:
            continue
        values = [value] if name == "group" else value
        if not isinstance(values, list) or not all(isinstance(v, int) and v >= low for v in values):
            raise AdderconvError(f"ONNX node {plain(node.name)!r} ({key}): attribute {name} must be "
                                 f"{'an int' if name == 'group' else 'ints'} >= {low}, got {plain(value)[:80]}")


@_reg("MaxPool", "pool")
def _maxpool(node, i, o):
    return Tally(cmp=math.prod(o[0]) * (math.prod(_attr(node, "kernel_shape")) - 1))


@_reg("AveragePool", "pool")
def _avgpool(node, i, o):
    n = math.prod(o[0])
    return Tally(add=n * (math.prod(_attr(node, "kernel_shape")) - 1), mul=n)


def _reduce_mean(node, i, o):
    n_in, n_out = math.prod(i[0]), math.prod(o[0])
    return Tally(add=n_in - n_out, mul=n_out)


_reg("GlobalAveragePool", "pool")(_reduce_mean)
_reg("ReduceMean", "pool")(_reduce_mean)
_reg("ReduceSum", "reduce")(lambda node, i, o: Tally(add=math.prod(i[0]) - math.prod(o[0])))
_reg("GlobalMaxPool", "pool")(lambda node, i, o: Tally(cmp=math.prod(i[0]) - math.prod(o[0])))
_reg("ReduceMax", "reduce")(lambda node, i, o: Tally(cmp=math.prod(i[0]) - math.prod(o[0])))


@_reg("Resize", "upsample")
def _resize(node, i, o):
    mode = _attr(node, "mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    spatial = sum(1 for a, b in zip(i[0], o[0]) if a != b) or 2
    if spatial > 3:
        raise AdderconvError(f"ONNX node {plain(node.name)!r}: Resize over {spatial} dimensions (of {len(i[0])}) "
                             f"is not supported; 1 to 3 spatial dimensions are")
    name = {"nearest": "nearest", "cubic": "bicubic"}.get(mode, {1: "linear", 2: "bilinear", 3: "trilinear"}[spatial])
    d = spatial if name != "bicubic" else 2
    return HANDLES[resolve(f"aten::upsample_{name}{d}d")].fn([o[0]])


def _aten_like(op: str) -> tuple[str, OnnxHandle]:
    """The ATen handle of a per-element op (it reads only its output's shape)."""
    h = HANDLES[resolve(f"aten::{op}")]
    if set(h.reads) - h.defaults:
        raise ValueError(f"aten::{op} reads {h.reads}: not a per-element handle")
    return h.category, lambda node, i, o: h.fn(o)


for _o, _a in _SAME_AS_ATEN.items():
    _cat, _fn = _aten_like(_a)
    _reg(_o, _cat)(_fn)


@_reg("Max", "reduce")
@_reg("Min", "reduce")
def _max_min(node, i, o):   # elementwise over N inputs: N - 1 comparisons per output element
    return Tally(cmp=math.prod(o[0]) * max(0, len(i) - 1))


def _dims(vi) -> Shape | None:
    t = vi.type.tensor_type
    if not t.HasField("shape") or any(not d.HasField("dim_value") for d in t.shape.dim):
        return None
    dims = tuple(int(d.dim_value) for d in t.shape.dim)
    if any(d < 0 for d in dims):
        raise AdderconvError(f"ONNX value {vi.name!r} has a negative dimension {list(dims)}")
    return dims


def check_onnx_model(model: onnx.ModelProto, where: str) -> None:
    """An empty file parses as an empty model: a model without a graph, nodes or inputs, or with a negative
    dimension, is an error (every ONNX reader of the product checks this first)."""
    if not model.HasField("graph"):
        raise AdderconvError(f"{where}: not an ONNX model (no graph; an empty or truncated file?)")
    g = model.graph
    if not g.node:
        raise AdderconvError(f"{where}: the ONNX graph has no nodes")
    init = {t.name for t in g.initializer}
    if not [i for i in g.input if i.name not in init]:
        raise AdderconvError(f"{where}: the ONNX graph has no inputs")
    for vi in [*g.input, *g.output, *g.value_info]:
        dims = vi.type.tensor_type.shape.dim
        if any(d.HasField("dim_value") and d.dim_value < 0 for d in dims):
            raise AdderconvError(f"{where}: ONNX value {vi.name!r} has a negative dimension "
                                 f"{[d.dim_value if d.HasField('dim_value') else d.dim_param for d in dims]}")
    for t in g.initializer:
        if any(d < 0 for d in t.dims):
            raise AdderconvError(f"{where}: ONNX initializer {t.name!r} has a negative dimension {list(t.dims)}")


def _adder_out(x: Shape, w: Shape, node) -> Shape:
    k = _attr(node, "kernel_shape") or list(w[2:])
    s, d = _attr(node, "strides") or [1, 1], _attr(node, "dilations") or [1, 1]
    p = _attr(node, "pads") or [0, 0, 0, 0]
    hw = [(x[2 + a] + p[a] + p[a + 2] - d[a] * (k[a] - 1) - 1) // s[a] + 1 for a in range(2)]
    if min(hw) < 1:
        raise AdderconvError(f"ONNX node {node.name!r}: input {x} is smaller than its kernel {tuple(k)}")
    return (x[0], w[0], *hw)


def _set_inputs(model: onnx.ModelProto, input_shape: Sequence[int] | None) -> None:
    inits = {t.name for t in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in inits]
    for n, vi in enumerate(inputs):
        dims = vi.type.tensor_type.shape.dim
        if input_shape is not None and n == 0:
            if len(dims) != len(input_shape):
                raise AdderconvError(f"--input-shape {tuple(input_shape)} has {len(input_shape)} dims; the ONNX "
                                     f"input {vi.name!r} has {len(dims)}")
            for dim, v in zip(dims, input_shape):
                if dim.HasField("dim_value") and dim.dim_value != v:
                    raise AdderconvError(f"--input-shape {tuple(input_shape)} does not fit the ONNX input "
                                         f"{vi.name!r}, whose dims are fixed to {_dims(vi)}")
                dim.dim_value = int(v)
        for a, dim in enumerate(dims):
            if not dim.HasField("dim_value"):
                if a != 0:
                    raise AdderconvError(f"ONNX input {vi.name!r} has a symbolic dim {dim.dim_param!r} at "
                                         f"position {a}; pass --input-shape")
                dim.dim_value = 1           # a dynamic batch counts as batch 1


_INFERENCE_PASSES = 4      # each pass is one ONNX shape inference over the whole graph: a constant, never per node


def _infer(model: onnx.ModelProto) -> dict[str, Shape]:
    """Shapes of every value in a constant number of ONNX shape-inference passes (linear in the graph's size).

    ONNX does not know our adder node, so each pass infers a copy of the graph in which every adder node is an
    ONNX ``Conv`` with the same attributes: the same output shape (N, W[0], spatial per Conv's formula) in one
    pass, however long a chain of adders is. An adder whose shape that leaves open (Conv's inference refused it)
    gets ours and a further pass; what is still unknown after the last pass is reported as such when counted.
    """
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for node in probe.graph.node:
        if node.domain == ADDER_DOMAIN and node.op_type == ADDER_OP:
            node.domain, node.op_type = "", "Conv"
            keep = [a for a in node.attribute if a.name in (*_GEOMETRY, "group")]
            del node.attribute[:]
            node.attribute.extend(keep)
    shapes: dict[str, Shape] = {}
    for _ in range(_INFERENCE_PASSES):
        shapes = _infer_once(probe)
        added = False
        for node, orig in zip(probe.graph.node, model.graph.node):
            if orig.domain == ADDER_DOMAIN and orig.op_type == ADDER_OP and node.output[0] not in shapes:
                x, w = shapes.get(node.input[0]), shapes.get(node.input[1])
                if x is not None and w is not None and len(x) == 4 and len(w) == 4:
                    probe.graph.value_info.append(helper.make_tensor_value_info(
                        node.output[0], onnx.TensorProto.FLOAT, _adder_out(x, w, node)))
                    added = True
        if not added:
            break
    return shapes


def _infer_once(model: onnx.ModelProto) -> dict[str, Shape]:
    """One ONNX shape inference: the shape of every value it knows."""
    try:
        inferred = shape_inference.infer_shapes(model, data_prop=True)
    except shape_inference.InferenceError as e:
        raise AdderconvError(f"ONNX shape inference failed: {plain(str(e).splitlines()[0])}") from None
    g = inferred.graph
    shapes = {t.name: tuple(t.dims) for t in g.initializer}
    for vi in [*g.input, *g.value_info, *g.output]:
        if (s := _dims(vi)) is not None:
            shapes[vi.name] = s
    return shapes


_WEIGHTED = {"Conv", "ConvTranspose", "Gemm", "MatMul", ADDER_OP}   # ops whose input 1 is a module's weight


def _scope(node) -> tuple[str | None, str]:
    """(module path, module class) from the dynamo exporter's metadata; (None, "") when the node has none."""
    meta = {p.key: p.value for p in node.metadata_props}
    if "pkg.torch.onnx.name_scopes" in meta:
        scopes = _literal_list(node, meta, "pkg.torch.onnx.name_scopes")
        classes = _literal_list(node, meta, "pkg.torch.onnx.class_hierarchy", required=False)
        return (scopes[-2] if len(scopes) >= 2 else ""), (classes[-2] if len(classes) >= 2 else "")
    if "namespace" in meta:                 # 'name: type/...', one part per module, the op last
        parts = meta["namespace"].split("/")
        if len(parts) < 2:
            return "", ""
        name, _, cls = parts[-2].partition(":")
        return name.strip(), cls.strip()
    return None, ""


def _literal_list(node, meta: dict[str, str], key: str, *, required: bool = True) -> list[str]:
    if key not in meta:
        return []
    try:
        value = ast.literal_eval(meta[key])
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        value = None
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) for p in value):
        if not required:
            return []
        raise AdderconvError(f"ONNX node {plain(node.name)!r}: its {key} metadata must be a list of module names, "
                             f"got {plain(meta[key])[:80]!r}")
    return list(value)


def folded_norm(node) -> bool:
    """Whether the exporter folded a BatchNorm into this Conv/Gemm node (its rewriter records the rule; the
    node then carries the BatchNorm's module scope, not the conv's)."""
    rules = next((p.value for p in node.metadata_props if p.key == "pkg.onnxscript.rewriter.rule_name"), "")
    return node.op_type in _WEIGHTED and ("FuseBatchNorm" in rules or "batchnorm" in _scope(node)[1].lower())


def _weight_owner(node, inits: Collection[str]) -> str | None:
    """``layer1.0.conv1`` for a node whose weight is the initializer ``layer1.0.conv1.weight``."""
    if node.op_type not in _WEIGHTED or len(node.input) < 2 or node.input[1] not in inits:
        return None
    owner, dot, leaf = node.input[1].rpartition(".")
    return owner if dot and owner and leaf == "weight" else None


def _layer_name(node, inits: Collection[str] = (), seen: dict[str, set[str]] | None = None) -> str:
    """The module path of the PyTorch module that did the node's work, as the PyTorch front end names it.

    From the dynamo exporter's scope metadata; a Conv/Gemm into which the exporter folded a BatchNorm carries
    the BatchNorm's scope, so it is named after its weight's owner (``conv1.weight`` -> ``conv1``), which is
    also the name of last resort for a weighted node without metadata. The TorchScript exporter's node names
    hold the scopes; it names a module's second call ``relu_1``: with ``seen`` (path -> op types so far, in
    graph order) a ``name_N`` whose ``name`` ran the same op type before is ``name``.
    """
    path, _ = _scope(node)
    owner = _weight_owner(node, inits)
    if owner is not None and (folded_norm(node) or (path is None and not node.name.startswith("/"))):
        return owner
    if path is not None:
        return path
    if not node.name.startswith("/"):       # TorchScript exporter: /layer1/layer1.0/conv1/Conv
        return node.name or node.op_type
    path = _scoped_path([p for p in node.name.split("/")[1:-1] if p])
    if seen is not None:
        base = re.sub(r"_\d+$", "", path)
        if base != path and node.op_type in seen.get(base, ()):
            path = base                     # a repeated call of module `base`, as PyTorch counts it
        seen.setdefault(path, set()).add(node.op_type)
    return path


def _scoped_path(parts: list[str]) -> str:
    """TorchScript-exporter scopes to a module path:
    layer1/layer1.0/downsample/downsample.0 -> layer1.0.downsample.0."""
    path = ""
    for comp in parts:
        head, _, tail = comp.partition(".")
        if path and comp.startswith(path + "."):
            path = comp                         # the scope already holds the full path
        elif path and tail and path.split(".")[-1] == head:
            path = f"{path}.{tail}"             # a child of a container, named relative to it
        else:
            path = f"{path}.{comp}" if path else comp
    return path


def _count(fn: OnnxHandle, node, key: str, ins: list, outs: list) -> Tally:
    """One node's tally; what a malformed node makes a handle raise, and counts beyond int64, are one line."""
    try:
        tally = fn(node, ins, outs)
    except AdderconvError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError, OverflowError) as e:
        raise AdderconvError(f"ONNX node {plain(node.name)!r} ({plain(key)}) cannot be counted: its attributes "
                             f"or shapes are malformed ({type(e).__name__}: {plain(e)[:120]})") from e
    if big := {k: v for k, v in tally.items() if v > _MAX_COUNT}:
        raise AdderconvError(f"ONNX node {plain(node.name)!r} ({plain(key)}): {', '.join(big)} count above "
                             f"2^63 - 1 ({len(str(max(big.values())))} digits): not a model anything runs")
    return tally


_FOLDED = "BatchNormalization (folded into"


def norm_convention(counts: ModelCounts) -> str:
    """What an ONNX count did with BatchNorm, in words: counted where BatchNormalization nodes remain, nothing
    where the exporter folded them into the convolutions (the PyTorch front end counts every BatchNorm).

    >>> folded = ModelCounts(layers=[], ignored={"BatchNormalization (folded into Conv by the exporter)": 2})
    >>> norm_convention(folded).split(":")[1]
    ' the exporter folded 2 BatchNorms into the Conv before them (their scale and shift are in its weights and bias)'
    """
    folded = sum(n for op, n in counts.ignored.items() if op.startswith(_FOLDED))
    kept = sum(1 for layer in counts.layers for o in layer.ops if o.op == "BatchNormalization")
    into = ", ".join(sorted({op[len(_FOLDED):].split(" by ")[0].strip() for op in counts.ignored
                             if op.startswith(_FOLDED)}))
    if kept:
        text = f"BatchNorm: the graph's {kept} BatchNormalization nodes are counted, 1 mul + 1 add per element"
        return text + (f"; the exporter folded {folded} more into the {into} before them (not counted here, "
                       f"counted by a PyTorch count of the model)" if folded else " (not assumed folded)")
    if folded:
        return (f"BatchNorm: the exporter folded {folded} BatchNorm{'s' if folded > 1 else ''} into the {into} "
                f"before them (their scale and shift are in its weights and bias): not counted here, where a "
                f"PyTorch count of the model counts 1 mul + 1 add per element")
    return ("BatchNorm: the graph has no BatchNormalization node; a BatchNorm the exporter folded into a "
            "convolution (torch.onnx does in eval mode) costs nothing here")


#: Inputs that hold state or quantisation constants, not parameters (PyTorch keeps them as buffers or literals):
#: BatchNorm's running statistics, Clip's bounds, Resize's roi and scales, a pad value, QDQ scales and zero points.
_NOT_PARAMETERS = {"BatchNormalization": (3, 4), "Clip": (1, 2), "Resize": (1, 2), "Upsample": (1,), "Pad": (2,),
                   "QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2)}
_FLOATS = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                     onnx.TensorProto.DOUBLE})


def _parameters(model: onnx.ModelProto, init_names: Collection[str], names: Sequence[str]) -> dict[str, int]:
    """Layer name -> elements of the parameters its nodes read (``names``: each node's layer name, in graph order).

    A file does not mark parameters: they are taken as the floating-point initializers the nodes read, except the
    inputs of :data:`_NOT_PARAMETERS` and integer constants (shapes, axes). Each layer counts an initializer it reads
    once; two layers reading one initializer count it twice, because an exporter's optimizer merges initializers of
    equal values (a freshly initialised BatchNorm's ones and zeros, in every layer), which shared parameters of the
    model cannot be told apart from. A BatchNorm the exporter folded into a convolution leaves the conv's bias
    (one per channel) where the model had the BatchNorm's scale and shift (two per channel).
    """
    floats = {t.name: math.prod(t.dims) for t in model.graph.initializer if t.data_type in _FLOATS}
    seen: set[tuple[str, str]] = set()
    out: dict[str, int] = {}
    for node, name in zip(model.graph.node, names):
        skip = _NOT_PARAMETERS.get(node.op_type, ()) if node.domain in ("", "ai.onnx") else ()
        for i, v in enumerate(node.input):
            if v in floats and i not in skip and (name, v) not in seen:
                seen.add((name, v))
                out[name] = out.get(name, 0) + floats[v]
    return {k: v for k, v in out.items() if v}


def count_onnx(model: str | Path | onnx.ModelProto, input_shape: Sequence[int] | None = None) -> ModelCounts:
    """Count every node of an ONNX model's main graph, per layer and per op type; parameters per layer as
    :func:`_parameters` reads them."""
    where = str(model) if not isinstance(model, onnx.ModelProto) else "the ONNX model"
    if not isinstance(model, onnx.ModelProto):
        from google.protobuf.message import DecodeError

        try:
            model = onnx.load(str(model), load_external_data=False)   # weights' values are not needed
        except (OSError, ValueError, DecodeError) as e:
            first = str(e).splitlines()[0] if str(e) else e
            raise AdderconvError(f"{model}: not a readable ONNX file ({first})") from None
    else:
        model = onnx.ModelProto.FromString(model.SerializeToString())   # never mutate the caller's model
    check_onnx_model(model, where)
    if not any(o.domain == ADDER_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(ADDER_DOMAIN, 1))   # lets shape inference pass our node
    _set_inputs(model, input_shape)
    for node in model.graph.node:        # before shape inference, which would divide by an adder's stride 0
        key = node.op_type if node.domain in ("", "ai.onnx", ADDER_DOMAIN) else ""
        if key in _GEOMETRY_OPS and (node.domain == ADDER_DOMAIN) == (key == ADDER_OP):
            _check_geometry(node, key)
    shapes = _infer(model)
    layers: dict[str, LayerCounts] = {}
    ignored: dict[str, int] = {}
    init_names = {t.name for t in model.graph.initializer}
    seen: dict[str, set[str]] = {}
    names: list[str] = []                  # each node's layer name (an ignored node's too: it may read parameters)
    for node in model.graph.node:
        op = plain(node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}")
        key = node.op_type if node.domain in ("", "ai.onnx", ADDER_DOMAIN) else op
        if key in _IGNORED and node.domain in ("", "ai.onnx"):
            ignored[op] = ignored.get(op, 0) + 1
            names.append(plain(_layer_name(node, init_names)))
            continue
        name = plain(_layer_name(node, init_names, seen))   # names from a file are data: one printable line
        names.append(name)
        if folded_norm(node):          # a BatchNorm the exporter removed: said, not silently absent
            folded = f"{_FOLDED} {plain(node.op_type)} by the exporter)"
            ignored[folded] = ignored.get(folded, 0) + 1
        layer = layers.setdefault(name, LayerCounts(name=name, type=plain(node.op_type)))
        if key not in _ONNX or (node.domain == ADDER_DOMAIN) != (key == ADDER_OP):
            layer.unsupported[op] = layer.unsupported.get(op, 0) + 1
            continue
        category, fn = _ONNX[key]
        ins = [shapes.get(v) if v else None for v in node.input]
        outs = [shapes.get(v) for v in node.output]
        if outs[0] is None or (ins and ins[0] is None):
            key = f"{op} (shape unknown)"
            layer.unsupported[key] = layer.unsupported.get(key, 0) + 1
            continue
        if category in ("conv", "adder", "norm") and layer.type != node.op_type and not layer.ops:
            layer.type = node.op_type
        layer.ops.append(OpCount(op, category, _count(fn, node, key, ins, outs)))
        layer.weights += sum(math.prod(shapes[v]) for v in node.input[1:] if v in init_names)
        layer.act_in += sum(math.prod(s) for v, s in zip(node.input, ins) if s and v not in init_names)
        layer.act_out += sum(math.prod(s) for s in outs if s)
    return ModelCounts(layers=list(layers.values()), ignored=dict(sorted(ignored.items())), frontend="onnx",
                       parameters=_parameters(model, init_names, names))
