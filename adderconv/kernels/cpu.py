"""Fast CPU adder kernels: a C++ extension built on this machine at first use, plus oneDNN for dW.

- forward and the clipped input gradient: direct tiled loops in ``cpu_kernels.cpp`` (no im2col; each task
  copies a padded band of input rows, in which every receptive-field element is contiguous over output
  positions, for every stride and dilation), compiled with ``-O3 -march=native`` by
  :func:`torch.utils.cpp_extension.load` the first time a CPU tensor reaches the op. The build is cached per
  (source, torch version, CPU model and flags), so a shared cache never serves code built for another CPU.
  A one-line notice on stderr shows the compile time; if there is no compiler, a warning says so and the op
  falls back to :mod:`adderconv.kernels.portable`.
- weight gradient: ``sum_p g (X - W) = conv_weight_grad(g, X) - W * sum_p g`` (DESIGN.md), so it is
  oneDNN's convolution weight gradient plus a rank-1 term: no im2col, and zero padding needs no special case
  (a padded zero contributes ``g * (0 - W)``, which the rank-1 term already counts).

float16/bfloat16 run in float32 and are cast back.

>>> import torch
>>> from adderconv.kernels import cpu
>>> cpu.available()  # doctest: +SKIP
True
"""
from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

__all__ = ["available", "supports", "forward", "grad_input", "grad_weight", "extension", "extension_name",
           "cache_dir"]

_SOURCE = Path(__file__).with_name("cpu_kernels.cpp")
_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_ext: ModuleType | None = None
_failed: str | None = None


def cache_dir() -> Path:
    """Where builds are cached: ``$ADDERCONV_CACHE`` or ``~/.cache/adderconv``."""
    root = os.environ.get("ADDERCONV_CACHE") or Path.home() / ".cache" / "adderconv"
    return Path(root) / "kernels"


def _cpu_fingerprint() -> str:
    """CPU model and feature flags: -march=native code must never run on a CPU that lacks them."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        keep = [ln for ln in info.splitlines() if ln.split(":")[0].strip() in
                ("model name", "flags", "Features", "CPU part", "CPU implementer")]
        return "\n".join(sorted(set(keep)))
    except OSError:
        return platform.processor() + platform.machine() + platform.platform()


def _import_cpp_extension() -> ModuleType:
    # Importing it on a CUDA build of torch without a GPU logs "No CUDA runtime is found"; we build CPU code.
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        log.setLevel(level)
    return cpp_extension


def extension_name() -> str:
    """The build's cache key: kernel source, torch and Python versions, and this CPU's model and flags."""
    key = hashlib.sha256("\0".join([_SOURCE.read_text(), torch.__version__, sys.version, _cpu_fingerprint()]).encode())
    return f"adderconv_cpu_{key.hexdigest()[:16]}"


def extension() -> ModuleType:
    """Build (once per machine) or load the C++ extension; raises RuntimeError when it cannot be built."""
    global _ext, _failed
    if _ext is not None:
        return _ext
    if _failed is not None:
        raise RuntimeError(_failed)
    cpp_extension = _import_cpp_extension()
    name = extension_name()
    build = cache_dir() / name
    cached = any(build.glob(f"{name}*.so")) or any(build.glob(f"{name}*.pyd"))
    build.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        _ext = cpp_extension.load(name, [str(_SOURCE)], build_directory=str(build), verbose=False,
                                  extra_cflags=["-O3", "-march=native", "-fopenmp"], extra_ldflags=["-fopenmp"])
    except Exception as e:  # no compiler, no ninja, unsupported flags: the portable kernel still works
        _failed = f"adderconv: could not build the CPU adder kernels ({type(e).__name__}: {str(e)[-300:]})"
        raise RuntimeError(_failed) from e
    if not cached:
        print(f"adderconv: built the CPU adder kernels in {time.perf_counter() - start:.1f} s "
              f"(once per machine; cached in {build})", file=sys.stderr)
    return _ext


def available() -> bool:
    """True when the extension is built or can be built now; warns once and returns False otherwise."""
    try:
        extension()
        return True
    except RuntimeError as e:
        if not getattr(available, "_warned", False):
            available._warned = True  # type: ignore[attr-defined]
            warnings.warn(f"{e}; using the portable kernels (slower)", RuntimeWarning, stacklevel=2)
        return False


def supports(x: Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype in _FLOATS and available()


def _compute(t: Tensor) -> Tensor:
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def forward(x: Tensor, weight: Tensor, stride, padding, dilation, groups: int) -> Tensor:
    y = extension().forward(_compute(x).contiguous(), _compute(weight).contiguous(), list(stride), list(padding),
                            list(dilation), int(groups))
    return y.to(x.dtype)


def grad_input(grad: Tensor, x: Tensor, weight: Tensor, stride, padding, dilation, groups: int) -> Tensor:
    xc = _compute(x)
    dx = extension().grad_input(grad.to(xc.dtype).contiguous(), xc.contiguous(),
                                weight.to(xc.dtype).contiguous(), list(stride), list(padding), list(dilation),
                                int(groups))
    return dx.to(x.dtype)


def grad_weight(grad: Tensor, x: Tensor, weight: Tensor, stride, padding, dilation, groups: int) -> Tensor:
    xc = _compute(x)
    g, w = grad.to(xc.dtype), weight.to(xc.dtype)
    _, gemm, _ = torch.ops.aten.convolution_backward(
        g, xc, w, None, list(stride), list(padding), list(dilation), False, [0, 0], int(groups),
        [False, True, False])
    # rank-1 term W[o, j] * sum_p g[o, p], in place: no weight-sized temporaries (they dominate deep layers)
    dw = gemm.addcmul_(w, g.sum(dim=(0, 2, 3)).view(-1, 1, 1, 1), value=-1)
    return dw.to(weight.dtype)
