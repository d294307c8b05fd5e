"""Every CPU kernel backend against the float64 definition (adderconv.reference), on random shapes.

The cases are drawn from a seeded generator (groups, dilation, stride, padding, non-square everything, output
sizes that cross the C++ kernels' tile boundaries mid-row, channel counts that leave register-block tails);
tall stride-1 inputs span several of the C++ kernels' padded row bands.
"""
import warnings

import pytest
import torch

from adderconv import adder_conv2d, kernels
from adderconv.kernels import cpu, portable
from adderconv.reference import adder_conv2d_reference, adder_conv2d_reference_grads

from conftest import kernel_case as _make, random_kernel_cases as _random_cases  # tests/conftest.py


CASES = [
    (2, 16, 12, 12, 8, 3, 3, 1, 1, 1, 1),          # 144 positions: tiles of 64 cross rows
    (3, 6, 20, 17, 10, 3, 3, 2, 1, 1, 2),          # stride 2, groups, odd width
    (2, 8, 9, 9, 8, 3, 3, 1, 1, 1, 8),             # depthwise
    (2, 7, 6, 6, 5, 1, 1, 1, 0, 1, 1),             # 1x1, channel tails
    (1, 4, 13, 11, 6, 3, 3, 1, 2, 2, 1),           # dilation
    (2, 3, 40, 23, 5, 3, 3, 1, 1, 1, 1),           # stride 1, several bands
    (1, 4, 30, 9, 6, 3, 2, 1, (3, 0), (2, 1), 1),  # stride 1: padding wider than the kernel, uneven dilation
    (2, 64, 8, 8, 64, 3, 3, 1, 1, 1, 1),           # ResNet-20's last stage: one band, a partial last tile
    (1, 6, 7, 5, 194, 3, 3, 2, 1, 1, 2),           # 97 output channels per group: dX runs in two chunks
] + _random_cases(14) + _random_cases(6, seed=5, max_stride=1, max_size=40)


BACKENDS = [pytest.param(portable, id="portable"), pytest.param(cpu, id="cpu")]


@pytest.fixture(scope="module", autouse=True)
def _built():
    if not cpu.available():
        pytest.fail("the C++ CPU kernels did not build on this machine (see the warning)")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES, ids=[f"c{i}" for i in range(len(CASES))])
def test_kernel_matches_reference(backend, dtype, case):
    x, w, conf = _make(case, dtype)
    y = backend.forward(x, w, *conf)
    ref = adder_conv2d_reference(x, w, *conf)
    g = torch.randn(ref.shape, dtype=dtype)
    rx, rw = adder_conv2d_reference_grads(g, x, w, *conf)
    gx, gw = backend.grad_input(g, x, w, *conf), backend.grad_weight(g, x, w, *conf)
    assert y.dtype == gx.dtype == gw.dtype == dtype
    tol = dict(rtol=1e-5, atol=2e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(y.double(), ref, **tol)
    torch.testing.assert_close(gx.double(), rx, **tol)
    torch.testing.assert_close(gw.double(), rw, **tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 1.5e-2)])
def test_cpu_low_precision(dtype, tol):
    x, w, conf = _make(CASES[1], dtype)
    y = cpu.forward(x, w, *conf)
    ref = adder_conv2d_reference(x, w, *conf)          # from the same rounded inputs
    g = torch.randn(ref.shape).to(dtype)
    rx, rw = adder_conv2d_reference_grads(g, x, w, *conf)
    for got, want in ((y, ref), (cpu.grad_input(g, x, w, *conf), rx), (cpu.grad_weight(g, x, w, *conf), rw)):
        assert got.dtype == dtype
        assert ((got.double() - want).abs().max() / want.abs().max()).item() < tol


@pytest.mark.parametrize("offset", [5.0, 50.0])
def test_cpu_offset_inputs_stay_accurate(offset):
    """The C++ kernels use |x-w| = x + w - 2 min(x, w) and clamp(w-x) = clamp(w, x-1, x+1) - x; with values
    far from zero those sums cancel. The error must stay at float32 rounding of a sum of that many terms of
    that magnitude (about eps * sqrt(terms) * magnitude; the bound has a 4x margin)."""
    x = offset + torch.randn(3, 16, 10, 10)
    w = offset + 0.5 * torch.randn(8, 16, 3, 3)
    conf = ([1, 1], [1, 1], [1, 1], 1)
    ref = adder_conv2d_reference(x, w, *conf)
    g = torch.randn(ref.shape)
    rx, _ = adder_conv2d_reference_grads(g, x, w, *conf)
    eps = torch.finfo(torch.float32).eps
    terms_y, terms_dx = 16 * 9, 8 * 9          # J per output; O x taps per input pixel
    assert (cpu.forward(x, w, *conf).double() - ref).abs().max() < 4 * eps * terms_y ** 0.5 * ref.abs().max()
    dx_err = (cpu.grad_input(g, x, w, *conf).double() - rx).abs().max()
    assert dx_err < 4 * eps * terms_dx ** 0.5 * (offset + 4) * g.abs().max()


def test_op_dispatches_cpu_tensors_to_the_cpu_kernels():
    assert kernels.backend_for(torch.randn(1, 1, 2, 2)) is cpu
    assert kernels.backend_for(torch.randn(1, 1, 2, 2, dtype=torch.float16)) is cpu
    assert kernels.backend_for(torch.randint(0, 3, (1, 1, 2, 2))) is portable      # integers: only portable


def test_op_end_to_end_through_the_cpu_backend(monkeypatch):
    x, w, (s, p, d, groups) = _make(CASES[1])
    x.requires_grad_(True)
    w.requires_grad_(True)
    y = adder_conv2d(x, w, s, p, d, groups)
    g = torch.randn_like(y)
    y.backward(g)
    rx, rw = adder_conv2d_reference_grads(g, x, w, s, p, d, groups)
    torch.testing.assert_close(y.double(), adder_conv2d_reference(x, w, s, p, d, groups), rtol=1e-5, atol=2e-4)
    torch.testing.assert_close(x.grad.double(), rx, rtol=1e-5, atol=2e-4)
    torch.testing.assert_close(w.grad.double(), rw, rtol=1e-5, atol=2e-4)


def test_forced_backend_and_fallback_without_compiler(monkeypatch):
    x = torch.randn(1, 2, 5, 5)
    monkeypatch.setenv("ADDERCONV_KERNEL", "portable")
    assert kernels.backend_for(x) is portable
    monkeypatch.delenv("ADDERCONV_KERNEL")
    # a machine where the build failed: one warning, then the portable kernels
    from adderconv.kernels.build import Extension

    broken = Extension(cpu.extension_name, [], cflags=[], ldflags=[], what="CPU adder kernels")
    broken._failed = "adderconv: could not build the CPU adder kernels (no compiler)"
    monkeypatch.setattr(cpu, "_EXTENSION", broken)
    monkeypatch.setattr(cpu.available, "_warned", False, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert kernels.backend_for(x) is portable
        y = adder_conv2d(x, torch.randn(3, 2, 3, 3), padding=1)
    assert sum("portable kernels" in str(c.message) for c in caught) == 1
    assert y.shape == (1, 3, 5, 5)


def test_build_cache_is_keyed_by_cpu(monkeypatch):
    """-march=native code must not be loaded on another CPU model sharing the cache directory."""
    before = cpu.extension_name()
    assert before == cpu.extension_name()
    monkeypatch.setattr(cpu, "_cpu_fingerprint", lambda: "model name: another CPU\nflags: sse2")
    assert cpu.extension_name() != before
