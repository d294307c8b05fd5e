"""The Triton kernels against the float64 definition, on CPU tensors through Triton's interpreter.

CI (.ci/run) exports TRITON_INTERPRET=1; a local run sets it here if nobody did (before the kernels are
defined, which happens on first use). Skips only when triton is not installed. On a GPU, the same kernels
are checked and timed by benchmarks/gpu_check.py.
"""
import os

import pytest
import torch

os.environ.setdefault("TRITON_INTERPRET", "1")   # before triton is imported: it reads the variable then
pytest.importorskip("triton")

from adderconv.kernels import triton_kernels as tk  # noqa: E402
from adderconv.reference import adder_conv2d_reference, adder_conv2d_reference_grads  # noqa: E402

from conftest import kernel_case as _make, random_kernel_cases as _random_cases  # noqa: E402

if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
    pytest.skip("TRITON_INTERPRET is set to something other than 1 and there is no GPU", allow_module_level=True)

DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"

# small shapes: the interpreter runs every program in Python
CASES = [
    (2, 6, 9, 9, 4, 3, 3, 1, 1, 1, 2),              # groups
    (1, 4, 11, 7, 5, 3, 1, (2, 1), (1, 0), 1, 1),   # non-square kernel, stride, padding
    (2, 4, 9, 12, 6, 2, 4, (1, 3), (0, 2), (2, 1), 2),
    (1, 3, 10, 10, 40, 3, 3, 2, 1, 1, 1),           # more output channels than one block
    (1, 4, 6, 6, 4, 3, 3, 1, 1, 1, 4),              # depthwise
] + _random_cases(4, seed=11)


def _check(case, dtype, tol):
    x, w, conf = _make(case, dtype)
    x, w = x.to(DEVICE), w.to(DEVICE)
    y = tk.forward(x, w, *conf)
    ref = adder_conv2d_reference(x, w, *conf)
    g = torch.randn(ref.shape).to(dtype).to(DEVICE)
    rx, rw = adder_conv2d_reference_grads(g, x, w, *conf)
    gx, gw = tk.grad_input(g, x, w, *conf), tk.grad_weight(g, x, w, *conf)
    for got, want in ((y, ref), (gx, rx), (gw, rw)):
        assert got.dtype == dtype and got.shape == want.shape
        err = (got.double() - want.to(got.device)).abs().max() / want.abs().max().clamp_min(1e-12)
        assert err.item() < tol


@pytest.mark.parametrize("case", CASES, ids=[f"c{i}" for i in range(len(CASES))])
def test_triton_float32(case):
    _check(case, torch.float32, 2e-6)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 1.5e-2)])
def test_triton_low_precision_accumulates_in_float32(dtype, tol):
    """Inputs rounded to 16 bits, sums in float32: the error is the output's rounding, not J of them."""
    _check(CASES[0], dtype, tol)
    _check(CASES[3], dtype, tol)


def test_triton_selected_for_cuda_tensors_only():
    from adderconv import kernels

    assert not tk.supports(torch.randn(2))           # CPU tensors go to the CPU kernels
    if torch.cuda.is_available():
        assert kernels.backend_for(torch.randn(2, device="cuda")) is tk
        assert kernels.backend_for(torch.randn(2, device="cuda", dtype=torch.float64)).__name__.endswith("portable")
