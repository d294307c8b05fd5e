"""Building the C++ kernels on the user's machine at first use, caching them, and loading only what is intact.

Builds live in ``$ADDERCONV_CACHE/kernels`` (default ``~/.cache/adderconv/kernels``), one folder per build key
(source, torch and Python versions, CPU model and flags), so a shared cache never serves code built for
another CPU. After a build, the library's SHA-256 is recorded beside it; a cached library is loaded only when
its hash matches the record. A truncated library (a killed copy, a full disk) would otherwise kill every
command with SIGBUS at load time, and an empty or random one would disable the kernels for good: a damaged
build is removed and rebuilt, with a one-line notice.

A build says what it is, why and about how long before it starts, the elapsed time while it runs (a status line
on a terminal, a line every 10 s otherwise) and its time at the end. Each build's sources are several translation
units that ninja compiles in parallel (``MAX_JOBS`` caps the jobs). :func:`build_all` builds (or loads) every
kernel ahead of time, e.g. in a Dockerfile or a CI cache step (``adderconv build-kernels``).

>>> load_extension  # doctest: +ELLIPSIS
<function load_extension at ...>
"""
from __future__ import annotations

import hashlib
import importlib
import logging
import os
import platform
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import cast

__all__ = ["cache_dir", "cpu_fingerprint", "build_key", "load_extension", "Extension", "Built", "build_all",
           "KERNELS"]


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


_TICK_S = 10.0   # seconds between progress lines when stderr is not a terminal


@contextmanager
def _ticking(every: float, say: Callable[[float], None]) -> Iterator[None]:
    """Call ``say(elapsed seconds)`` every ``every`` seconds from a thread while the block runs."""
    start, done = time.perf_counter(), threading.Event()

    def tick() -> None:
        while not done.wait(every):
            say(time.perf_counter() - start)
    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@contextmanager
def _progress(what: str) -> Iterator[None]:
    """Elapsed time on stderr while the block runs: a rich status line on a terminal, else a line every 10 s
    (a CI log or a Docker build shows the build is alive without a line per second)."""
    if sys.stderr.isatty():
        from rich.console import Console

        with Console(stderr=True).status(f"building the {what}") as status, \
                _ticking(1.0, lambda s: status.update(f"building the {what}: {s:.0f} s")):
            yield
        return
    with _ticking(_TICK_S, lambda s: print(f"adderconv: still building the {what}: {s:.0f} s", file=sys.stderr,
                                           flush=True)):
        yield


def _load(name: str, sources: Sequence[Path], *, cflags: Sequence[str], ldflags: Sequence[str], what: str,
          about: str, rebuild: bool = False) -> tuple[ModuleType, bool, float]:
    """:func:`load_extension`, also saying whether it compiled and how long it took (compiling or loading)."""
    from filelock import FileLock   # torch's own dependency; cpp_extension holds the same lock while building

    cpp_extension = _import_cpp_extension()
    build = cache_dir() / name
    build.mkdir(parents=True, exist_ok=True)
    with FileLock(str(build / "lock")):          # no other process is building it while we look
        state = _intact(build, name)
        if state is False:
            print(f"adderconv: the cached {what} in {build} are damaged (their hash does not match the build's "
                  f"record); rebuilding them", file=sys.stderr)
        if state is False or (rebuild and state is not None):
            for f in build.iterdir():
                if f.name != "lock":
                    shutil.rmtree(f) if f.is_dir() else f.unlink()
            state = None
        checked = _stamp(build, name) if state else None      # the intact library, as we hashed it
    start = time.perf_counter()
    if state is None:   # say it before the seconds of compiling, not after them
        print(f"adderconv: building the {what} for this CPU (first use only, {about}; needs a C++ compiler and "
              f"the Python headers; cached in {build}; `adderconv build-kernels` builds them ahead of time)",
              file=sys.stderr, flush=True)
        with _progress(what):
            ext = cpp_extension.load(name, [str(s) for s in sources], build_directory=str(build), verbose=False,
                                     extra_cflags=list(cflags), extra_ldflags=list(ldflags))
    else:
        ext = cpp_extension.load(name, [str(s) for s in sources], build_directory=str(build), verbose=False,
                                 extra_cflags=list(cflags), extra_ldflags=list(ldflags))
    libs = _libraries(build, name)
    if libs and _stamp(build, name) != checked and _intact(build, name) is not True:
        # Just built, or rebuilt by cpp_extension itself (its build file names the source's path, so a second
        # checkout with the same source relinks): record what is there now, after it loaded.
        tmp = build / f".{name}.sha256.{os.getpid()}.tmp"
        tmp.write_text(_sha256(libs[0]) + "\n")
        os.replace(tmp, build / f"{name}.sha256")
    seconds = time.perf_counter() - start
    if state is None:
        print(f"adderconv: built the {what} in {seconds:.1f} s (once per machine; cached in {build})",
              file=sys.stderr)
    return ext, state is None, seconds


