"""The ``adderconv build-kernels`` command's body: compile the C++ kernels now (a Dockerfile, a CI cache step),
so no later command waits for a compiler.

>>> BuildKernelsOptions().kernels
()
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import AdderconvError
from ..output import Output

__all__ = ["BuildKernelsOptions", "run_build_kernels"]


@dataclass(kw_only=True)
class BuildKernelsOptions:
    kernels: tuple[str, ...] = ()     # empty: every kernel (adderconv.choices.KERNEL_BUILDS)
    rebuild: bool = False             # compile even what the cache holds


def run_build_kernels(opts: BuildKernelsOptions, out: Output | Any) -> int:
    """Build (or find in the cache) each kernel and say where it lives and what it took."""
    from .build import build_all, cache_dir

    out = Output.of(out)
    try:
        built = build_all(opts.kernels or None, rebuild=opts.rebuild)
    except RuntimeError as e:          # no compiler, no Python headers: the build says which
        raise AdderconvError(f"the kernels could not be built: {e}") from None
    for b in built:
        how = "compiled" if b.compiled else "cached"
        out.line(f"{b.kernel}: {b.what} {how} in {b.seconds:.1f} s ({b.path})")
    out.note(f"cache: {cache_dir()} (set ADDERCONV_CACHE to move it; one folder per CPU, torch and Python)")
    return 0
