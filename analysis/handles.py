"""Counting handles: one small pure function per operator, from argument shapes to a :class:`Tally`.

A handle sees ``inputs`` and ``outputs`` as plain values: a tensor is its shape (a tuple of ints), a
scalar or list is itself, anything unknown is ``None``. Handles never see how the graph was captured (the
TorchScript tracer today, a dispatch-mode capture tomorrow). Every op has one of three fates: counted by a
handle here, ignored with a written reason (:data:`IGNORED`), or reported as unsupported.

Conventions: a conv/linear/matmul MAC is 1 mul + 1 add, bias is 1 add per output; an adder MAC is 2 add;
BatchNorm in eval is an affine map (1 mul + 1 add per element, its statistics precomputed; it is counted,
not assumed folded, because BatchNorm after an adder layer cannot be folded).

>>> HANDLES["adderconv::adder_conv2d"].fn([(1, 16, 8, 8), (32, 16, 3, 3), [1, 1], [1, 1], [1, 1], 1],
...                                      [(1, 32, 8, 8)])
Tally(add=589824)
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .counts import Tally

__all__ = ["Handle", "HANDLES", "IGNORED", "register", "conv_macs", "norm_tally"]

HandleFn = Callable[[Sequence[Any], Sequence[Any]], Tally]


@dataclass(frozen=True)
class Handle:
    op: str
    category: str
    fn: HandleFn


HANDLES: dict[str, Handle] = {}
#: Ops deliberately not counted, each with the reason (filled at the end of this module).
IGNORED: dict[str, str] = {}


def register(*ops: str, category: str) -> Callable[[HandleFn], HandleFn]:
    """Decorator: count ``ops`` with the function; registering an op twice is an error."""
    def wrap(fn: HandleFn) -> HandleFn:
        for op in ops:
            if op in HANDLES or op in IGNORED:
                raise ValueError(f"operator {op!r} already has a handle or is ignored")
            HANDLES[op] = Handle(op, category, fn)
        return fn
    return wrap


def _numel(shape: Sequence[int]) -> int:
    return math.prod(shape)


def _shape(v: Any, what: str) -> tuple[int, ...]:
    if not isinstance(v, tuple):
        raise ValueError(f"expected a tensor shape for {what}, got {v!r}")
    return v


def _out(outputs: Sequence[Any]) -> int:
    return _numel(_shape(outputs[0], "output"))


def conv_macs(x_shape: Sequence[int], w_shape: Sequence[int], out_shape: Sequence[int], transposed: bool) -> int:
    """MACs of a (transposed) convolution of any dimension and grouping (fvcore's formula).

    Normal: every output element sums ``C_in/groups * prod(kernel)`` products. Transposed: every input
    element scatters into ``C_out/groups * prod(kernel)`` outputs. Both are ``batch * numel(W) * spatial``.
    """
    spatial = x_shape[2:] if transposed else out_shape[2:]
    return x_shape[0] * _numel(w_shape) * _numel(spatial)


# --- convolution, adder, linear algebra ------------------------------------------------------------------

def _conv(x: Any, w: Any, b: Any, out: Any, transposed: bool) -> Tally:
    macs = conv_macs(_shape(x, "input"), _shape(w, "weight"), _shape(out, "output"), transposed)
    return Tally(mul=macs, add=macs + (_numel(out) if b is not None else 0))


@register("aten::_convolution", "aten::convolution", category="conv")
def _convolution(i, o):
    return _conv(i[0], i[1], i[2], o[0], bool(i[6]))


@register("aten::conv1d", "aten::conv2d", "aten::conv3d", category="conv")
def _convnd(i, o):
    return _conv(i[0], i[1], i[2], o[0], False)


@register("aten::conv_transpose1d", "aten::conv_transpose2d", "aten::conv_transpose3d", category="conv")
def _conv_transpose(i, o):
    return _conv(i[0], i[1], i[2], o[0], True)


@register("adderconv::adder_conv2d", category="adder")
def _adder(i, o):
    # |x - w| and the accumulation: two additions per MAC, no multiplication (AdderNet's convention).
    return Tally(add=2 * conv_macs(_shape(i[0], "input"), _shape(i[1], "weight"), _shape(o[0], "output"), False))


def _mm(a: tuple[int, ...], b: tuple[int, ...], out: tuple[int, ...]) -> int:
    """MACs of a (batched, broadcast) matrix product: every output element is a dot of length K."""
    k = a[-1] if a else 1
    return _numel(out) * k


@register("aten::linear", category="linear")
def _linear(i, o):
    macs = _mm(_shape(i[0], "input"), _shape(i[1], "weight"), _shape(o[0], "output"))
    return Tally(mul=macs, add=macs + (_out(o) if i[2] is not None else 0))


@register("aten::addmm", "aten::baddbmm", category="linear")
def _addmm(i, o):   # bias + a @ b
    macs = _mm(_shape(i[1], "mat1"), _shape(i[2], "mat2"), _shape(o[0], "output"))
    return Tally(mul=macs, add=macs + _out(o))


@register("aten::mm", "aten::bmm", "aten::matmul", category="matmul")
def _matmul(i, o):
    macs = _mm(_shape(i[0], "a"), _shape(i[1], "b"), _shape(o[0], "output"))
    return Tally(mul=macs, add=macs)


@register("aten::einsum", category="matmul")
def _einsum(i, o):
    eq, operands = i[0], i[1]
    lhs = eq.replace(" ", "").split("->")[0].split(",")
    if not isinstance(operands, list) or len(lhs) != len(operands) or len(operands) > 2:
        raise ValueError(f"einsum {eq!r}: only one or two operands are counted")
    sizes: dict[str, int] = {}
    for letters, shape in zip(lhs, operands):
        if "." in letters:
            raise ValueError(f"einsum {eq!r}: ellipsis is not counted")
        sizes.update(zip(letters, _shape(shape, "operand")))
    macs = _numel(sizes.values())   # every index combination is one product (two operands) or one sum
    return Tally(mul=macs, add=macs) if len(operands) == 2 else Tally(add=macs)


@register("aten::scaled_dot_product_attention", category="attention")
def _sdpa(i, o):
    q, k, v = (_shape(t, n) for t, n in zip(i[:3], ("query", "key", "value")))
    scores = _numel(q[:-1]) * k[-2]                       # B*H*L*S
    macs = scores * q[-1] + scores * v[-1]                # Q K^T and P V
    mask = scores if i[3] is not None else 0
    # scale (mul), optional mask (add), softmax over S: max (cmp), x - max and sum (2 add), exp, normalise (div)
    return Tally(mul=macs + scores, add=macs + mask + 2 * scores, cmp=scores, exp=scores, div=scores)


@register("aten::_native_multi_head_attention", category="attention")
def _native_mha(i, o):
    """nn.MultiheadAttention's inference fast path: in-projections, attention per head, out-projection."""
    q, k = _shape(i[0], "query"), _shape(i[1], "key")
    embed, heads = int(i[3]), int(i[4])
    batch, length, source = _numel(q[:-2]), q[-2], k[-2]
    proj = batch * (length + 2 * source) * embed * embed + batch * length * embed * embed   # q, k, v, out
    bias = batch * (length + 2 * source) * embed * (i[6] is not None) + batch * length * embed * (i[8] is not None)
    scores = batch * heads * length * source
    macs = 2 * scores * (embed // heads)                                                     # Q K^T and P V
    mask = scores if i[9] is not None else 0
    return Tally(mul=proj + macs + scores, add=proj + bias + macs + mask + 2 * scores, cmp=scores, exp=scores,
                 div=scores)


# --- normalisation ---------------------------------------------------------------------------------------

@register("aten::batch_norm", category="norm")
def _batch_norm(i, o):
    n = _numel(_shape(i[0], "input"))
    if not i[5]:                                  # eval: y = x * a + b with a, b precomputed per channel
        return Tally(mul=n, add=n)
    c = _shape(i[0], "input")[1]
    return Tally(add=4 * n + c, mul=3 * n, sqrt=c, div=c)   # statistics, normalise, affine


def norm_tally(n: int, groups: int, affine: bool) -> Tally:
    """Layer/Group/InstanceNorm over n elements in `groups` normalisation groups."""
    # mean (add), variance (sub, mul, add), normalise (sub, mul by 1/std), per group sqrt and reciprocal
    t = Tally(add=4 * n + groups, mul=2 * n, sqrt=groups, div=groups)
    return t + Tally(mul=n, add=n) if affine else t


@register("aten::layer_norm", category="norm")
def _layer_norm(i, o):
    x = _shape(i[0], "input")
    return norm_tally(_numel(x), _numel(x) // max(1, _numel(i[1])), i[2] is not None)


@register("aten::group_norm", category="norm")
def _group_norm(i, o):
    x = _shape(i[0], "input")
    return norm_tally(_numel(x), x[0] * int(i[1]), i[2] is not None)


@register("aten::instance_norm", category="norm")
def _instance_norm(i, o):
    x = _shape(i[0], "input")
    return norm_tally(_numel(x), x[0] * x[1], i[1] is not None)


# --- pooling, reductions, upsampling ---------------------------------------------------------------------

def _window(i: Sequence[Any], o: Sequence[Any]) -> tuple[int, int]:
    x, out = _shape(i[0], "input"), _shape(o[0], "output")
    k = i[1] if isinstance(i[1], list) else [i[1]]
    dims = len(x) - 2 if len(x) > 3 else 1
    area = _numel(k) if len(k) == dims else int(k[0]) ** dims
    return _numel(out), area


@register("aten::max_pool1d", "aten::max_pool2d", "aten::max_pool3d", "aten::max_pool2d_with_indices",
          category="pool")
def _max_pool(i, o):
    n, area = _window(i, o)
    return Tally(cmp=n * (area - 1))


@register("aten::avg_pool1d", "aten::avg_pool2d", "aten::avg_pool3d", category="pool")
def _avg_pool(i, o):
    n, area = _window(i, o)
    return Tally(add=n * (area - 1), mul=n)       # sum the window, scale by 1/area


def _adaptive_window_elements(x: tuple[int, ...], out: tuple[int, ...]) -> int:
    """Input elements read over all windows of an adaptive pool (windows overlap when upsampling)."""
    dims = len(out) - 2 if len(x) == len(out) else len(out) - 1
    total = _numel(out[:-dims])
    for n_in, n_out in zip(x[-dims:], out[-dims:]):
        # window i spans [floor(i * in / out), ceil((i + 1) * in / out)), as ATen computes it
        total *= sum(-(-((i + 1) * n_in) // n_out) - (i * n_in) // n_out for i in range(n_out))
    return total


@register("aten::adaptive_avg_pool1d", "aten::adaptive_avg_pool2d", "aten::adaptive_avg_pool3d", category="pool")
def _adaptive_avg(i, o):
    n_out = _out(o)
    return Tally(add=_adaptive_window_elements(_shape(i[0], "input"), _shape(o[0], "output")) - n_out, mul=n_out)


@register("aten::mean", category="pool")
def _mean(i, o):
    n_in, n_out = _numel(_shape(i[0], "input")), _out(o)
    return Tally(add=n_in - n_out, mul=n_out)        # sum, then scale by 1/n


@register("aten::adaptive_max_pool1d", "aten::adaptive_max_pool2d", "aten::adaptive_max_pool3d",
          category="pool")
def _adaptive_max(i, o):
    return Tally(cmp=_adaptive_window_elements(_shape(i[0], "input"), _shape(o[0], "output")) - _out(o))


@register("aten::sum", category="reduce")
def _sum(i, o):
    return Tally(add=_numel(_shape(i[0], "input")) - _out(o))


@register("aten::linalg_vector_norm", "aten::norm", category="reduce")
def _vector_norm(i, o):
    n_in, n_out = _numel(_shape(i[0], "input")), _out(o)
    p = 2 if i[1] is None else float(i[1])
    if p == 2:
        return Tally(mul=n_in, add=n_in - n_out, sqrt=n_out)        # sqrt(sum x^2)
    if p == 1:
        return Tally(add=n_in - n_out)                               # sum |x| (abs is free)
    if math.isinf(p):
        return Tally(cmp=n_in - n_out)                               # max |x|
    return Tally(exp=n_in + n_out, log=n_in + n_out, mul=n_in + n_out, add=n_in - n_out)   # (sum |x|^p)^(1/p)


@register("aten::max", "aten::min", "aten::amax", "aten::amin", category="reduce")
def _max(i, o):
    if len(i) > 1 and isinstance(i[1], tuple):    # elementwise maximum of two tensors
        return Tally(cmp=_out(o))
    return Tally(cmp=_numel(_shape(i[0], "input")) - _out(o))


_INTERP = {"nearest": Tally(), "linear": Tally(mul=2, add=1), "bilinear": Tally(mul=4, add=3),
           "trilinear": Tally(mul=8, add=7), "bicubic": Tally(mul=16, add=15)}

for _mode, _dims in (("nearest", (1, 2, 3)), ("linear", (1,)), ("bilinear", (2,)), ("trilinear", (3,)),
                     ("bicubic", (2,))):
    def _up(i, o, per=_INTERP[_mode]):            # weighted sum of the 2^d (4^d for bicubic) neighbours
        return per * _out(o)
    register(*(f"aten::upsample_{_mode}{d}d" for d in _dims), category="upsample")(_up)
    if _mode == "nearest":
        register(*(f"aten::_upsample_nearest_exact{d}d" for d in _dims), category="upsample")(_up)


# --- elementwise arithmetic and activations --------------------------------------------------------------

def _elementwise(per: Tally) -> HandleFn:
    return lambda i, o: per * _out(o)


for _ops, _per, _cat in (
    (("add", "sub", "rsub"), Tally(add=1), "elementwise"),
    (("mul", "square"), Tally(mul=1), "elementwise"),
    (("div", "reciprocal"), Tally(div=1), "elementwise"),
    (("eq", "ne", "lt", "le", "gt", "ge", "sign"), Tally(cmp=1), "elementwise"),
    (("relu", "threshold", "clamp_min", "clamp_max"), Tally(cmp=1), "activation"),
    (("hardtanh", "relu6", "clamp"), Tally(cmp=2), "activation"),
    (("leaky_relu",), Tally(cmp=1, mul=1), "activation"),
    (("prelu",), Tally(cmp=1, mul=1), "activation"),
    (("sigmoid",), Tally(exp=1, add=1, div=1), "activation"),          # 1 / (1 + e^-x)
    (("silu",), Tally(exp=1, add=1, div=1, mul=1), "activation"),      # x * sigmoid(x)
    (("tanh",), Tally(exp=1), "activation"),
    (("gelu",), Tally(exp=1, mul=2, add=1), "activation"),             # 0.5 x (1 + erf(x / sqrt 2))
    (("elu", "selu", "celu"), Tally(cmp=1, exp=1, add=1, mul=1), "activation"),
    (("mish",), Tally(exp=2, log=1, add=1, mul=1), "activation"),      # x tanh(softplus(x))
    (("hardsigmoid",), Tally(add=1, cmp=2, mul=1), "activation"),      # relu6(x + 3) / 6
    (("hardswish",), Tally(add=1, cmp=2, mul=2), "activation"),        # x relu6(x + 3) / 6
    (("exp",), Tally(exp=1), "math"),
    (("log",), Tally(log=1), "math"),
    (("sqrt",), Tally(sqrt=1), "math"),
    (("rsqrt",), Tally(sqrt=1, div=1), "math"),
):
    register(*(f"aten::{op}{suffix}" for op in _ops for suffix in ("", "_")), category=_cat)(_elementwise(_per))


@register("aten::pow", "aten::pow_", category="math")
def _pow(i, o):
    n, e = _out(o), i[1]
    if e == 2:
        return Tally(mul=n)
    if e == 0.5:
        return Tally(sqrt=n)
    return Tally(log=n, mul=n, exp=n)                  # x ** y = exp(y ln x)


@register("aten::softmax", "aten::_softmax", "aten::log_softmax", "aten::_log_softmax", category="softmax")
def _softmax(i, o):
    n = _out(o)   # max (cmp), x - max and the sum (2 add), exp, normalise (div; log-softmax: log of the sum)
    return Tally(cmp=n, add=2 * n, exp=n, div=n)


# --- ignored on purpose: no arithmetic ---------------------------------------------------------------------

_NO_ARITHMETIC = {
    "moves or reshapes data, no arithmetic": (
        "view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "permute", "transpose", "t",
        "expand", "expand_as", "contiguous", "narrow", "select", "slice", "chunk", "split", "split_with_sizes",
        "unbind", "unsafe_split", "unsafe_chunk", "stack", "cat", "concat", "repeat", "roll", "flip",
        "pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "native_channel_shuffle", "movedim", "as_strided",
        "view_as", "reshape_as", "type_as", "to", "detach", "clone", "copy_", "index", "index_select",
        "gather", "masked_fill", "masked_fill_", "constant_pad_nd", "pad", "reflection_pad1d",
        "reflection_pad2d", "replication_pad1d", "replication_pad2d", "upsample_nearest2d_backward",
        "lift_fresh", "alias", "_unsafe_view", "index_put_", "scatter", "where",
    ),
    "creates tensors or reads shapes, no arithmetic on data": (
        "zeros", "ones", "zeros_like", "ones_like", "full", "full_like", "empty", "empty_like", "new_zeros",
        "new_empty", "new_full", "new_ones", "arange", "linspace", "tensor", "scalar_tensor", "size", "numel",
        "dim", "ScalarImplicit", "Int", "Float", "Bool", "IntImplicit", "FloatImplicit", "zero_", "fill_",
        "floor_divide", "remainder", "__and__", "__or__", "bitwise_not",
    ),
    "identity at inference (dropout is off in eval)": (
        "dropout", "dropout_", "feature_dropout", "feature_dropout_", "alpha_dropout", "alpha_dropout_",
    ),
    "sign-bit operation (abs, neg), free in hardware": ("abs", "abs_", "neg", "neg_"),
}
for _reason, _ops in _NO_ARITHMETIC.items():
    for _op in _ops:
        if f"aten::{_op}" in HANDLES or f"aten::{_op}" in IGNORED:
            raise ValueError(f"aten::{_op} is both ignored and counted, or ignored twice")
        IGNORED[f"aten::{_op}"] = _reason
