"""A damaged kernel build in the cache is detected by its recorded hash and rebuilt, never loaded.

Each load runs in a child process: loading a truncated library is a SIGBUS, which would take pytest down.
"""
import os
import subprocess
import sys

import pytest

CHILD = r"""
import sys
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
