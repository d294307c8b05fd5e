"""Kernel selection for the adder op.

Every backend implements ``forward``, ``grad_input`` and ``grad_weight`` with the signature of
:mod:`adderconv.kernels.portable`; the op calls :func:`backend_for` and nothing else. Set
``ADDERCONV_KERNEL=<name>`` to force one (for benchmarks and debugging).

Backends, most preferred first: ``triton`` (CUDA tensors, float32/16/bf16; needs triton), ``cpu`` (a C++
extension built on this machine at first use), ``portable`` (pure PyTorch, any device and dtype).
:func:`build_all` compiles the C++ kernels ahead of time (``adderconv build-kernels``).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from torch import Tensor

from . import cpu, portable, triton_kernels
from .build import KERNELS, Built, build_all

__all__ = ["Backend", "register_backend", "backend_for", "available_backends", "build_all", "Built", "KERNELS"]


@dataclass(frozen=True)
class Backend:
    name: str
    module: ModuleType          # has forward / grad_input / grad_weight
    supports: Callable[[Tensor], bool]


_BACKENDS: list[Backend] = []   # most preferred first


def register_backend(backend: Backend, *, first: bool = True) -> None:
    """Add a backend; a second registration of the same name is an error."""
    if any(b.name == backend.name for b in _BACKENDS):
        raise ValueError(f"adder kernel backend {backend.name!r} is already registered")
    _BACKENDS.insert(0 if first else len(_BACKENDS), backend)


def available_backends() -> list[str]:
    return [b.name for b in _BACKENDS]


def backend_for(x: Tensor) -> ModuleType:
    """The module whose kernels run on ``x`` (device, dtype)."""
    forced = os.environ.get("ADDERCONV_KERNEL")
    for b in _BACKENDS:
        if forced and b.name != forced:
            continue
        if b.supports(x):
            return b.module
    if forced:
        raise RuntimeError(f"ADDERCONV_KERNEL={forced!r} cannot run on {x.device}/{x.dtype}; "
                           f"backends: {available_backends()}")
    raise RuntimeError(f"no adder kernel for {x.device}/{x.dtype}")


register_backend(Backend("portable", portable, lambda x: True))
register_backend(Backend("cpu", cpu, cpu.supports))   # C++ built at first use; portable if it cannot be
register_backend(Backend("triton", triton_kernels, triton_kernels.supports))
