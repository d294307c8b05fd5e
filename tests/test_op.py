"""The adder op against the float64 definition (adderconv.reference), forward and AdderNet gradients."""
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from adderconv import adder_conv2d
from adderconv.reference import adder_conv2d_reference, adder_conv2d_reference_grads

# (N, C, H, W, O, kh, kw, stride, padding, dilation, groups)
CASES = [
    (2, 3, 8, 8, 4, 3, 3, 1, 1, 1, 1),
    (1, 4, 7, 9, 6, 3, 3, 2, 1, 1, 1),           # batch 1, non-square, stride 2
    (2, 6, 10, 10, 6, 3, 3, 1, 2, 2, 1),         # dilation
    (2, 6, 9, 9, 4, 3, 3, 1, 1, 1, 2),           # groups
    (2, 8, 9, 9, 8, 3, 3, 1, 1, 1, 8),           # depthwise
    (3, 5, 6, 6, 7, 1, 1, 1, 0, 1, 1),           # 1x1
    (2, 4, 11, 7, 5, (3, 1), (3, 1), (2, 1), (1, 0), (1, 1), 1),  # non-square kernel/stride (kh, kw given as pairs)
    (2, 4, 9, 12, 6, 2, 4, (1, 3), (0, 2), (2, 1), 2),            # everything asymmetric
]


def _make(case, dtype=torch.float32):
    n, c, h, w, o, kh, kw, stride, padding, dilation, groups = case
    kh = kh[0] if isinstance(kh, tuple) else kh
    kw = kw[1] if isinstance(kw, tuple) else kw
    x = torch.randn(n, c, h, w, dtype=dtype)
    weight = torch.randn(o, c // groups, kh, kw, dtype=dtype) * 0.5
    return x, weight, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


@pytest.mark.parametrize("case", CASES)
def test_forward_matches_float64_reference(case):
    x, w, conf = _make(case)
    y = adder_conv2d(x, w, **conf)
    ref = adder_conv2d_reference(x, w, **conf)
    assert y.shape == ref.shape and y.dtype == torch.float32
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("case", CASES)
def test_gradients_follow_addernet_rules(case):
    x, w, conf = _make(case)
    x.requires_grad_(True)
    w.requires_grad_(True)
    y = adder_conv2d(x, w, **conf)
    g = torch.randn_like(y)
    y.backward(g)
    gx, gw = adder_conv2d_reference_grads(g, x, w, **conf)
    torch.testing.assert_close(x.grad.double(), gx, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(w.grad.double(), gw, rtol=1e-4, atol=1e-3)


def test_gradients_are_not_autograd_of_abs():
    """The paper's rules differ from calculus: check we implement the rules, not sign()."""
    x = (torch.randn(2, 3, 6, 6) * 3).requires_grad_(True)
    w = torch.randn(4, 3, 3, 3).requires_grad_(True)
    adder_conv2d(x, w, padding=1).sum().backward()
    x2, w2 = x.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
    cols = torch.nn.functional.unfold(x2, 3, padding=1)                          # (N, J, L)
    (-(cols.unsqueeze(1) - w2.view(1, 4, -1, 1)).abs().sum(2)).sum().backward()   # true derivative
    assert not torch.allclose(w.grad, w2.grad, atol=1e-3)
    assert not torch.allclose(x.grad, x2.grad, atol=1e-3)
    # the clipped input gradient is bounded by the number of terms it sums, sign() only by that too; but the
    # full-precision weight gradient scales with |X - W| while sign()'s does not:
    assert w.grad.abs().max() > w2.grad.abs().max()


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
def test_dtypes(dtype, tol):
    x, w, conf = _make(CASES[3], dtype)
    x.requires_grad_(True)
    w.requires_grad_(True)
    y = adder_conv2d(x, w, **conf)
    assert y.dtype == dtype
    ref = adder_conv2d_reference(x, w, **conf)
    # low precision: inputs are rounded already; compare relative to the output scale
    assert ((y.double() - ref).abs().max() / ref.abs().max()).item() < tol
    g = torch.randn_like(y)
    y.backward(g)
    assert x.grad.dtype == dtype and w.grad.dtype == dtype
    gx, gw = adder_conv2d_reference_grads(g, x, w, **conf)
    assert ((w.grad.double() - gw).abs().max() / gw.abs().max()).item() < 10 * tol


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="channels"):
        adder_conv2d(torch.randn(1, 3, 8, 8), torch.randn(4, 2, 3, 3))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        adder_conv2d(torch.randn(1, 3, 2, 2), torch.randn(4, 3, 3, 3))
    with pytest.raises(ValueError, match="4-d"):
        adder_conv2d(torch.randn(3, 8, 8), torch.randn(4, 3, 3, 3))


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 3), groups=st.integers(1, 3), cg=st.integers(1, 3), og=st.integers(1, 3),
    h=st.integers(1, 9), w=st.integers(1, 9), kh=st.integers(1, 3), kw=st.integers(1, 3),
    sh=st.integers(1, 3), sw=st.integers(1, 3), ph=st.integers(0, 2), pw=st.integers(0, 2),
    dh=st.integers(1, 2), dw=st.integers(1, 2),
)
def test_property_random_shapes(n, groups, cg, og, h, w, kh, kw, sh, sw, ph, pw, dh, dw):
    eff_h, eff_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    assume(h + 2 * ph >= eff_h and w + 2 * pw >= eff_w)      # the kernel fits the padded input
    x = torch.randn(n, cg * groups, h, w, requires_grad=True)
    weight = torch.randn(og * groups, cg, kh, kw, requires_grad=True)
    conf = dict(stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), groups=groups)
    y = adder_conv2d(x, weight, **conf)
    ref = adder_conv2d_reference(x, weight, **conf)
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-4)
    g = torch.randn_like(y)
    y.backward(g)
    gx, gw = adder_conv2d_reference_grads(g, x, weight, **conf)
    torch.testing.assert_close(x.grad.double(), gx, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(weight.grad.double(), gw, rtol=1e-4, atol=1e-3)


def test_fake_tensor_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        y = adder_conv2d(torch.empty(2, 4, 9, 7), torch.empty(6, 2, 3, 3), stride=2, padding=1, groups=2)
    assert tuple(y.shape) == (2, 6, 5, 4)


def test_opcheck():
    """torch.library's own consistency checks (schema, fake kernel, autograd registration)."""
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    w = torch.randn(6, 2, 3, 3, requires_grad=True)
    torch.library.opcheck(torch.ops.adderconv.adder_conv2d.default, (x, w, [1, 1], [1, 1], [1, 1], 2))
