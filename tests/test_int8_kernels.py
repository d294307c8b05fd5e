"""The int8 adder op: integer results equal an independent NumPy reference exactly, on every vector path.

The reference pads with the zero point and sums |x - w| tap by tap in int64; the C++ kernels (each vector path
this CPU has, forced in turn) and the PyTorch fallback must give the same integers, and the fused epilogues
(float affine, requantised uint8) the same bits as the fallback's float32 arithmetic.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from adderconv.kernels import int8, int8_portable
from adderconv.quant.op import adder_conv2d_int8, adder_conv2d_int8_residual, quantize_uint8

# Only the extension's tests skip where it cannot be built: the portable fallback's exactness test always runs.
needs_extension = pytest.mark.skipif(not int8.available(), reason="the int8 extension cannot be built here")


def reference(x, w, z, s, p, d, g):
    x, w = x.astype(np.int64), w.astype(np.int64)
    n, h, wd, c = x.shape
    o, cg, kh, kw = w.shape
    xp = np.full((n, h + 2 * p[0], wd + 2 * p[1], c), z, np.int64)
    xp[:, p[0]:p[0] + h, p[1]:p[1] + wd] = x
    ho = (h + 2 * p[0] - d[0] * (kh - 1) - 1) // s[0] + 1
    wo = (wd + 2 * p[1] - d[1] * (kw - 1) - 1) // s[1] + 1
    out = np.zeros((n, ho, wo, o), np.int64)
    og = o // g
    for oc in range(o):
        gi = oc // og
        for i in range(kh):
            for j in range(kw):
                tap = xp[:, i * d[0]:i * d[0] + (ho - 1) * s[0] + 1:s[0], j * d[1]:j * d[1] + (wo - 1) * s[1] + 1:s[1],
                         gi * cg:(gi + 1) * cg]
                out[..., oc] += np.abs(tap - w[oc, :, i, j]).sum(-1)
    return out


def random_case(rng):
    if rng.random() < 0.2:   # depthwise
        g = c = o = int(rng.integers(2, 12))
        cg = 1
    else:
        g = int(rng.choice([1, 1, 2, 3]))
        cg = int(rng.choice([1, 3, 5, 8, 16, 24]))
        c, o = cg * g, int(rng.integers(1, 20)) * g
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    s = [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
    d = [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
    p = [int(rng.integers(0, 3)), int(rng.integers(0, 3))]
    h, w = int(rng.integers(kh * d[0], 12)), int(rng.integers(kw * d[1], 12))
    x = rng.integers(0, 256, (int(rng.integers(1, 3)), h, w, c), dtype=np.uint8)
    wt = rng.integers(0, 256, (o, cg, kh, kw), dtype=np.uint8)
    return x, wt, int(rng.integers(0, 256)), s, p, d, g


def wide_case(rng, o):
    """A ResNet-like layer (16 channels in, 3x3, padding 1) with ``o`` outputs: the vector epilogues' full chunks of 8
    or 16 channels, and with them a scalar tail when ``o`` is no multiple of 8."""
    x = rng.integers(0, 256, (2, 6, 7, 16), dtype=np.uint8)
    return x, rng.integers(0, 256, (o, 16, 3, 3), dtype=np.uint8), int(rng.integers(0, 256)), [1, 1], [1, 1], [1, 1], 1


def epilogue_cases(rng):
    return [random_case(rng) for _ in range(6)] + [wide_case(rng, 16), wide_case(rng, 21)]


def supported_isas():
    return int8.supported_isas()


@pytest.fixture
def restore_isa():
    before = int8.isa_name()
    yield
    int8.set_isa(before)


@needs_extension
@pytest.mark.parametrize("isa", int8.ISAS)
def test_integer_sums_exact_on_every_vector_path(isa, restore_isa):
    if isa not in supported_isas():
        pytest.skip(f"this CPU has no {isa} (the NEON micro-kernels also run emulated: test_int8_neon.py)")
    int8.set_isa(isa)
    rng = np.random.default_rng(int8.ISAS.index(isa))
    for _ in range(25):
        x, w, z, s, p, d, g = random_case(rng)
        y = adder_conv2d_int8(torch.from_numpy(x), torch.from_numpy(w), z, s, p, d, g).numpy()
        np.testing.assert_array_equal(y, reference(x, w, z, s, p, d, g))


def test_portable_fallback_exact():
    rng = np.random.default_rng(7)
    for _ in range(25):
        x, w, z, s, p, d, g = random_case(rng)
        y = int8_portable.sums(torch.from_numpy(x), torch.from_numpy(w), z, s, p, d, g).numpy()
        np.testing.assert_array_equal(y, reference(x, w, z, s, p, d, g))


@needs_extension
@pytest.mark.parametrize("mode", ["float", "uint8"])
def test_fused_epilogue_bit_identical_to_fallback(mode, restore_isa):
    rng = np.random.default_rng(3)
    gen = torch.Generator().manual_seed(0)
    for isa in supported_isas():
        int8.set_isa(isa)
        for x, w, z, s, p, d, g in epilogue_cases(rng):
            o = w.shape[0]
            scale = (torch.rand(o, generator=gen) - 0.5) * 0.05
            shift = torch.randn(o, generator=gen) * 40 + 100
            args = (torch.from_numpy(x), torch.from_numpy(w), z, s, p, d, g, scale, shift)
            lo = int(rng.integers(0, 100))
            got = adder_conv2d_int8(*args, mode=mode, lo=lo)
            want = int8_portable.adder_int8(*args, 1 if mode == "float" else 2, lo)
            assert got.dtype == want.dtype
            assert torch.equal(got, want)


@needs_extension
@pytest.mark.parametrize("relu", [False, True])
def test_residual_epilogue_bit_identical_to_unfused_ops(relu, restore_isa):
    """The fused residual (+ ReLU, + the next grid's codes) equals the unfused float op, add, relu and quantiser."""
    rng = np.random.default_rng(5)
    gen = torch.Generator().manual_seed(1)
    for isa in supported_isas():
        int8.set_isa(isa)
        for x, w, z, s, p, d, g in epilogue_cases(rng):
            o = w.shape[0]
            scale = (torch.rand(o, generator=gen) - 0.5) * 0.05
            shift = torch.randn(o, generator=gen) * 4
            args = (torch.from_numpy(x), torch.from_numpy(w), z, s, p, d, g)
            y = adder_conv2d_int8(*args, scale, shift, "float")
            res = torch.randn(y.shape, generator=gen) * 4
            res.view(-1)[:5] = -y.reshape(-1)[:5]   # sums of exactly 0 (and -0)
            want = y + res
            want = torch.relu(want) if relu else want
            cs, cz = float(torch.tensor(0.031, dtype=torch.float32)), int(rng.integers(0, 256))
            codes = quantize_uint8(want.permute(0, 3, 1, 2), cs, cz)
            got, got_codes = adder_conv2d_int8_residual(*args, scale=scale, shift=shift, residual=res, relu=relu,
                                                        codes_scale=cs, codes_zero_point=cz)
            assert torch.equal(got, want) and torch.equal(got_codes, codes), isa
            _, alone = adder_conv2d_int8_residual(*args, scale=scale, shift=shift, residual=res, relu=relu,
                                                  codes_scale=cs, codes_zero_point=cz, codes_only=True)
            assert torch.equal(alone, codes), isa
            got, none = adder_conv2d_int8_residual(*args, scale=scale, shift=shift, residual=res, relu=relu)
            assert torch.equal(got, want) and none.numel() == 0, isa
            with_fallback = torch.ops.adderconv.adder_conv2d_int8_residual   # the registered op, fake-checked
            assert torch.library.opcheck(with_fallback, (*args[:2], z, list(s), list(p), list(d), g, scale, shift,
                                                         res, relu, cs, cz, False)) is not None


@needs_extension
def test_quantize_matches_fallback():
    x = torch.randn(2, 5, 7, 6) * 3
    x[0, 0, 0, :3] = torch.tensor([0.5, 1.5, -2.5]) / 0.037   # halfway cases: round half to even
    scale = torch.tensor(0.037, dtype=torch.float32)
    for lo in (0, 17):
        got = int8.extension().quantize(x, float(scale), 17, lo)
        assert torch.equal(got, int8_portable.quantize(x, scale, 17, lo))
        assert torch.equal(int8.extension().quantize(x.contiguous(memory_format=torch.channels_last), float(scale), 17,
                                                     lo), got)


@needs_extension
def test_large_layer_exact_and_threads_agree():
    rng = np.random.default_rng(11)
    x = rng.integers(0, 256, (3, 16, 16, 64), dtype=np.uint8)
    w = rng.integers(0, 256, (72, 64, 3, 3), dtype=np.uint8)
    want = reference(x, w, 3, [1, 1], [1, 1], [1, 1], 1)
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            y = adder_conv2d_int8(torch.from_numpy(x), torch.from_numpy(w), 3, 1, 1).numpy()
            np.testing.assert_array_equal(y, want)
    finally:
        torch.set_num_threads(threads)


def test_fake_impl_and_bad_input():   # the op's own checks and fake implementation: no kernel runs
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(2, 9, 9, 8, dtype=torch.uint8)
        w = torch.empty(4, 8, 3, 3, dtype=torch.uint8)
        y = adder_conv2d_int8(x, w, 5, 2, 1, scale=torch.empty(4), shift=torch.empty(4), mode="float")
        assert tuple(y.shape) == (2, 5, 5, 4) and y.dtype == torch.float32
    with pytest.raises(ValueError, match="uint8"):
        adder_conv2d_int8(torch.zeros(1, 4, 4, 8), torch.zeros(2, 8, 3, 3, dtype=torch.uint8), 0)
    with pytest.raises(ValueError, match="channels"):
        adder_conv2d_int8(torch.zeros(1, 4, 4, 8, dtype=torch.uint8), torch.zeros(2, 4, 3, 3, dtype=torch.uint8), 0)
