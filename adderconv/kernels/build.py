"""Building the C++ kernels on the user's machine at first use, caching them, and loading only what is intact.

Builds live in ``$ADDERCONV_CACHE/kernels`` (default ``~/.cache/adderconv/kernels``), one folder per build key
(source, torch and Python versions, CPU model and flags), so a shared cache never serves code built for
another CPU. After a build, the library's SHA-256 is recorded beside it; a cached library is loaded only when
its hash matches the record. A truncated library (a killed copy, a full disk) would otherwise kill every
command with SIGBUS at load time, and an empty or random one would disable the kernels for good: a damaged
build is removed and rebuilt, with a one-line notice.

>>> load_extension  # doctest: +ELLIPSIS
<function load_extension at ...>
"""
from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

__all__ = ["cache_dir", "cpu_fingerprint", "build_key", "load_extension", "Extension"]


def cache_dir() -> Path:
    """Where builds are cached: ``$ADDERCONV_CACHE`` or ``~/.cache/adderconv``."""
    root = os.environ.get("ADDERCONV_CACHE") or Path.home() / ".cache" / "adderconv"
    return Path(root) / "kernels"


def cpu_fingerprint() -> str:
    """CPU model and feature flags: -march=native code must never run on a CPU that lacks them."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        keep = [ln for ln in info.splitlines() if ln.split(":")[0].strip() in
                ("model name", "flags", "Features", "CPU part", "CPU implementer")]
        return "\n".join(sorted(set(keep)))
    except OSError:
        return platform.processor() + platform.machine() + platform.platform()


_FORMAT = "recorded-sha256"   # in every key: builds from before the hash record are never loaded


def build_key(prefix: str, *parts: str) -> str:
    """``prefix`` + 16 hex digits of the SHA-256 of ``parts`` (a module name cpp_extension accepts)."""
    return f"{prefix}_{hashlib.sha256(chr(0).join((_FORMAT, *parts)).encode()).hexdigest()[:16]}"


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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _libraries(build: Path, name: str) -> list[Path]:
    return [*build.glob(f"{name}*.so"), *build.glob(f"{name}*.pyd")]


def _stamp(build: Path, name: str) -> tuple[int, int] | None:
    """(size, mtime) of the cached library: unchanged after the load means it was not relinked (no second hash
    at every start-up)."""
    libs = _libraries(build, name)
    if not libs:
        return None
    st = libs[0].stat()
    return st.st_size, st.st_mtime_ns


def _intact(build: Path, name: str) -> bool | None:
    """True/False for a cached library that matches / does not match its record; None when there is none."""
    libs = _libraries(build, name)
    if not libs:
        return None
    record = build / f"{name}.sha256"
    try:
        return record.read_text().strip() == _sha256(libs[0])
    except OSError:
        return False


def load_extension(name: str, sources: Sequence[Path], *, cflags: Sequence[str], ldflags: Sequence[str],
                   what: str) -> ModuleType:
    """Load build ``name`` of ``sources`` from the cache, building it first when it is missing or damaged.

    ``what`` names the kernels in the notices ("CPU adder kernels"). Raises whatever the build raises (the
    callers fall back to their portable kernels).
    """
    from filelock import FileLock   # torch's own dependency; cpp_extension holds the same lock while building

    cpp_extension = _import_cpp_extension()
    build = cache_dir() / name
    build.mkdir(parents=True, exist_ok=True)
    with FileLock(str(build / "lock")):          # no other process is building it while we look
        state = _intact(build, name)
        if state is False:
            print(f"adderconv: the cached {what} in {build} are damaged (their hash does not match the build's "
                  f"record); rebuilding them", file=sys.stderr)
            for f in build.iterdir():
                if f.name != "lock":
                    shutil.rmtree(f) if f.is_dir() else f.unlink()
            state = None
        checked = _stamp(build, name) if state else None      # the intact library, as we hashed it
    if state is None:   # say it before the minutes of compiling, not after them
        print(f"adderconv: building the {what} for this CPU (first use only: a minute or two on 2 cores; needs a "
              f"C++ compiler and the Python headers; cached in {build})", file=sys.stderr, flush=True)
    start = time.perf_counter()
    ext = cpp_extension.load(name, [str(s) for s in sources], build_directory=str(build), verbose=False,
                             extra_cflags=list(cflags), extra_ldflags=list(ldflags))
    libs = _libraries(build, name)
    if libs and _stamp(build, name) != checked and _intact(build, name) is not True:
        # Just built, or rebuilt by cpp_extension itself (its build file names the source's path, so a second
        # checkout with the same source relinks): record what is there now, after it loaded.
        tmp = build / f".{name}.sha256.{os.getpid()}.tmp"
        tmp.write_text(_sha256(libs[0]) + "\n")
        os.replace(tmp, build / f"{name}.sha256")
    if state is None:
        print(f"adderconv: built the {what} in {time.perf_counter() - start:.1f} s (once per machine; cached in "
              f"{build})", file=sys.stderr)
    return ext


class Extension:
    """One kernel build, loaded once per process: ``get()`` builds or loads it, and after a failure raises the
    same RuntimeError again without retrying (the caller falls back to its portable kernels)."""

    def __init__(self, name: Callable[[], str], sources: Sequence[Path], *, cflags: Sequence[str],
                 ldflags: Sequence[str], what: str) -> None:
        self._name, self._sources, self._cflags, self._ldflags, self.what = name, sources, cflags, ldflags, what
        self._module: ModuleType | None = None
        self._failed: str | None = None

    def get(self) -> ModuleType:
        if self._module is not None:
            return self._module
        if self._failed is not None:
            raise RuntimeError(self._failed)
        try:
            self._module = load_extension(self._name(), self._sources, cflags=self._cflags, ldflags=self._ldflags,
                                          what=self.what)
        except Exception as e:  # no compiler, no ninja, unsupported flags: the portable kernels still work
            self._failed = f"adderconv: could not build the {self.what} ({type(e).__name__}: {str(e)[-300:]})"
            raise RuntimeError(self._failed) from e
        return self._module
