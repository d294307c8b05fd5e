"""`adderconv build-kernels`: the kernels built (or found) ahead of time, each with its cache folder."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from adderconv.choices import KERNEL_BUILDS
from adderconv.kernels.build import KERNELS, cache_dir


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "adderconv", *args], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_the_cli_offers_the_kernels_the_build_knows():
    assert KERNEL_BUILDS == KERNELS


@pytest.mark.slow
def test_build_kernels_builds_each_kernel_into_the_cache_and_says_where():
    r = _cli("build-kernels")
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if re.match(r"^(cpu|int8): ", ln)]
    assert [ln.split(":")[0] for ln in lines] == list(KERNELS), r.stdout
    for ln in lines:
        folder = Path(ln.rsplit("(", 1)[1].rstrip(")"))
        assert folder.parent == cache_dir() and any(folder.glob("*.so")), ln
    again = _cli("build-kernels", "--kernel", "int8")      # now in the cache: found, not compiled
    assert again.returncode == 0 and re.search(r"^int8: .* cached in ", again.stdout, re.M), again.stdout


def test_an_unknown_kernel_is_one_line_and_exit_2():
    r = _cli("build-kernels", "--kernel", "gpu")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: --kernel: unknown kernel 'gpu'; choose one of cpu, int8"], r.stderr
