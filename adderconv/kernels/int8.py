"""int8 adder kernels: a C++ extension (SAD instructions) built on this machine at first use.

The extension is built from ``int8_bindings.cpp`` (tensors, packing, the Python module) and ``int8_kernels.cpp``
(the arithmetic; its micro-kernels in ``int8_sad.h``), compiled in parallel, without
``-march=native``: each vector path (AVX-512BW with and without VNNI, AVX2, SSE2 on x86, NEON on AArch64,
generic C++ everywhere) carries its own target attribute or preprocessor guard, and the fastest one this CPU
supports is chosen at run time, so a build never runs instructions the CPU lacks and every x86 path can be
tested on one machine (the NEON one runs in an AArch64 emulator: tests/test_int8_neon.py).
``ADDERCONV_INT8_ISA=avx512vnni|avx512|avx2|sse2|neon|generic`` forces a path (it must be one this CPU has);
:func:`set_isa` does the same in process. Built once per machine (cached beside the float kernels, keyed by
source, torch, Python and CPU); if there is no compiler, :func:`available` is False and the op runs
:mod:`adderconv.kernels.int8_portable` (pure PyTorch, same integers).

>>> from adderconv.kernels import int8
>>> int8.isa_name() in ISAS  # doctest: +SKIP
True
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from .build import Extension, build_key, cpu_fingerprint

__all__ = ["ISAS", "SOURCES", "HEADERS", "CFLAGS", "available", "extension", "isa", "isa_name", "set_isa",
           "best_isa", "supported_isas", "lanes", "pack"]

ISAS = ("generic", "sse2", "avx2", "avx512", "neon", "avx512vnni")   # index = the extension's ISA code
_HERE = Path(__file__).parent
SOURCES = (_HERE / "int8_bindings.cpp", _HERE / "int8_kernels.cpp")   # compiled in parallel, the longer first
HEADERS = (_HERE / "int8_kernels.h", _HERE / "int8_sad.h")
_ext: ModuleType | None = None


# No -march=native: the vector paths choose themselves at run time. No FP contraction: the fused epilogue must
# round exactly as the PyTorch float simulation does. -fno-trapping-math lets GCC turn the epilogue's and the
# quantiser's clamps into vector selects (nothing here reads FP exception flags; results are unchanged).
# -fopenmp: at::parallel_for's inline OpenMP region is compiled here; without it the kernels run serially.
CFLAGS = ("-O3", "-ffp-contract=off", "-fno-trapping-math", "-fopenmp")


def extension_name() -> str:
    # the flags are part of the key: a build with other flags is another build
    return build_key("adderconv_int8", *(f.read_text() for f in (*SOURCES, *HEADERS)), torch.__version__,
                     sys.version, cpu_fingerprint(), *CFLAGS)


_EXTENSION = Extension(extension_name, SOURCES, cflags=CFLAGS, ldflags=["-fopenmp"], what="int8 adder kernels",
                       about="about 20 s on 2 cores", kernel="int8")


def extension() -> ModuleType:
    """Build (once per machine) or load the extension; raises RuntimeError when it cannot be built."""
    global _ext
    if _ext is None:
        ext = _EXTENSION.get()
        forced = os.environ.get("ADDERCONV_INT8_ISA")
        if forced:
            if forced not in ISAS:
                raise RuntimeError(f"ADDERCONV_INT8_ISA must be one of {ISAS}, got {forced!r}")
            ext.set_isa(ISAS.index(forced))
        _ext = ext
    return _ext


def available() -> bool:
    """True when the extension is built or can be built now (and ADDERCONV_INT8_KERNEL is not 'portable')."""
    if os.environ.get("ADDERCONV_INT8_KERNEL") == "portable":
        return False
    try:
        extension()
        return True
    except RuntimeError:
        return False


def isa() -> int:
    """The vector path in use (an index into :data:`ISAS`)."""
    return int(extension().get_isa())


def isa_name() -> str:
    return ISAS[isa()]


def best_isa() -> str:
    """The widest path this CPU supports."""
    return ISAS[int(extension().best_isa())]


def supported_isas() -> list[str]:
    """Every path this CPU can run, generic first and the widest last."""
    return [name for i, name in enumerate(ISAS) if extension().supports_isa(i)]


def set_isa(name: str) -> None:
    """Use vector path ``name`` (one this CPU supports) from now on; packed weights follow automatically."""
    if name not in ISAS:
        raise ValueError(f"isa must be one of {ISAS}, got {name!r}")
    extension().set_isa(ISAS.index(name))


def lanes(isa_index: int | None = None) -> int:
    """Output channels per vector of a path: 8 (AVX-512), 4 (AVX2), 2 (SSE2, NEON), 1 (generic)."""
    return int(extension().lanes(isa() if isa_index is None else isa_index))


def pack(weight: Tensor, zero_point: int, groups: int, isa_index: int | None = None) -> Tensor:
    """uint8 weight codes (O, C/g, kh, kw) packed for a vector path ([G][O-block][K/8][lanes][8])."""
    index = isa() if isa_index is None else isa_index
    return extension().pack(weight.contiguous(), int(zero_point), int(groups), index)
