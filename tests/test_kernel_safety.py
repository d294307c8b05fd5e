"""Memory safety of the float adder op: every geometry argument is validated once, in the op, before any kernel
runs (reference, C++ CPU, Triton, portable); the C++ kernels check again themselves (defence in depth); the layers
refuse bad arguments when they are built. And a fuzz of the C++ kernels built with AddressSanitizer and
UndefinedBehaviorSanitizer (random shapes, strides, paddings, dilations, groups; forward and both gradients)
against the float64 reference, which must end with no sanitizer report.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from adderconv import AdderConv1d, AdderConv2d, AdderConv3d, AdderLinear, kernels
from adderconv.kernels import cpu
from adderconv.ops import adder_conv2d, adder_conv3d
from adderconv.reference import adder_conv2d_reference

OPS = {
    "forward": lambda x, w, g, *conf: torch.ops.adderconv.adder_conv2d(x, w, *conf),
    "grad_input": lambda x, w, g, *conf: torch.ops.adderconv.adder_conv2d_grad_input(g, x, w, *conf),
    "grad_weight": lambda x, w, g, *conf: torch.ops.adderconv.adder_conv2d_grad_weight(g, x, w, *conf),
}

X, W = (1, 4, 8, 8), (4, 2, 3, 3)   # groups 2 fit; a valid call is stride 1, padding 1, dilation 1
# (what is wrong, x shape, w shape, stride, padding, dilation, groups, dtype, expected message)
BAD = [
    ("negative stride", X, W, [-1, 1], [1, 1], [1, 1], 2, torch.float32, "stride"),
    ("negative stride, 1x1 kernel", (1, 4, 1, 1), (4, 4, 1, 1), [-1, -1], [0, 0], [1, 1], 1, torch.float32,
     "stride"),
    ("zero stride", X, W, [1, 0], [1, 1], [1, 1], 2, torch.float32, "stride"),
    ("negative dilation", X, W, [1, 1], [1, 1], [-1, 1], 2, torch.float32, "dilation"),
    ("zero dilation", X, W, [1, 1], [1, 1], [1, 0], 2, torch.float32, "dilation"),
    ("negative padding", X, W, [1, 1], [-1, 1], [1, 1], 2, torch.float32, "padding"),
    ("one stride value", X, W, [1], [1, 1], [1, 1], 2, torch.float32, "stride"),
    ("three padding values", X, W, [1, 1], [1, 1, 1], [1, 1], 2, torch.float32, "padding"),
    ("zero groups", X, W, [1, 1], [1, 1], [1, 1], 0, torch.float32, "groups"),
    ("negative groups", X, (4, -2, 3, 3), [1, 1], [1, 1], [1, 1], -2, torch.float32, "groups"),
    ("groups not dividing out channels", (1, 6, 8, 8), (4, 2, 3, 3), [1, 1], [1, 1], [1, 1], 3, torch.float32,
     "groups"),
    ("channels not fitting", X, (4, 3, 3, 3), [1, 1], [1, 1], [1, 1], 2, torch.float32, "channels"),
    ("kernel larger than the input", (1, 4, 2, 2), W, [1, 1], [0, 0], [1, 1], 2, torch.float32, "kernel"),
    ("dilated kernel larger than the input", X, W, [1, 1], [0, 0], [4, 4], 2, torch.float32, "kernel"),
    ("empty kernel", X, (4, 2, 0, 3), [1, 1], [1, 1], [1, 1], 2, torch.float32, "kernel"),
    ("integer input", X, W, [1, 1], [1, 1], [1, 1], 2, torch.int64, "floating"),
    ("boolean input", X, W, [1, 1], [1, 1], [1, 1], 2, torch.bool, "floating"),
    ("3-d input", X[1:], W, [1, 1], [1, 1], [1, 1], 2, torch.float32, "4-d"),
]


def _tensors(xs, ws, dtype):
    x = torch.ones(xs, dtype=dtype) if dtype == torch.bool else torch.randn(xs).to(dtype)
    ws = tuple(abs(d) for d in ws)
    w = torch.ones(ws, dtype=dtype) if dtype == torch.bool else torch.randn(ws).to(dtype)
    return x, w


@pytest.fixture()
def no_kernel(monkeypatch):
    """Any kernel reached is a failure: validation must come first."""
    def fail(x):
        raise AssertionError("a kernel was reached with bad arguments")
    monkeypatch.setattr(kernels, "backend_for", fail)


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_op_refuses_bad_geometry_before_any_kernel(op, case, no_kernel):
    _, xs, ws, s, p, d, groups, dtype, match = case
    x, w = _tensors(xs, ws, dtype)
    g = torch.randn(1, 4, 8, 8)
    with pytest.raises(ValueError, match=match):
        OPS[op](x, w, g, s, p, d, groups)


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_fake_implementation_refuses_the_same(case):
    from torch._subclasses.fake_tensor import FakeTensorMode

    _, xs, ws, s, p, d, groups, dtype, match = case
    with FakeTensorMode():
        x, w = torch.empty(xs, dtype=dtype), torch.empty(tuple(abs(v) for v in ws), dtype=dtype)
        with pytest.raises(ValueError, match=match):
            torch.ops.adderconv.adder_conv2d(x, w, s, p, d, groups)


@pytest.mark.parametrize("op", ["grad_input", "grad_weight"])
@pytest.mark.parametrize("grad_shape", [(1, 4, 8, 7), (1, 2, 8, 8), (2, 4, 8, 8), (4, 8, 8), (1, 4, 4, 4)])
def test_gradient_of_the_wrong_shape_is_refused(op, grad_shape, no_kernel):
    x, w = torch.randn(X), torch.randn(W)
    with pytest.raises(ValueError, match="gradient"):
        OPS[op](x, w, torch.randn(grad_shape), [1, 1], [1, 1], [1, 1], 2)


def test_integer_weight_and_gradient_are_refused(no_kernel):
    x, w = torch.randn(X), torch.randn(W)
    with pytest.raises(ValueError, match="floating"):
        adder_conv2d(x, w.long(), padding=1, groups=2)
    with pytest.raises(ValueError, match="floating"):
        OPS["grad_input"](x, w, torch.ones(1, 4, 8, 8, dtype=torch.long), [1, 1], [1, 1], [1, 1], 2)


def test_public_functions_refuse_bad_geometry():
    x, w = torch.randn(X), torch.randn(W)
    with pytest.raises(ValueError, match="stride"):
        adder_conv2d(x, w, stride=0, groups=2)
    with pytest.raises(ValueError, match="dilation"):
        adder_conv2d(x, w, dilation=-1, groups=2)
    with pytest.raises(ValueError, match="floating"):
        adder_conv2d(torch.ones(X, dtype=torch.long), torch.ones(W, dtype=torch.long), groups=2)
    x3, w3 = torch.randn(1, 2, 4, 6, 6), torch.randn(3, 2, 2, 3, 3)
    for kw, name in (({"stride": (-1, 1, 1)}, "stride"), ({"stride": (0, 1, 1)}, "stride"),
                     ({"dilation": (-1, 1, 1)}, "dilation"), ({"padding": (-1, 0, 0)}, "padding")):
        with pytest.raises(ValueError, match=name):
            adder_conv3d(x3, w3, **kw)


def test_mixed_float_dtypes_compute_in_the_input_dtype():
    """Under autocast an adder layer sees a low-precision input and a float32 weight: every backend computes in
    the input's dtype (the C++ kernel used to refuse a float32 input with a float64 weight)."""
    x, w = torch.randn(X), torch.randn(W, dtype=torch.float64)
    y = adder_conv2d(x, w, padding=1, groups=2)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), adder_conv2d_reference(x, w.float(), padding=1, groups=2),
                               rtol=1e-5, atol=1e-4)