def load_extension(name: str, sources: Sequence[Path], *, cflags: Sequence[str], ldflags: Sequence[str],
                   what: str, about: str = "a minute or less") -> ModuleType:
    """Load build ``name`` of ``sources`` from the cache, building it first when it is missing or damaged.

    ``what`` names the kernels in the notices ("CPU adder kernels"), ``about`` says how long a build takes.
    Raises whatever the build raises (the callers fall back to their portable kernels).
    """
    return _load(name, sources, cflags=cflags, ldflags=ldflags, what=what, about=about)[0]


@dataclass(frozen=True)
class Built:
    """One kernel build that :func:`build_all` made or found: ``compiled`` is False when it came from the cache,
    ``seconds`` the time it took (compiling, or loading the cached library)."""
    kernel: str      # the key in KERNELS ("cpu", "int8")
    what: str        # "CPU adder kernels"
    name: str        # the build's cache key
    path: Path       # its folder in the cache
    compiled: bool
    seconds: float


_REGISTRY: dict[str, Extension] = {}


class Extension:
    """One kernel build, loaded once per process: ``get()`` builds or loads it, and after a failure raises the
    same RuntimeError again without retrying (the caller falls back to its portable kernels).

    ``kernel`` registers it under that key for :func:`build_all` (a second registration is an error); ``about``
    says how long a build takes on a small machine, for the notice before it.
    """

    def __init__(self, name: Callable[[], str], sources: Sequence[Path], *, cflags: Sequence[str],
                 ldflags: Sequence[str], what: str, about: str = "a minute or less",
                 kernel: str | None = None) -> None:
        self._name, self.sources, self._cflags, self._ldflags = name, tuple(sources), cflags, ldflags
        self.what, self.about = what, about
        self._module: ModuleType | None = None
        self._failed: str | None = None
        if kernel is not None:
            if kernel in _REGISTRY:
                raise ValueError(f"kernel build {kernel!r} is already registered")
            _REGISTRY[kernel] = self

    def get(self) -> ModuleType:
        if self._module is None:
            self.build()
        return cast(ModuleType, self._module)

    def build(self, *, rebuild: bool = False) -> tuple[bool, float]:
        """Load it, compiling first when it is not cached (or when ``rebuild``): (compiled, seconds). In a process
        that has loaded it already, nothing happens (compiled False, 0 s): a library cannot be loaded twice."""
        if self._module is not None:
            return False, 0.0
        if self._failed is not None:
            raise RuntimeError(self._failed)
        try:
            self._module, compiled, seconds = _load(self._name(), self.sources, cflags=self._cflags,
                                                    ldflags=self._ldflags, what=self.what, about=self.about,
                                                    rebuild=rebuild)
        except Exception as e:  # no compiler, no ninja, unsupported flags: the portable kernels still work
            self._failed = f"adderconv: could not build the {self.what} ({type(e).__name__}: {str(e)[-300:]})"
            raise RuntimeError(self._failed) from e
        return compiled, seconds


KERNELS = ("cpu", "int8")   # the modules of this package that own a C++ build


def build_all(kernels: Sequence[str] | None = None, *, rebuild: bool = False) -> list[Built]:
    """Build (or load from the cache) the C++ kernels now, so no later command waits for a compiler: in a
    Dockerfile, a CI cache step, or after a torch upgrade (``adderconv build-kernels``).

    ``kernels``: a subset of :data:`KERNELS` (all by default); ``rebuild``: compile even what is cached. Returns
    one :class:`Built` per kernel, in order. Raises ValueError for an unknown kernel and RuntimeError when one
    cannot be built (no compiler, no Python headers).

    >>> [b.kernel for b in build_all()]  # doctest: +SKIP
    ['cpu', 'int8']
    """
    names = list(KERNELS if kernels is None else kernels)
    unknown = [k for k in names if k not in KERNELS]
    if unknown or not names:
        raise ValueError(f"`kernels` must be some of {', '.join(KERNELS)}; got {', '.join(unknown) or 'none'}")
    done = []
    for kernel in dict.fromkeys(names):
        importlib.import_module(f"{__package__}.{kernel}")     # registers its Extension
        ext = _REGISTRY[kernel]
        compiled, seconds = ext.build(rebuild=rebuild)
        name = ext._name()
        done.append(Built(kernel, ext.what, name, cache_dir() / name, compiled, seconds))
    return done
