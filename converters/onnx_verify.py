"""Check an exported ONNX file against the PyTorch model it came from.

onnxruntime and PyTorch run the same random inputs (seeded), at batch 1 and batch 4 when the file's batch is
dynamic. The error of one output is ``max |onnx - torch| / max |torch|`` (relative to the output's scale, so
values near zero do not blow it up); the figure reported is the largest over outputs and batches.

PyTorch runs the model twice: as it is (float32) and in float64. The float64 run is the exact answer, so the
gate (``tolerance``) applies to ONNX against it; ONNX against the float32 run is reported beside it, and so
is float32 PyTorch against float64, which shows how much of the difference is PyTorch's own rounding (an
AdderNet's BatchNorm divides a large, nearly constant sum by a small spread, which amplifies rounding).

When every input gives the model the same output (an untrained adder net: an adder layer's output is <= 0,
BatchNorm with its initial statistics keeps it there and ReLU zeroes it, so a zoo name's random weights end
in all zeros), the outputs cannot tell models apart; verify then also compares every ``AdderConv2d`` node's
own output with the PyTorch layer of the same name (:class:`LayerCheck`; these still depend on the weights)
and says so in ``notes``. With nothing of the sort to compare it is an error, never a silent pass.

>>> result = verify_onnx("resnet20_adder.onnx", model)          # doctest: +SKIP
>>> result.ok, f"{result.max_rel_error:.1e}"                     # doctest: +SKIP
(True, '6.3e-06')
"""
from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from adderconv.errors import AdderconvError, first_line

__all__ = ["BatchCheck", "IntegerCheck", "LayerCheck", "VerifyResult", "verify_onnx", "relative_error", "load_seeded"]


@dataclass
class BatchCheck:
    batch: int
    rel_error: float                  # ONNX vs PyTorch float64 (the gated figure)
    rel_error_fp32: float             # ONNX vs PyTorch as it runs (its own dtype, usually float32)
    torch_fp32_error: float           # PyTorch as it runs vs float64: PyTorch's own rounding
    max_abs_error: float              # ONNX vs PyTorch float64, absolute


@dataclass
class IntegerCheck:
    """A quantised model's integer core, one batch: every ``AdderConv2dInteger`` node's int32 sums against the
    PyTorch int8 op on the same uint8 codes (must be equal: the node is exact), and those codes against
    PyTorch's own. Codes can differ where a float layer before the quantiser (a stem conv, a residual add)
    differs from PyTorch's in the last bit and the value sits on a rounding boundary: a handful in a million;
    the gate allows at most a fraction ``tolerance`` of them."""

    batch: int
    nodes: int
    sums_checked: int
    sums_different: int              # must be 0: the node's arithmetic is exact
    codes_checked: int
    codes_different: int             # must be 0: both sides quantised the same floats to the same codes
    grouped: int = 0                 # nodes of layers with several grids (one node per group): checked end to end


@dataclass
class LayerCheck:
    """The file's ``AdderConv2d`` nodes' own outputs against the PyTorch layers of the same names (float64,
    bias excluded: the export adds it after the node), one batch: what verify compares when the model's
    outputs do not depend on its input."""

    batch: int
    nodes: int                       # nodes compared (named after a layer of the model, same number of values)
    rel_error: float                 # the largest over those nodes, as BatchCheck.rel_error
    input_dependent: int             # of those, nodes whose output differs between the batch's samples