def test_valid_edge_geometries_still_run():
    """What validation must not refuse: a 1x1 kernel, a kernel exactly the padded input, an empty batch."""
    for xs, ws, conf in (((2, 3, 1, 1), (4, 3, 1, 1), {}),
                         ((1, 2, 3, 3), (2, 2, 5, 5), {"padding": 1}),
                         ((0, 2, 5, 5), (3, 2, 3, 3), {"stride": 2}),
                         ((1, 4, 9, 9), (4, 1, 3, 3), {"dilation": 4, "groups": 4})):
        x, w = torch.randn(xs), torch.randn(ws)
        torch.testing.assert_close(adder_conv2d(x, w, **conf).double(), adder_conv2d_reference(x, w, **conf),
                                   rtol=1e-5, atol=1e-4)


BAD_NATIVE = [   # (what, stride, padding, dilation, groups): the C++ kernel's own checks
    ("negative stride", [-1, 1], [0, 0], [1, 1], 1),
    ("zero stride", [1, 0], [0, 0], [1, 1], 1),
    ("negative dilation", [1, 1], [0, 0], [1, -1], 1),
    ("negative padding", [1, 1], [-1, 0], [1, 1], 1),
    ("short stride list", [1], [0, 0], [1, 1], 1),
    ("zero groups", [1, 1], [0, 0], [1, 1], 0),
]


