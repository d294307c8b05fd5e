"""Fast CPU adder kernels: a C++ extension built on this machine at first use, plus oneDNN for dW.

- forward and the clipped input gradient: direct tiled loops in ``cpu_kernels.cpp`` (no im2col; each task
  copies a padded band of input rows, in which every receptive-field element is contiguous over output
  positions, for every stride and dilation; ``cpu_bindings.cpp`` checks the tensors and makes the Python
  module), compiled with ``-O3 -march=native`` by :func:`torch.utils.cpp_extension.load` the first time a CPU
  tensor reaches the op (or by :func:`adderconv.kernels.build_all`). The build is cached per
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

import sys
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from .build import Extension, build_key, cache_dir
from .build import cpu_fingerprint as _cpu_fingerprint

__all__ = ["available", "supports", "forward", "grad_input", "grad_weight", "extension", "extension_name",
           "cache_dir", "SOURCES", "HEADERS", "CFLAGS"]

_HERE = Path(__file__).parent
SOURCES = (_HERE / "cpu_bindings.cpp", _HERE / "cpu_kernels.cpp")   # compiled in parallel: the bindings first,
HEADERS = (_HERE / "cpu_kernels.h",)                               # the longer of the two
CFLAGS = ("-O3", "-march=native", "-fopenmp")
_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def extension_name() -> str:
    """The build's cache key: kernel source, torch and Python versions, and this CPU's model and flags."""
    return build_key("adderconv_cpu", *(f.read_text() for f in (*SOURCES, *HEADERS)), torch.__version__,
                     sys.version, _cpu_fingerprint(), *CFLAGS)


_EXTENSION = Extension(extension_name, SOURCES, cflags=CFLAGS, ldflags=["-fopenmp"], what="CPU adder kernels",
                       about="about 15 s on 2 cores", kernel="cpu")


def extension() -> ModuleType:
    """Build (once per machine) or load the C++ extension; raises RuntimeError when it cannot be built."""
    return _EXTENSION.get()


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
    xc = _compute(x)   # the weight in x's compute dtype (under autocast they differ), as the gradients do
    y = extension().forward(xc.contiguous(), weight.to(xc.dtype).contiguous(), list(stride), list(padding),
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
