"""Check an exported ONNX file against the PyTorch model it came from.

onnxruntime and PyTorch run the same random inputs (seeded), at batch 1 and batch 4 when the file's batch is
dynamic. The error of one output is ``max |onnx - torch| / max |torch|`` (relative to the output's scale, so
values near zero do not blow it up); the figure reported is the largest over outputs and batches.

PyTorch runs the model twice: as it is (float32) and in float64. The float64 run is the exact answer, so the
gate (``tolerance``) applies to ONNX against it; ONNX against the float32 run is reported beside it, and so
is float32 PyTorch against float64, which shows how much of the difference is PyTorch's own rounding (an
AdderNet's BatchNorm divides a large, nearly constant sum by a small spread, which amplifies rounding).

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

from adderconv.errors import AdderconvError

__all__ = ["BatchCheck", "VerifyResult", "verify_onnx", "relative_error", "load_seeded"]


@dataclass
class BatchCheck:
    batch: int
    rel_error: float                  # ONNX vs PyTorch float64 (the gated figure)
    rel_error_fp32: float             # ONNX vs PyTorch as it runs (its own dtype, usually float32)
    torch_fp32_error: float           # PyTorch as it runs vs float64: PyTorch's own rounding
    max_abs_error: float              # ONNX vs PyTorch float64, absolute


@dataclass
class VerifyResult:
    tolerance: float
    input_shape: tuple[int, ...]
    checks: list[BatchCheck] = field(default_factory=list)
    #: every sample of a batch gave the same output (e.g. an untrained net whose BatchNorm still has its
    #: initial statistics, so ReLU zeroes the adder outputs): the comparison then says little
    input_independent: bool = False

    @property
    def max_rel_error(self) -> float:
        return max(c.rel_error for c in self.checks)

    @property
    def ok(self) -> bool:
        return self.max_rel_error <= self.tolerance


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """``max |actual - expected| / max |expected|`` (0 when both are all zeros)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        raise AdderconvError(f"output shapes differ: ONNX {actual.shape}, PyTorch {expected.shape}")
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    diff = float(np.abs(actual - expected).max()) if expected.size else 0.0
    return diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))


def load_seeded(source: str, arch: str | None = None, trust: bool = False, seed: int = 0) -> nn.Module:
    """:func:`adderconv.io.load_model` with the RNG seeded, so a zoo name builds the same (random) weights in
    ``adderconv export`` and ``adderconv verify``; the caller's RNG state is left as it was."""
    from adderconv.io import load_model

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
            raise AdderconvError(f"--input-shape {tuple(shape)} does not fit the file's input {dims}")
        return shape, dynamic_batch
    if any(not isinstance(d, int) for d in dims[1:]):
        raise AdderconvError(f"the file's input {dims} has dynamic non-batch dimensions: pass --input-shape")
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
        raise AdderconvError(f"{onnx_path}: onnxruntime cannot load it ({str(e).splitlines()[0]})") from None
    shape, dynamic = _input_shape(session, input_shape)
    if batch_sizes is None:
        batch_sizes = sorted({1, 4, shape[0]}) if dynamic else [shape[0]]
    elif not dynamic and any(b != shape[0] for b in batch_sizes):
        raise AdderconvError(f"the file's batch size is fixed at {shape[0]}, cannot run batch {list(batch_sizes)}")
    model = model.eval()
    exact = copy.deepcopy(model).double()
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
                                     f"{str(e).splitlines()[0] if str(e) else type(e).__name__} (another "
                                     f"architecture?)") from None
            fp32 = [t.detach().float().cpu().numpy() for t in _flatten(out32)]
            try:
                fp64 = [t.detach().cpu().numpy() for t in _flatten(exact(x.double().to(device)))]
            except (RuntimeError, TypeError, NotImplementedError):   # an op without float64: judge by float32
                fp64 = fp32
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
    if result.input_independent and result.ok:   # constant outputs match any model with those constants
        raise AdderconvError("every input gave the PyTorch model the same output (untrained BatchNorm "
                             "statistics?), so the comparison cannot tell models apart: verify against a trained "
                             "or calibrated model")
    return result