@dataclass
class VerifyResult:
    tolerance: float
    input_shape: tuple[int, ...]
    checks: list[BatchCheck] = field(default_factory=list)
    #: every sample of a batch gave the same output (e.g. an untrained net whose BatchNorm still has its
    #: initial statistics, so ReLU zeroes the adder outputs): the comparison then says little
    input_independent: bool = False
    integer: list[IntegerCheck] = field(default_factory=list)   # quantised models only
    layers: list[LayerCheck] = field(default_factory=list)      # only when input_independent
    notes: list[str] = field(default_factory=list)              # what the figures do not say by themselves

    @property
    def max_rel_error(self) -> float:
        return max(c.rel_error for c in self.checks)

    @property
    def integer_exact(self) -> bool:
        """Every integer node gave exactly PyTorch's sums on the same codes."""
        return all(c.sums_different == 0 for c in self.integer)

    @property
    def codes_agree(self) -> bool:
        return all(c.codes_different <= self.tolerance * c.codes_checked for c in self.integer)

    @property
    def ok(self) -> bool:
        return (self.max_rel_error <= self.tolerance and self.integer_exact and self.codes_agree
                and all(c.rel_error <= self.tolerance for c in self.layers))


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """``max |actual - expected| / max |expected|`` (0 when both are all zeros)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        raise AdderconvError(f"output shapes differ: ONNX {actual.shape}, PyTorch {expected.shape}")
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    diff = float(np.abs(actual - expected).max()) if expected.size else 0.0
    return diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))


def load_seeded(source: str, arch: str | None = None, trust: bool = False, seed: int = 0) -> nn.Module:
    """:func:`adderconv.loading.load_model` with the RNG seeded, so a zoo name builds the same (random) weights in
    ``adderconv export`` and ``adderconv verify``; the caller's RNG state is left as it was."""
    from adderconv.loading import load_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return load_model(source, arch=arch, trust=trust)


def _flatten(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in _flatten(item)]
    raise AdderconvError(f"cannot compare a model output of type {type(out).__name__}")


