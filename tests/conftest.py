import os

# Triton reads TRITON_INTERPRET when it is imported: set it before any test (or torch) imports triton, so the
# Triton kernels run on CPU tensors through the interpreter (tests/test_kernels_triton.py). CI sets it too.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def with_bn_stats():
    """``with_bn_stats(net, shape=(3, 32, 32), seed=0)``: ``net`` in eval mode with BatchNorms holding real
    statistics of random inputs (a random net's default ones kill every ReLU)."""
    def fill(net: torch.nn.Module, shape: tuple[int, ...] = (3, 32, 32), seed: int = 0) -> torch.nn.Module:
        torch.manual_seed(seed)
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None
        net.train()
        with torch.no_grad():
            net(torch.randn(32, *shape))
        return net.eval()

    return fill


class _Fn(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


@pytest.fixture(scope="session")
def fn_module():
    """``fn_module(f)``: a module whose forward is ``f`` (to count a few ops of a function as a model)."""
    return _Fn


@pytest.fixture()
def run_cli(monkeypatch, capsys):
    """Run ``adderconv ARGS`` in-process through ``main()``'s error boundary: (exit code, stdout, stderr)."""
    import sys

    from adderconv import cli

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["adderconv", *map(str, args)])
        monkeypatch.delenv("ADDERCONV_DEBUG", raising=False)
        try:
            cli.main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture()
def energy(run_cli, monkeypatch):
    """``adderconv energy ARGS`` through ``main()`` at a fixed terminal width: (exit code, stdout, stderr)."""
    monkeypatch.setenv("COLUMNS", "100")
    return lambda *args: run_cli("energy", *args)
