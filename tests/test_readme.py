"""Every command and Python snippet of the README runs as written (issue 27: examples that failed as written).

One small extractor: each ```bash line (continuations joined) and each ```python block, in the README's order, in
one working folder, so a file one example writes (``resnet20_adder.onnx``) is there for the next (``verify``).
The user's own files the examples name (``net.pt``, ``mypkg/models.py``, ...) are made first by a fixture, and the
names the snippets take as given (``model``, ``calibration_batches``) by a preamble per snippet. A command that
exits non-zero, or a snippet that raises, fails its test. What does not run here is listed in SKIP, with why.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# Commands that do not run here, by their start: each with the reason.
SKIP = {
    "python3 -m venv": "sets up a machine (the setup block is what .ci/run runs)",
    'pip install -e ".[dev]"': "sets up a machine (the setup block is what .ci/run runs)",
    'pip install -e ".[report]"': "installs packages (matplotlib is in [dev], which the tests run with)",
    "pip install -e .": "installs packages",
    "ruff check . && pytest": "runs the whole suite, this test included",
    "torchrun": "several processes (one per GPU) and an ImageFolder data set on disk",
    "OMP_NUM_THREADS=1 python benchmarks/accuracy.py": "a 10-19 minute benchmark run, quoted with its results",
    "adderconv finetune resnet20 --data cifar10:": "needs the CIFAR-10 batches on disk (a download; no network here)",
    "adderconv finetune cnn.safetensors --arch resnet20 --data cifar10:": "needs the CIFAR-10 batches on disk",
}

# The user's objects each snippet takes as given, keyed by the snippet's first line.
PREAMBLE = {
    "from adderconv.analysis import analyze, count_ops, render_comparison": """
        import rich.console, torch
        from mypkg.models import build
        model, x = build(), torch.zeros(1, 3, 32, 32)
        def build_my_7b_model():                       # stands for a model too large to allocate
            return torch.nn.Sequential(torch.nn.Embedding(32000, 4096), torch.nn.Linear(4096, 32000))
    """,
    "import math, torch": """
        import torch
        torch.library.define("mylib::shift_add", "(Tensor x, Tensor w) -> Tensor")
        torch.library.impl("mylib::shift_add", "CPU")(lambda x, w: x + w * 2)
        torch.library.register_fake("mylib::shift_add")(lambda x, w: torch.empty_like(x))
        class ShiftNet(torch.nn.Module):
            def forward(self, x):
                return torch.ops.mylib.shift_add(x, x)
        model = ShiftNet()
    """,
    "import torch, adderconv": "",
    "from adderconv.converters import Policy": """
        import torch
        from mypkg.models import build
        model = build()
    """,
    "from adderconv.training import finetune, load_data": """
        import adderconv
        student, cnn = adderconv.get_model("lenet5_bn_adder"), adderconv.get_model("lenet5_bn")
    """,
    "q = adderconv.quantize(": """
        import torch, adderconv
        model = adderconv.get_model("resnet20_adder").eval()
        calibration_batches = [torch.randn(8, 3, 32, 32) for _ in range(2)]
    """,
}
# the converter's snippet: a torchvision CNN and a few calibration batches
PREAMBLE_CONVERT = """
    import torch, torchvision
    cnn = torchvision.models.resnet18()
    calibration_batches = [torch.randn(2, 3, 224, 224)]
"""

MODELS = '''
import torch
from torch import nn


class Small(nn.Module):
    """A small CNN that takes any image size."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(self.features(x))


def build() -> nn.Module:
    return Small()


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1),
                                  nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.ReLU(),
                                  nn.Conv2d(32, 32, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.body(x))


def net() -> nn.Module:
    return Net()


