"""A damaged kernel build in the cache is detected by its recorded hash and rebuilt, never loaded.

Each load runs in a child process: loading a truncated library is a SIGBUS, which would take pytest down.
"""
import os
import subprocess
import sys
import time

import pytest

CHILD = r"""
import sys
import time
from pathlib import Path
from adderconv.kernels.build import load_extension
ext = load_extension("adderconv_cache_test", [Path(sys.argv[1])], cflags=["-O1"], ldflags=[], what="test kernels")
print("answer", ext.answer())
"""
SOURCE = """
#include <torch/extension.h>
int answer() { return 42; }
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("answer", &answer); }
"""


def _load(tmp_path, source=None):
    env = {**os.environ, "ADDERCONV_CACHE": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-c", CHILD, str(source or tmp_path / "k.cpp")], env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_damaged_builds_are_rebuilt_not_loaded(tmp_path):
    (tmp_path / "k.cpp").write_text(SOURCE)
    first = _load(tmp_path)
    assert first.returncode == 0 and "answer 42" in first.stdout and "built the test kernels" in first.stderr, first
    assert first.stderr.index("building the test kernels") < first.stderr.index("built the test kernels")
    build = tmp_path / "cache" / "kernels" / "adderconv_cache_test"
    (lib,) = build.glob("adderconv_cache_test*.so")
    assert (build / "adderconv_cache_test.sha256").is_file()
    again = _load(tmp_path)                       # intact: loaded as it is, nothing rebuilt
    assert again.returncode == 0 and "answer 42" in again.stdout and "built" not in again.stderr, again
    good = lib.read_bytes()
    for damage in (good[: len(good) // 2], b"", os.urandom(len(good))):   # truncated, empty, random
        lib.write_bytes(damage)
        out = _load(tmp_path)
        assert out.returncode == 0 and "answer 42" in out.stdout, (out.returncode, out.stderr[-500:])
        assert "damaged" in out.stderr and "rebuilding" in out.stderr
        (lib,) = build.glob("adderconv_cache_test*.so")
    # A second checkout with the same source: cpp_extension relinks for its path; neither calls the other's
    # build damaged.
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "k.cpp").write_text(SOURCE)
    for source in (tmp_path / "other" / "k.cpp", tmp_path / "k.cpp", tmp_path / "other" / "k.cpp"):
        out = _load(tmp_path, source)
        assert out.returncode == 0 and "answer 42" in out.stdout and "damaged" not in out.stderr, out.stderr[-500:]


def test_a_build_is_announced_before_it_starts(tmp_path, monkeypatch, capsys):
    """Issue 27 (2): the first build compiles for minutes; the user hears why before, not only after."""
    from types import SimpleNamespace

    from adderconv.kernels import build

    heard = []

    def load(name, sources, **kw):          # stands for the compiler: what had been said when it started?
        heard.append(capsys.readouterr().err)
        return SimpleNamespace(answer=lambda: 42)

    monkeypatch.setenv("ADDERCONV_CACHE", str(tmp_path))
    monkeypatch.setattr(build, "_import_cpp_extension", lambda: SimpleNamespace(load=load))
    assert build.load_extension("adderconv_notice_test", [], cflags=[], ldflags=[], what="test kernels").answer() == 42
    assert "building the test kernels" in heard[0] and "C++ compiler" in heard[0]
    assert "built the test kernels" in capsys.readouterr().err


def test_a_build_shows_its_elapsed_time_while_it_runs(tmp_path, monkeypatch, capsys):
    """Issue 27: no silent minutes. Off a terminal (a CI log, a Docker build), a line with the elapsed time every
    tick while the compiler runs, and none after it returned."""
    from types import SimpleNamespace

    from adderconv.kernels import build

    def load(name, sources, **kw):          # a compiler that takes five ticks
        time.sleep(0.5)
        return SimpleNamespace(answer=lambda: 42)

    monkeypatch.setenv("ADDERCONV_CACHE", str(tmp_path))
    monkeypatch.setattr(build, "_import_cpp_extension", lambda: SimpleNamespace(load=load))
    monkeypatch.setattr(build, "_TICK_S", 0.1)
    build.load_extension("adderconv_tick_test", [], cflags=[], ldflags=[], what="test kernels", about="about 1 s")
    err = capsys.readouterr().err.splitlines()
    assert "about 1 s" in err[0] and "build-kernels" in err[0]
    ticks = [line for line in err if line.startswith("adderconv: still building the test kernels: ")]
    assert 2 <= len(ticks) <= 6, err
    assert err[-1].startswith("adderconv: built the test kernels in ") and err.index(ticks[-1]) < len(err) - 1
    time.sleep(0.3)
    assert capsys.readouterr().err == ""    # the ticker stopped with the build


def test_build_all_builds_each_kernel_once_and_refuses_unknown_names(tmp_path, monkeypatch):
    from adderconv.kernels import build

    calls = []

    def fake_load(name, sources, *, rebuild, **kw):   # stands for the compiler: compiles once, then the cache
        calls.append((name, rebuild))
        return object(), len(calls) == 1 or rebuild, 1.5

    monkeypatch.setenv("ADDERCONV_CACHE", str(tmp_path))
    monkeypatch.setattr(build, "_load", fake_load)
    for ext in build._REGISTRY.values():
        monkeypatch.setattr(ext, "_module", None)
        monkeypatch.setattr(ext, "_failed", None)
    done = build.build_all(["int8", "cpu", "int8"])
    assert [b.kernel for b in done] == ["int8", "cpu"] and [b.compiled for b in done] == [True, False]
    assert done[0].what == "int8 adder kernels" and done[0].path == tmp_path / "kernels" / done[0].name
    assert all(b.seconds == 1.5 for b in done) and calls[0][0].startswith("adderconv_int8_")
    assert build.build_all(["cpu"])[0].seconds == 0.0    # loaded in this process already: nothing to do
    with pytest.raises(ValueError, match="`kernels` must be some of cpu, int8; got cuda"):
        build.build_all(["cpu", "cuda"])
    with pytest.raises(ValueError, match="`kernels`"):
        build.build_all([])


@pytest.mark.slow
def test_build_all_finds_the_cached_kernels(tmp_path):
    """In a fresh process, after the kernels were built (the tests above and test_kernels.py built them in the
    default cache): build_all loads them, compiles nothing, and names each build's folder."""
    code = ("from adderconv.kernels import build_all\n"
            "for b in build_all():\n"
            "    print(b.kernel, b.compiled, b.path.is_dir(), b.seconds < 60)\n")
    from adderconv.kernels import cpu, int8

    cpu.extension(), int8.extension()         # built (or loaded) here first, in the default cache
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:2] == ["cpu False True True", "int8 False True True"], out
    assert "building" not in out.stderr