@pytest.mark.skipif(not cpu.available(), reason="no C++ compiler: the CPU kernels cannot be built")
@pytest.mark.parametrize("case", BAD_NATIVE, ids=[c[0] for c in BAD_NATIVE])
def test_cpu_kernel_checks_its_arguments_itself(case):
    _, s, p, d, groups = case
    ext = cpu.extension()
    x, w = torch.randn(1, 2, 6, 6), torch.randn(2, 2, 1, 1)
    with pytest.raises(RuntimeError, match="adder_conv2d"):
        ext.forward(x, w, s, p, d, groups)
    with pytest.raises(RuntimeError, match="adder_conv2d"):
        ext.grad_input(torch.randn(1, 2, 6, 6), x, w, s, p, d, groups)


@pytest.mark.skipif(not cpu.available(), reason="no C++ compiler: the CPU kernels cannot be built")
def test_cpu_kernel_checks_gradient_shape_and_dtypes():
    ext = cpu.extension()
    x, w = torch.randn(1, 2, 6, 6), torch.randn(2, 2, 3, 3)
    for g in (torch.randn(1, 2, 3, 3), torch.randn(1, 2, 4, 4).double()):
        with pytest.raises(RuntimeError, match="adder_conv2d"):
            ext.grad_input(g, x, w, [1, 1], [0, 0], [1, 1], 1)
    with pytest.raises(RuntimeError, match="adder_conv2d"):
        ext.forward(x, w.double(), [1, 1], [0, 0], [1, 1], 1)
    with pytest.raises(RuntimeError, match="adder_conv2d"):
        ext.forward(x, torch.randn(2, 2, 0, 3), [1, 1], [1, 1], [1, 1], 1)


LAYERS = [
    ("stride -1", lambda: AdderConv2d(3, 4, 3, stride=-1), "stride"),
    ("stride 0", lambda: AdderConv2d(3, 4, 3, stride=(1, 0)), "stride"),
    ("dilation -1", lambda: AdderConv2d(3, 4, 3, dilation=-1), "dilation"),
    ("dilation 0", lambda: AdderConv2d(3, 4, 3, dilation=0), "dilation"),
    ("padding -1", lambda: AdderConv2d(3, 4, 3, padding=-1), "padding"),
    ("kernel 0", lambda: AdderConv2d(3, 4, 0), "kernel_size"),
    ("kernel -3", lambda: AdderConv2d(3, 4, (3, -3)), "kernel_size"),
    ("groups 0", lambda: AdderConv2d(4, 4, 3, groups=0), "groups"),
    ("groups -2", lambda: AdderConv2d(4, 4, 3, groups=-2), "groups"),
    ("in_channels 0", lambda: AdderConv2d(0, 4, 3), "in_channels"),
    ("out_channels -4", lambda: AdderConv2d(3, -4, 3), "out_channels"),
    ("stride 1.5", lambda: AdderConv2d(3, 4, 3, stride=1.5), "stride"),
    ("1d stride -1", lambda: AdderConv1d(3, 4, 3, stride=-1), "stride"),
    ("1d padding -2", lambda: AdderConv1d(3, 4, 3, padding=-2), "padding"),
    ("3d stride 0", lambda: AdderConv3d(3, 4, 3, stride=(0, 1, 1)), "stride"),
    ("3d dilation -1", lambda: AdderConv3d(3, 4, 3, dilation=-1), "dilation"),
    ("3d padding -1", lambda: AdderConv3d(3, 4, 3, padding=(0, -1, 0)), "padding"),
    ("3d kernel 0", lambda: AdderConv3d(3, 4, (0, 3, 3)), "kernel_size"),
    ("linear in 0", lambda: AdderLinear(0, 3), "in_features"),
    ("linear out -1", lambda: AdderLinear(3, -1), "out_features"),
]


