import os

# Triton reads TRITON_INTERPRET when it is imported: set it before any test (or torch) imports triton, so the
# Triton kernels run on CPU tensors through the interpreter (tests/test_kernels_triton.py). CI sets it too.
os.environ.setdefault("TRITON_INTERPRET", "1")

import contextlib  # noqa: E402
import random  # noqa: E402
import warnings  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

# Shared test helpers live here, never imported from one test module into another. Fixtures where a test can
# ask for one; plain helpers (``from conftest import ...``) where a module needs them at collection time, to
# build its parameter lists.


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


# --- kernels (tests/test_kernels.py, tests/test_kernels_triton.py) ---

def random_kernel_cases(count: int, seed: int = 3, max_stride: int = 3, max_size: int = 19) -> list[tuple]:
    """``count`` seeded kernel test cases: groups, dilation, stride, padding, non-square everything."""
    rng = random.Random(seed)
    cases = []
    while len(cases) < count:
        groups = rng.choice([1, 1, 2, 3])
        cg, og = rng.randint(1, 5), rng.randint(1, 9)
        kh, kw = rng.randint(1, 4), rng.randint(1, 4)
        sh, sw = rng.randint(1, max_stride), rng.randint(1, max_stride)
        dh, dw = rng.randint(1, 2), rng.randint(1, 2)
        ph, pw = rng.randint(0, 2), rng.randint(0, 2)
        h, w = rng.randint(1, max_size), rng.randint(1, max_size)
        if (h + 2 * ph - dh * (kh - 1) - 1) < 0 or (w + 2 * pw - dw * (kw - 1) - 1) < 0:
            continue
        cases.append((rng.randint(1, 3), cg * groups, h, w, og * groups, kh, kw, (sh, sw), (ph, pw), (dh, dw), groups))
    return cases


def kernel_case(case, dtype=torch.float32):
    """Random input, weight and (stride, padding, dilation, groups) of a kernel test case tuple."""
    n, c, h, w, o, kh, kw, stride, padding, dilation, groups = case
    x = torch.randn(n, c, h, w, dtype=dtype)
    weight = torch.randn(o, c // groups, kh, kw, dtype=dtype) * 0.5
    pair = lambda v: list(v) if isinstance(v, tuple) else [v, v]  # noqa: E731
    return x, weight, (pair(stride), pair(padding), pair(dilation), groups)


# --- conversion's hard case (tests/test_convert.py, tests/test_convert_aten.py) ---

class HardCase(nn.Module):
    """Nested containers, a shared module, a functional conv, reflect / 'same' padding, dilation, depthwise and
    grouped convs, Conv1d, a conv with bias and no BN, a ModuleDict."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(16)
        self.blocks = nn.Sequential(
            nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, padding_mode="reflect", bias=False), nn.BatchNorm2d(16),
                          nn.ReLU()),
            nn.Sequential(nn.Conv2d(16, 16, 3, padding="same", dilation=2, bias=False), nn.BatchNorm2d(16)),
        )
        self.shared = nn.Conv2d(16, 16, 1)
        self.shared_again = self.shared                       # the same module under a second name
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.dw_bn = nn.BatchNorm2d(16)
        self.grouped = nn.Conv2d(16, 32, 3, stride=2, padding=1, groups=4, bias=False)
        self.grouped_bn = nn.BatchNorm2d(32)
        self.func_weight = nn.Parameter(torch.randn(32, 32, 3, 3) * 0.05)
        self.heads = nn.ModuleDict({"a": nn.Conv2d(32, 8, 1, bias=True), "unused": nn.Conv2d(32, 8, 1)})
        self.seq = nn.Conv1d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))
        x = self.blocks(x)
        x = self.shared_again(F.relu(self.shared(x)))
        x = F.relu(self.dw_bn(self.dw(x)))
        x = F.relu(self.grouped_bn(self.grouped(x)))
        x = F.conv2d(x, self.func_weight, padding=1)          # functional: only the ATen rewrite reaches it
        x = self.heads["a"](x)                                # conv + bias, no BN after it
        x = self.seq(x.mean(3))
        return self.fc(x.mean(2))


X = torch.randn(2, 3, 16, 16)


# --- torchvision's zoo, counted (tests/test_analysis_models.py, tests/test_analysis_captures_agree.py) ---

@contextlib.contextmanager
def _no_random_init():
    """Skip torch.nn.init while building: weights stay uninitialised memory (values do not change counts),
    buffers computed in constructors (e.g. Swin's relative position index) stay real."""
    saved = {n: f for n, f in vars(torch.nn.init).items() if n.endswith("_") and not n.startswith("_")
             and callable(f)}
    for n in saved:
        setattr(torch.nn.init, n, lambda tensor, *a, **k: tensor)
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.nn.init, n, f)


def _build(name, size):
    import torchvision

    kwargs = {"image_size": size} if name.startswith("vit_") else {}   # ViTs fix their input size at build
    with _no_random_init(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torchvision.models.get_model(name, **kwargs).eval()


def count_smallest(name):
    """(model, input, our counts) at the smallest input in (32, 64, 224, 299) the model accepts, or None."""
    from adderconv.analysis import count_ops

    for size in (32, 64, 112, 224, 299):
        if name.startswith("vit_") and size % int(name.split("_")[-1]):
            continue
        try:
            model = _build(name, size)
            x = torch.zeros(1, 3, size, size)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # the tracer's ops, as fvcore sees them (the dispatch capture equals it layer by layer:
                # tests/test_analysis_captures_agree.py)
                return model, x, count_ops(model, x, capture="jit")
        except Exception:   # noqa: BLE001  (too small for this architecture, or untraceable: next size)
            continue
    return None