def vdsr() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 1, 3, padding=1))
'''

# The files the commands name, made from MODELS (a state dict where the README passes --arch, a pickle where it
# passes --trust, an export archive, ONNX files from another framework's point of view).
MAKE_FILES = """
import torch, torchvision
from safetensors.torch import save_file
from mypkg.models import build
from my.models import net, vdsr
m = build().eval()
save_file(m.state_dict(), "net.safetensors")
from collections import OrderedDict
net_pt = torch.nn.Sequential(OrderedDict(features=build().features, fc=torch.nn.Linear(16, 10)))
torch.save(net_pt, "net.pt")                        # a pickled module (of torch's classes only): --trust
torch.save(torchvision.models.resnet18().state_dict(), "r18.pt")
torch.save(net().state_dict(), "cnn.pt")
torch.save(vdsr().state_dict(), "sr.pt")
torch.export.save(torch.export.export(m, (torch.zeros(1, 3, 32, 32),)), "model.pt2")
torch.onnx.export(m, (torch.zeros(1, 3, 224, 224),), "model.onnx", dynamo=False)
torch.onnx.export(m, (torch.zeros(1, 3, 32, 32),), "cnn.onnx", dynamo=False)
"""


def _blocks(lang: str) -> list[tuple[int, str]]:
    """(line, text) of each fenced block of ``lang``, indented ones (inside a list item) included."""
    text = README.read_text()
    found = []
    for m in re.finditer(rf"^( *)```{lang}\n(.*?)^\1```", text, re.S | re.M):
        found.append((text[:m.start()].count("\n") + 1, textwrap.dedent(m.group(2))))
    return found


def _commands() -> list[tuple[int, str]]:
    out = []
    for line, block in _blocks("bash"):
        joined = block.replace("\\\n", " ")
        for i, cmd in enumerate(joined.splitlines()):
            if cmd.strip():
                out.append((line + 1 + i, cmd.strip()))
    return out


def _skip(cmd: str) -> str | None:
    return next((why for start, why in SKIP.items() if cmd.startswith(start)), None)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("readme")
    for pkg in ("mypkg", "my"):
        (d / pkg).mkdir()
        (d / pkg / "__init__.py").write_text("")
        (d / pkg / "models.py").write_text(MODELS)
    _run([sys.executable, "-c", MAKE_FILES], d)
    # the main branch's numbers of each model the README gates (a gate compares like with like)
    _run("adderconv energy resnet20_adder --json main.json", d)
    _run("PYTHONPATH=. adderconv energy net.safetensors --arch mypkg.models:build -s 1,3,224,224 --json net-main.json",
         d)
    return d


def _env() -> dict[str, str]:
    # no PYTHONPATH of ours: a README line that needs the working folder on the path must say so itself
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "COLUMNS": "160"}


def _run(cmd, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, shell=isinstance(cmd, str), executable="/bin/bash" if isinstance(cmd, str)
                          else None, env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{cmd}\nexit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def test_every_command_is_run_or_skipped_with_a_reason():
    cmds = _commands()
    assert len(cmds) > 30 and all(c.startswith(("adderconv ", "PYTHONPATH=. adderconv ", "python", "pip", "ruff",
                                                    "torchrun", "OMP_"))
                                  for _, c in cmds), cmds
    assert sum(_skip(c) is None for _, c in cmds) >= 30


def _in_process(cmd: str) -> list[tuple[dict[str, str], list[str]]] | None:
    """``[VAR=value ...] adderconv ARGS [&& ...]`` as (environment, argv) per command, when the line is only that:
    those run through the CLI's ``main()`` in this process (each subprocess would pay torch's import, seconds on
    these machines, for every line); anything else (pipes, redirections, other programs) runs in a shell."""
    if any(c in cmd.split("#")[0] for c in "|;<>$`"):
        return None
    steps = []
    for part in cmd.split("&&"):
        words = shlex.split(part, comments=True)
        env = {}
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        if not words or words[0] != "adderconv" or set(env) - {"PYTHONPATH"}:
            return None
        steps.append((env, words[1:]))
    return steps


@pytest.mark.slow
@pytest.mark.parametrize(("line", "cmd"), _commands(), ids=[f"README:{n}" for n, _ in _commands()])
def test_readme_command(line, cmd, workdir, run_cli, monkeypatch):
    why = _skip(cmd)
    if why:
        pytest.skip(why)
    steps = _in_process(cmd)
    if steps is None:
        _run(cmd, workdir)
        return
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("COLUMNS", "160")
    for env, argv in steps:
        with monkeypatch.context() as m:
            if env.get("PYTHONPATH") == ".":        # the line puts the working folder on the path: so do we
                m.syspath_prepend(str(workdir))
            code, out, err = run_cli(*argv)
        assert code == 0, f"{cmd}\nexit {code}\n{out[-2000:]}\n{err[-3000:]}"


@pytest.mark.slow
@pytest.mark.parametrize(("line", "code"), _blocks("python"), ids=[f"README:{n}" for n, _ in _blocks("python")])
def test_readme_snippet(line, code, workdir):
    first = code.splitlines()[0]
    if "from adderconv.converters import Policy, conversion_report" in code:
        pre = PREAMBLE_CONVERT
    else:
        pre = next((p for start, p in PREAMBLE.items() if first.startswith(start)), None)
    assert pre is not None, f"README line {line}: no preamble for a snippet starting {first!r}"
    (workdir / f"snippet_{line}.py").write_text(textwrap.dedent(pre) + "\n" + code)
    _run([sys.executable, f"snippet_{line}.py"], workdir)