@pytest.mark.parametrize("case", LAYERS, ids=[c[0] for c in LAYERS])
def test_layers_refuse_bad_arguments_when_built(case):
    _, build, match = case
    with pytest.raises(ValueError, match=match):
        build()


# --- the sanitizer fuzz ------------------------------------------------------------------------------------------

_FUZZ = r'''
import os, random, sys
import torch
from torch.utils import cpp_extension
sys.path.insert(0, os.environ["ADDERCONV_ROOT"])
os.environ["ADDERCONV_KERNEL"] = "cpu"           # the op must run the sanitized C++ kernels, never a fallback
from adderconv.kernels import cpu
from adderconv.ops import adder_conv2d
from adderconv.reference import adder_conv2d_reference, adder_conv2d_reference_grads

ext = cpp_extension.load(os.environ["FUZZ_NAME"], os.environ["FUZZ_SOURCES"].split(os.pathsep),
                         build_directory=os.environ["FUZZ_BUILD"], verbose=False,
                         extra_cflags=os.environ["FUZZ_CFLAGS"].split(),
                         extra_ldflags=os.environ["FUZZ_LDFLAGS"].split())
cpu._EXTENSION._module = ext                      # the op's CPU backend now calls the sanitized build
assert cpu.extension() is ext
seed = int(os.environ["FUZZ_SEED"])
rng = random.Random(seed)
torch.manual_seed(seed)
torch.set_num_threads(2)
runs = 0
while runs < int(os.environ["FUZZ_CASES"]):
    groups = rng.choice([1, 1, 2, 3])
    cg, og = rng.randint(1, 4), rng.randint(1, 5)
    kh, kw = rng.randint(1, 4), rng.randint(1, 4)
    sh, sw = rng.randint(1, 4), rng.randint(1, 4)
    ph, pw = rng.randint(0, 3), rng.randint(0, 3)
    dh, dw = rng.randint(1, 3), rng.randint(1, 3)
    h, w = rng.randint(1, 23), rng.randint(1, 41)
    n = rng.randint(1, 3)
    if h + 2 * ph < dh * (kh - 1) + 1 or w + 2 * pw < dw * (kw - 1) + 1:
        continue   # the op refuses these before any kernel (tested in the main process)
    dtype = rng.choice([torch.float32, torch.float64])
    x = torch.randn(n, cg * groups, h, w, dtype=dtype, requires_grad=True)
    wt = torch.randn(og * groups, cg, kh, kw, dtype=dtype, requires_grad=True)
    conf = dict(stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), groups=groups)
    y = adder_conv2d(x, wt, **conf)                # forward and both gradients through the op, as in training
    g = torch.randn_like(y)
    y.backward(g)
    ref = adder_conv2d_reference(x, wt, **conf)
    gx, gw = adder_conv2d_reference_grads(g, x, wt, **conf)
    tol = dict(rtol=1e-4, atol=1e-3) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-8)
    where = f"x {tuple(x.shape)} w {tuple(wt.shape)} {conf} {dtype}"
    torch.testing.assert_close(y.double(), ref, **tol, msg=lambda m: f"forward {where}: {m}")
    torch.testing.assert_close(x.grad.double(), gx, **tol, msg=lambda m: f"grad_input {where}: {m}")
    torch.testing.assert_close(wt.grad.double(), gw, **tol, msg=lambda m: f"grad_weight {where}: {m}")
    runs += 1
# the kernel's own checks under the sanitizers: refused before anything is read or written. A negative dilation
# with a 3x3 kernel, or a negative stride with a 1x1 one, gives a positive output size (the old kernel took them
# and read and wrote outside its buffers); a zero stride divides by zero; short lists are read past their end.
for xs, ws, s, p, d, grp in (((1, 2, 6, 6), (2, 2, 3, 3), [1, 1], [0, 0], [-1, 1], 1),
                             ((1, 2, 6, 6), (2, 2, 3, 3), [1, 1], [1, 1], [1, -2], 1),
                             ((1, 2, 1, 1), (2, 2, 1, 1), [-1, -1], [0, 0], [1, 1], 1),
                             ((1, 2, 6, 6), (2, 2, 3, 3), [1, 1], [-1, 0], [1, 1], 1),
                             ((1, 2, 6, 6), (2, 2, 1, 1), [0, 1], [0, 0], [1, 1], 1),
                             ((1, 2, 6, 6), (2, 2, 3, 3), [1], [0], [1], 1),
                             ((1, 2, 6, 6), (2, 2, 3, 3), [1, 1], [0, 0], [1, 1], 0),
                             ((1, 2, 6, 6), (2, 2, 0, 3), [1, 1], [1, 1], [1, 1], 1)):
    x, wt = torch.randn(xs), torch.randn(ws)
    ho = (xs[2] + 2 * p[0] - d[0] * (ws[2] - 1) - 1) // s[0] + 1 if len(s) == 2 and s[0] and grp else 1
    wo = (xs[3] + 2 * p[-1] - d[-1] * (ws[3] - 1) - 1) // s[-1] + 1 if len(s) == 2 and s[-1] and grp else 1
    g = torch.randn(xs[0], ws[0], max(ho, 1), max(wo, 1))
    for call in (lambda: ext.forward(x, wt, s, p, d, grp), lambda: ext.grad_input(g, x, wt, s, p, d, grp)):
        try:
            call()
        except RuntimeError:
            continue
        raise SystemExit(f"the kernel accepted x {xs} w {ws} stride {s} padding {p} dilation {d} groups {grp}")
print(f"FUZZ OK {runs}")
'''