def _input_shape(session, input_shape: Sequence[int] | None) -> tuple[list[int], bool]:
    """(shape to feed, whether the batch is dynamic) from the file's input and the optional user shape."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise AdderconvError(f"verify supports models with one input; this file has {len(inputs)}")
    dims = inputs[0].shape
    dynamic_batch = not isinstance(dims[0], int)
    if input_shape is not None:
        shape = [int(d) for d in input_shape]
        if len(shape) != len(dims) or any(isinstance(d, int) and d != s for d, s in zip(dims[1:], shape[1:])):
            raise AdderconvError(f"`input_shape` {tuple(shape)} does not fit the file's input {dims}")
        return shape, dynamic_batch
    if any(not isinstance(d, int) for d in dims[1:]):
        raise AdderconvError(f"the file's input {dims} has dynamic non-batch dimensions: pass `input_shape`")
    return [1 if not isinstance(dims[0], int) else dims[0], *dims[1:]], dynamic_batch


def verify_onnx(
    onnx_path: str | os.PathLike,
    model: nn.Module,
    input_shape: Sequence[int] | None = None,
    *,
    batch_sizes: Sequence[int] | None = None,
    tolerance: float = 1e-4,
    seed: int = 0,
) -> VerifyResult:
    """Run ``onnx_path`` in onnxruntime and ``model`` in PyTorch (eval mode) on the same random inputs."""
    import onnxruntime as ort

    if not os.path.isfile(onnx_path):
        raise AdderconvError(f"{onnx_path}: no such file")
    try:
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for missing/corrupt files
        raise AdderconvError(f"{onnx_path}: onnxruntime cannot load it ({first_line(e)})") from None
    shape, dynamic = _input_shape(session, input_shape)
    if batch_sizes is None:
        batch_sizes = sorted({1, 4, shape[0]}) if dynamic else [shape[0]]
    elif not dynamic and any(b != shape[0] for b in batch_sizes):
        raise AdderconvError(f"the file's batch size is fixed at {shape[0]}, cannot run batch {list(batch_sizes)}")
    model = model.eval()
    from adderconv.quant.recipe import is_quantized

    quantised = is_quantized(model)
    # A quantised net's arithmetic is its integers (checked exactly below); it has no float64 twin.
    exact = model if quantised else copy.deepcopy(model).double()
    ref = next(iter(model.parameters()), None)
    device, dtype = (ref.device, ref.dtype) if ref is not None else (torch.device("cpu"), torch.float32)
    feed_dtype = {"tensor(double)": np.float64, "tensor(float16)": np.float16}.get(
        session.get_inputs()[0].type, np.float32)
    gen = torch.Generator().manual_seed(seed)
    result = VerifyResult(tolerance, tuple(shape))
    name = session.get_inputs()[0].name
    for batch in batch_sizes:
        x = torch.randn(batch, *shape[1:], generator=gen)
        with torch.no_grad():
            try:
                out32 = model(x.to(device, dtype))
            except Exception as e:  # the user's model on the file's input shape: a model of another architecture
                raise AdderconvError(f"the PyTorch model does not run on the file's input {tuple(x.shape)}: "
                                     f"{first_line(e)} (another architecture?)") from None
            fp32 = [t.detach().float().cpu().numpy() for t in _flatten(out32)]
            double = None if quantised else exact
            try:
                fp64 = fp32 if quantised else [t.detach().cpu().numpy() for t in _flatten(exact(x.double().to(device)))]
            except (RuntimeError, TypeError, NotImplementedError):   # an op without float64: judge by float32
                fp64, double = fp32, None
        got = session.run(None, {name: x.numpy().astype(feed_dtype)})
        if len(got) != len(fp32):
            raise AdderconvError(f"the ONNX file has {len(got)} outputs, the PyTorch model {len(fp32)}")
        result.checks.append(BatchCheck(
            batch,
            max(relative_error(g, e) for g, e in zip(got, fp64)),
            max(relative_error(g, e) for g, e in zip(got, fp32)),
            max(relative_error(a, e) for a, e in zip(fp32, fp64)),
            max(float(np.abs(np.asarray(g, np.float64) - e).max()) for g, e in zip(got, fp64))))
        if batch > 1:
            result.input_independent = all(np.ptp(e, axis=0).max() == 0 for e in fp64 if e.ndim and e.size)
            if result.input_independent and not quantised:
                ref, ref_dtype = (double, torch.float64) if double is not None else (model, dtype)
                layers = _layer_check(onnx_path, ref, x.to(device, ref_dtype), name, feed_dtype)
                if layers.nodes:
                    result.layers.append(layers)
        if quantised:
            result.integer.append(_integer_check(onnx_path, model, x.to(device, dtype), name, feed_dtype))
    if result.input_independent:
        _degenerate(result)
    return result


def _degenerate(result: VerifyResult) -> None:
    """Constant outputs match any model with those constants: say what was compared instead, or refuse."""
    why = ("every input gave the PyTorch model the same output (untrained BatchNorm statistics? an adder layer's "
           "output is <= 0 and BatchNorm's initial statistics keep it there, so ReLU zeroes it), so the outputs "
           "cannot tell models apart")
    if result.layers:
        c = max(result.layers, key=lambda c: c.rel_error)
        result.notes.append(f"{why}; compared each of the {c.nodes} AdderConv2d nodes' own output with the layer "
                            f"of the same name instead (max rel error {c.rel_error:.2e}; {c.input_dependent} of "
                            f"them vary with the input): verify against a trained or calibrated model for an "
                            f"end-to-end check")
    elif any(c.nodes for c in result.integer):
        result.notes.append(f"{why}; the integer adder nodes' sums and codes were compared (above): verify against "
                            f"a trained or calibrated model for an end-to-end check")
    elif result.ok:
        raise AdderconvError(f"{why}, and the file has no AdderConv2d node named after a layer of the model to "
                             f"compare instead: verify against a trained or calibrated model")


def _layer_check(onnx_path, model: nn.Module, x: torch.Tensor, name: str, feed_dtype) -> LayerCheck:
    """Expose each AdderConv2d node named after a layer of ``model`` as an output and compare it with that
    layer's first call (the export names the first call's node after the layer), bias taken off."""
    import onnx
    import onnxruntime as ort

    from .onnx_function import DOMAIN, OP_TYPE

    proto = onnx.load(str(onnx_path))
    layers = dict(model.named_modules())
    nodes = [n for n in proto.graph.node if n.domain == DOMAIN and n.op_type == OP_TYPE and n.name in layers]
    check = LayerCheck(int(x.shape[0]), 0, 0.0, 0)
    if not nodes:
        return check
    known = {o.name for o in proto.graph.output}
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(feed_dtype))      # the node computes in its input's type
    proto.graph.output.extend(onnx.helper.make_tensor_value_info(n.output[0], elem, None)
                              for n in nodes if n.output[0] not in known)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run([n.output[0] for n in nodes], {name: x.float().cpu().numpy().astype(feed_dtype)})
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module, args, out) -> None:
            seen.setdefault(name, out)
        return hook

    _run_hooked(model, x, [layers[n.name].register_forward_hook(keep(n.name)) for n in nodes])
    for n, g in zip(nodes, got):
        out, bias = seen.get(n.name), getattr(layers[n.name], "bias", None)
        if not isinstance(out, torch.Tensor) or out.numel() != g.size:
            continue                     # a layer whose output is not its node's (a view around it): not compared
        if isinstance(bias, torch.Tensor) and out.dim() >= 2 and bias.numel() == out.shape[1]:
            out = out - bias.reshape(1, -1, *[1] * (out.dim() - 2))
        expected = out.detach().cpu().double().numpy().reshape(g.shape)
        check.nodes += 1
        check.rel_error = max(check.rel_error, relative_error(g, expected))
        check.input_dependent += bool(expected.shape[0] > 1 and np.ptp(expected, axis=0).max() > 0)
    return check


def _run_hooked(model: nn.Module, x: torch.Tensor, hooks: list) -> None:
    """One forward pass of ``model`` on ``x`` with ``hooks`` recording what they watch; the hooks go after it."""
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()


def _integer_check(onnx_path, model: nn.Module, x: torch.Tensor, name: str, feed_dtype) -> IntegerCheck:
    """Expose each AdderConv2dInteger node's codes and sums as outputs, run both sides, compare exactly."""
    import onnx
    import onnxruntime as ort

    from adderconv.quant import QuantAdderConv2d, adder_conv2d_int8

    from .onnx_function import DOMAIN, INT_OP_TYPE

    proto = onnx.load(str(onnx_path))
    layers = dict(model.named_modules())
    every = [n for n in proto.graph.node if n.domain == DOMAIN and n.op_type == INT_OP_TYPE]
    grouped = any(isinstance(m, QuantAdderConv2d) and m.grid_groups > 1 for m in layers.values())
    # A layer with several grids runs one node per group on its own codes; the exact check below pairs one node
    # with one layer, so those nodes are left to the end-to-end comparison (and counted as such).
    nodes = [n for n in every if not grouped or (isinstance(layers.get(n.name), QuantAdderConv2d)
                                                 and layers[n.name].grid_groups == 1)]
    extra = []
    for n in nodes:
        extra += [onnx.helper.make_tensor_value_info(n.input[0], onnx.TensorProto.UINT8, None),
                  onnx.helper.make_tensor_value_info(n.output[0], onnx.TensorProto.INT32, None)]
    proto.graph.output.extend(extra)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run([v.name for v in extra], {name: x.cpu().numpy().astype(feed_dtype)})
    seen: dict[str, torch.Tensor] = {}
    _run_hooked(model, x, [m.register_forward_pre_hook(lambda m, args, k=k: seen.__setitem__(
        k, m.quantize_input(args[0]) if args[0].dim() == 4 or args[0].dtype == torch.uint8 else
        m.quantize_input(args[0][:, :, None, None]))) for k, m in layers.items() if isinstance(m, QuantAdderConv2d)])
    check = IntegerCheck(int(x.shape[0]), len(nodes), 0, 0, 0, 0, grouped=len(every) - len(nodes))
    for i, n in enumerate(nodes):
        layer = layers.get(n.name)
        if not isinstance(layer, QuantAdderConv2d):
            raise AdderconvError(f"the ONNX node {n.name!r} has no quantised layer of that name in the PyTorch model")
        codes_onnx = torch.from_numpy(got[2 * i]).permute(0, 2, 3, 1).contiguous()       # NCHW -> channels-last
        sums_onnx = torch.from_numpy(got[2 * i + 1])
        ref = adder_conv2d_int8(codes_onnx, layer.weight, layer.zero_point, layer.stride, layer.padding,
                                layer.dilation, layer.groups).permute(0, 3, 1, 2)
        mine = seen[n.name].reshape(codes_onnx.shape)
        check.sums_checked += ref.numel()
        check.sums_different += int((ref != sums_onnx).sum())
        check.codes_checked += mine.numel()
        check.codes_different += int((mine != codes_onnx).sum())
    return check
