"""Start-up stays light (issue 27, item 1): `import adderconv`, `import adderconv.cli`, `adderconv --help`, every
command's `--help` and a usage error load no torch. Each check runs in a fresh interpreter; no wall-clock limits
(benchmarks/startup.py measures the times)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

RUN_CLI = """
import json, runpy, sys
sys.argv = ["adderconv", *json.loads(sys.argv[1])]
try:
    runpy.run_module("adderconv", run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "torch": "torch" in sys.modules}), file=sys.__stderr__)
"""
COMMANDS = ("zoo", "convert", "graph", "energy", "finetune", "export", "verify", "bench", "quantize")


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


def _cli(*argv: str) -> dict:
    """Run the CLI as `python -m adderconv ARGV` does; its exit code and whether torch was imported."""
    proc = _python(RUN_CLI, json.dumps(argv))
    return json.loads(proc.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["adderconv", "adderconv.cli", "adderconv.errors", "adderconv.untrusted"])
def test_import_loads_no_torch(module):
    proc = _python(f"import sys, {module}; print('torch' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False", f"importing {module} imported torch"


def test_help_and_version_load_no_torch():
    assert _cli("--help") == {"code": 0, "torch": False}
    assert _cli("--version") == {"code": 0, "torch": False}


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_loads_no_torch(command):
    assert _cli(command, "--help") == {"code": 0, "torch": False}


@pytest.mark.parametrize("argv", [("energy", "--top", "notanumber"), ("energy", "--no-such-option"), ("nope",)])
def test_usage_error_loads_no_torch(argv):
    assert _cli(*argv) == {"code": 2, "torch": False}


def test_lazy_names_still_resolve():
    """Every public name resolves on first use, `dir()` lists them, and a submodule reads as an attribute."""
    code = """
import sys, adderconv
missing = [n for n in adderconv.__all__ if n not in dir(adderconv)]
assert not missing, missing
assert "torch" not in sys.modules
for name in adderconv.__all__:
    getattr(adderconv, name)
assert adderconv.load is adderconv.load_model
assert adderconv.layers.AdderConv2d is adderconv.AdderConv2d
import torch
assert hasattr(torch.ops.adderconv, "adder_conv2d")   # the op is registered by the name's module
assert not hasattr(adderconv, "no_such_name")
print("ok")
"""
    proc = _python(code)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