def _gcc_library(name: str) -> str | None:
    try:
        out = subprocess.run(["g++", f"-print-file-name={name}"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    path = out.stdout.strip()
    return os.path.realpath(path) if out.returncode == 0 and os.path.isabs(path) and os.path.exists(path) else None


def _sanitizer_preload() -> str | None:
    """The ASan runtime first (it must come before every other library), then libstdc++: a C++ library that
    python loads later (triton's) otherwise throws through an interceptor that found no real __cxa_throw."""
    asan, stdcpp = _gcc_library("libasan.so"), _gcc_library("libstdc++.so.6")
    return f"{asan} {stdcpp}" if asan and stdcpp else None


_SANITIZE = "-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined"


def _run_sanitized(tmp_path: Path, prefix: str, sources: Sequence[Path], cflags: str, script: str,
                   cases: int) -> None:
    """Build ``sources`` (one extension) with ``cflags`` + the sanitizers (a build of its own, outside the kernel
    cache), run ``script`` in a subprocess with the ASan runtime preloaded, and fail on any sanitizer report."""
    preload = _sanitizer_preload()
    if preload is None:
        pytest.fail("no ASan runtime (g++ -print-file-name=libasan.so): install GCC's libasan to run this test")
    from adderconv.kernels.build import build_key, cache_dir

    texts = [f.read_text() for f in sorted(sources[0].parent.glob("*.h"))] + [f.read_text() for f in sources]
    name = build_key(prefix, *texts, torch.__version__, sys.version, cflags)
    build = cache_dir().parent / "sanitized" / name     # never inside the kernel cache the library loads from
    build.mkdir(parents=True, exist_ok=True)
    (tmp_path / "fuzz.py").write_text(textwrap.dedent(script))
    env = {**os.environ, "LD_PRELOAD": preload, "ADDERCONV_ROOT": str(Path(__file__).resolve().parents[1]),
           "FUZZ_NAME": name, "FUZZ_SOURCES": os.pathsep.join(map(str, sources)), "FUZZ_BUILD": str(build),
           "FUZZ_CFLAGS": f"{cflags} {_SANITIZE}", "FUZZ_LDFLAGS": "-fopenmp -fsanitize=address,undefined",
           "FUZZ_SEED": "0", "FUZZ_CASES": str(cases),
           # python itself "leaks" at exit; everything else halts with a report and a non-zero exit
           "ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=99",
           "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1:exitcode=98"}
    proc = subprocess.run([sys.executable, str(tmp_path / "fuzz.py")], env=env, capture_output=True, text=True,
                          timeout=900)
    report = proc.stdout + proc.stderr
    found = [i for i, line in enumerate(report.splitlines()) if "Sanitizer" in line or "runtime error:" in line]
    first = "\n".join(report.splitlines()[found[0]:found[0] + 12]) if found else report[-3000:]
    assert proc.returncode == 0 and not found, f"exit {proc.returncode}:\n{first}"
    assert f"FUZZ OK {cases}" in proc.stdout, report[-3000:]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sanitizer build is tested on Linux (GCC)")
def test_cpu_kernels_fuzzed_under_address_and_undefined_behaviour_sanitizers(tmp_path):
    """The float C++ kernels with -fsanitize=address,undefined, over random geometries: forward and both gradients
    through the op (dX is ours, dW oneDNN's plus a rank-1 term) equal the float64 reference, the kernel refuses bad
    arguments itself, and the sanitizers say nothing. The production flags, so the same vector width and tiles."""
    _run_sanitized(tmp_path, "adderconv_cpu_sanitized", cpu.SOURCES, "-march=native -fopenmp", _FUZZ, 300)


_FUZZ_INT8 = r"""
import os, random, sys
import torch
from torch.utils import cpp_extension
sys.path.insert(0, os.environ["ADDERCONV_ROOT"])
from adderconv.kernels import int8, int8_portable
from adderconv.quant.op import adder_conv2d_int8, adder_conv2d_int8_residual, quantize_uint8

ext = cpp_extension.load(os.environ["FUZZ_NAME"], os.environ["FUZZ_SOURCES"].split(os.pathsep),
                         build_directory=os.environ["FUZZ_BUILD"], verbose=False,
                         extra_cflags=os.environ["FUZZ_CFLAGS"].split(),
                         extra_ldflags=os.environ["FUZZ_LDFLAGS"].split())
int8._ext = ext                                   # the op's C++ path now calls the sanitized build
assert int8.extension() is ext and int8.available()
isas = int8.supported_isas()
seed = int(os.environ["FUZZ_SEED"])
rng = random.Random(seed)
torch.manual_seed(seed)
runs = 0
while runs < int(os.environ["FUZZ_CASES"]):
    groups = rng.choice([1, 1, 2, 3])
    cg, og = rng.choice([1, 3, 8, 16, rng.randint(1, 20)]), rng.randint(1, 19)
    kh, kw = rng.randint(1, 3), rng.randint(1, 3)
    s, p, d = [rng.randint(1, 3), rng.randint(1, 3)], [rng.randint(0, 2), rng.randint(0, 2)], \
        [rng.randint(1, 2), rng.randint(1, 2)]
    h, w, n = rng.randint(1, 11), rng.randint(1, 13), rng.randint(1, 2)
    if h + 2 * p[0] < d[0] * (kh - 1) + 1 or w + 2 * p[1] < d[1] * (kw - 1) + 1:
        continue
    o, z, lo = og * groups, rng.randint(0, 255), rng.randint(0, 255)
    x = torch.randint(0, 256, (n, h, w, cg * groups), dtype=torch.uint8)
    wt = torch.randint(0, 256, (o, cg, kh, kw), dtype=torch.uint8)
    scale, shift = torch.randn(o) * 0.01, torch.randn(o) * 10
    mode = rng.choice(["int32", "float", "uint8"])
    m = {"int32": 0, "float": 1, "uint8": 2}[mode]
    want = int8_portable.adder_int8(x, wt, z, s, p, d, groups, scale, shift, m, lo)
    sums = int8_portable.sums(x, wt, z, s, p, d, groups)
    res = torch.randn(sums.shape)
    want_y, want_q = int8_portable.residual_epilogue(sums, scale, shift, res, True, 0.05, 7)
    for isa in isas:
        int8.set_isa(isa)
        y = adder_conv2d_int8(x, wt, z, s, p, d, groups, scale=scale, shift=shift, mode=mode, lo=lo)
        assert torch.equal(y, want), f"{isa} {mode} x {tuple(x.shape)} w {tuple(wt.shape)} s{s} p{p} d{d} g{groups}"
        ry, rq = adder_conv2d_int8_residual(x, wt, z, s, p, d, groups, scale=scale, shift=shift, residual=res,
                                            relu=True, codes_scale=0.05, codes_zero_point=7)
        assert torch.equal(ry, want_y) and torch.equal(rq, want_q), f"{isa} residual s{s} p{p} d{d} g{groups}"
        xf = torch.randn(n, cg * groups, h, w) * 3
        assert torch.equal(quantize_uint8(xf, 0.02, z, lo), int8_portable.quantize(xf, torch.tensor(0.02), z, lo))
    runs += 1
# the kernel's own refusals under the sanitizers
packed = int8.pack(torch.zeros(2, 8, 3, 3, dtype=torch.uint8), 3, 1)
xb, one, zero = torch.zeros(1, 6, 6, 8, dtype=torch.uint8), torch.ones(2), torch.zeros(2)
for call in (lambda: ext.forward(xb, packed, 2, 3, 3, 3, [1, 1], [0, 0], [-1, 1], 1, one, zero, 0, 0, -1),
             lambda: ext.forward(xb, packed, 2, 3, 3, 3, [0, 1], [0, 0], [1, 1], 1, one, zero, 0, 0, -1),
             lambda: ext.forward(xb, packed, 2, 3, 3, 3, [1], [0], [1], 1, one, zero, 0, 0, -1),
             lambda: ext.forward(xb, packed, 2, 3, 3, 3, [1, 1], [0, 0], [1, 1], 1, one, zero, 2, -5, -1),
             lambda: ext.forward(xb, packed, 2, 3, 3, 300, [1, 1], [0, 0], [1, 1], 1, one, zero, 0, 0, -1),
             lambda: ext.forward(xb, packed, 2, 3, 3, 3, [1, 1], [0, 0], [1, 1], 1, torch.tensor([1, float("nan")]),
                                 zero, 1, 0, -1),
             lambda: ext.quantize(torch.randn(1, 2, 3, 3), float("nan"), 0, 0),
             lambda: ext.quantize(torch.randn(1, 2, 3, 3), 0.1, 999, 0)):
    try:
        call()
    except (RuntimeError, ValueError):
        continue
    raise SystemExit("the int8 kernel accepted a bad argument")
print(f"FUZZ OK {runs}")
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sanitizer build is tested on Linux (GCC)")
def test_int8_kernels_fuzzed_under_address_and_undefined_behaviour_sanitizers(tmp_path):
    """The int8 C++ kernels with -fsanitize=address,undefined, over random geometries, zero points, floors and
    epilogues, on every vector path this CPU has: sums, float and requantised epilogues, the fused residual and the
    quantiser equal the PyTorch integer fallback exactly; bad arguments are refused; the sanitizers say nothing."""
    from adderconv.kernels import int8

    _run_sanitized(tmp_path, "adderconv_int8_sanitized", int8.SOURCES, "-ffp-contract=off -fno-trapping-math -fopenmp",
                   _FUZZ_INT8, 100)
