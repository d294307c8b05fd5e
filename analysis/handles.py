"""Counting handles for structured ops: one small pure function per operator, from named arguments to a Tally.

Handles read the op's own schema arguments by name (see :mod:`.registry`); a tensor is its shape. Both
captures use them: the dispatch capture sees the ATen ops a model really dispatches (``convolution``,
``addmm``, ``native_batch_norm``, their backward ops), the TorchScript tracer sees the composite ones above
them (``_convolution``, ``linear``, ``batch_norm``); each has its handle, with one formula behind them.

Conventions: a conv/linear/matmul MAC is 1 mul + 1 acc (the accumulation), bias is 1 acc per output (it is
added into the accumulator); an adder MAC is 1 add (|x - w|) + 1 acc;
BatchNorm in eval is an affine map (1 mul + 1 add per element, its statistics precomputed; it is counted,
not assumed folded, because BatchNorm after an adder layer cannot be folded).

>>> import torch
>>> HANDLES[torch.ops.aten.mm].fn([(4, 5)], self=(4, 3))
Tally(mul=60, acc=60)
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from . import handles_detection as _detection  # noqa: F401  (registers sorting and selection)
from . import handles_elementwise as _elementwise  # noqa: F401  (registers the per-element handles)
from . import handles_rnn as _rnn  # noqa: F401  (registers the recurrent layers)
from .counts import Tally
from .registry import HANDLES, IGNORED, Handle, register

__all__ = ["Handle", "HANDLES", "IGNORED", "register", "conv_macs", "norm_tally"]

aten = torch.ops.aten


def _numel(shape: Sequence[int]) -> int:
    return math.prod(shape)


def _shape(v: Any, what: str) -> tuple[int, ...]:
    if not isinstance(v, tuple):
        raise ValueError(f"expected a tensor shape for {what}, got {v!r}")
    return v


def _out(outs: Sequence[Any]) -> int:
    return _numel(_shape(outs[0], "output"))


def conv_macs(x_shape: Sequence[int], w_shape: Sequence[int], out_shape: Sequence[int], transposed: bool) -> int:
    """MACs of a (transposed) convolution of any dimension and grouping (fvcore's formula).

    Normal: every output element sums ``C_in/groups * prod(kernel)`` products. Transposed: every input
    element scatters into ``C_out/groups * prod(kernel)`` outputs. Both are ``batch * numel(W) * spatial``.
    """
    spatial = x_shape[2:] if transposed else out_shape[2:]
    return x_shape[0] * _numel(w_shape) * _numel(spatial)


# --- convolution, linear algebra ---------------------------------------------------------------------------

def _conv(x: Any, w: Any, bias: Any, out: Any, transposed: bool) -> Tally:
    macs = conv_macs(_shape(x, "input"), _shape(w, "weight"), _shape(out, "output"), transposed)
    return Tally(mul=macs, acc=macs + (_numel(out) if bias is not None else 0))


@register(aten._convolution, aten.convolution, category="conv")
def _convolution(outs, input, weight, bias, transposed):
    return _conv(input, weight, bias, outs[0], bool(transposed))


@register(aten.conv1d, aten.conv2d, aten.conv3d, category="conv")
def _convnd(outs, input, weight, bias=None):
    return _conv(input, weight, bias, outs[0], False)


@register(aten.conv_transpose1d, aten.conv_transpose2d, aten.conv_transpose3d, category="conv")
def _conv_transpose(outs, input, weight, bias=None):
    return _conv(input, weight, bias, outs[0], True)


@register(aten.convolution_backward, category="conv")
def _convolution_backward(outs, grad_output, input, weight, transposed, output_mask):
    """dX is the transposed convolution of the output gradient, dW the correlation of X with it (both the
    forward's MACs); the bias gradient sums the output gradient over batch and space."""
    g = _shape(grad_output, "grad_output")
    macs = conv_macs(_shape(input, "input"), _shape(weight, "weight"), g, bool(transposed))
    n_grads = int(bool(output_mask[0])) + int(bool(output_mask[1]))
    bias = _numel(g) - g[1] if output_mask[2] else 0
    return Tally(mul=n_grads * macs, acc=n_grads * macs + bias)


def _mm(a: tuple[int, ...], out: tuple[int, ...]) -> int:
    """MACs of a (batched, broadcast) matrix product: every output element is a dot of length K."""
    k = a[-1] if a else 1
    return _numel(out) * k


@register(aten.linear, category="linear")
def _linear(outs, input, weight, bias=None):
    macs = _mm(_shape(input, "input"), _shape(outs[0], "output"))
    return Tally(mul=macs, acc=macs + (_out(outs) if bias is not None else 0))


@register(aten.addmm, category="linear")
def _addmm(outs, mat1):   # bias + a @ b
    macs = _mm(_shape(mat1, "mat1"), _shape(outs[0], "output"))
    return Tally(mul=macs, acc=macs + _out(outs))


@register(aten.baddbmm, category="linear")
def _baddbmm(outs, batch1):
    macs = _mm(_shape(batch1, "batch1"), _shape(outs[0], "output"))
    return Tally(mul=macs, acc=macs + _out(outs))


@register(aten.addmv, category="linear")
def _addmv(outs, mat):
    macs = _mm(_shape(mat, "mat"), _shape(outs[0], "output"))
    return Tally(mul=macs, acc=macs + _out(outs))


@register(aten.mm, aten.bmm, aten.mv, aten.dot, aten.vdot, category="matmul")
def _mm_bmm(outs, self):
    macs = _mm(_shape(self, "self"), _shape(outs[0], "output"))
    return Tally(mul=macs, acc=macs)


@register(aten.matmul, category="matmul")
def _matmul(outs, self):
    macs = _mm(_shape(self, "self"), _shape(outs[0], "output"))
    return Tally(mul=macs, acc=macs)


@register(aten.einsum, category="matmul")
def _einsum(outs, equation, tensors):
    lhs = equation.replace(" ", "").split("->")[0].split(",")
    if not isinstance(tensors, list) or len(lhs) != len(tensors) or len(tensors) > 2:
        raise ValueError(f"einsum {equation!r}: only one or two operands are counted")
    sizes: dict[str, int] = {}
    for letters, shape in zip(lhs, tensors):
        if "." in letters:
            raise ValueError(f"einsum {equation!r}: ellipsis is not counted")
        sizes.update(zip(letters, _shape(shape, "operand")))
    macs = _numel(sizes.values())   # every index combination is one product (two operands) or one sum
    return Tally(mul=macs, acc=macs) if len(tensors) == 2 else Tally(add=macs)


def attention_tally(scores: int, macs: int, masked: bool) -> Tally:
    """Attention over ``scores`` score elements with ``macs`` MACs in Q K^T and P V: scale (mul), optional
    mask (add), softmax over S: max (cmp), x - max and sum (2 add), exp, normalise (div)."""
    return Tally(mul=macs + scores, acc=macs, add=(scores if masked else 0) + 2 * scores, cmp=scores, exp=scores,
                 div=scores)


@register(aten.scaled_dot_product_attention, category="attention")
def _sdpa(outs, query, key, value, attn_mask=None):
    q, k, v = _shape(query, "query"), _shape(key, "key"), _shape(value, "value")
    scores = _numel(q[:-1]) * k[-2]                       # B*H*L*S
    return attention_tally(scores, scores * q[-1] + scores * v[-1], attn_mask is not None)


@register(aten._scaled_dot_product_flash_attention_for_cpu, aten._scaled_dot_product_attention_math,
          category="attention")
def _sdpa_cpu(outs, query, key, value, attn_mask=None):
    return _sdpa(outs, query, key, value, attn_mask)


@register(aten._scaled_dot_product_flash_attention, category="attention")
def _sdpa_flash(outs, query, key, value):
    return _sdpa(outs, query, key, value, None)


@register(aten._scaled_dot_product_efficient_attention, category="attention")
def _sdpa_efficient(outs, query, key, value, attn_bias):
    return _sdpa(outs, query, key, value, attn_bias)


@register(aten._native_multi_head_attention, category="attention")
def _native_mha(outs, query, key, embed_dim, num_head, qkv_bias, proj_bias, mask):
    """nn.MultiheadAttention's inference fast path: in-projections, attention per head, out-projection."""
    q, k = _shape(query, "query"), _shape(key, "key")
    embed, heads = int(embed_dim), int(num_head)
    batch, length, source = _numel(q[:-2]), q[-2], k[-2]
    proj = batch * (length + 2 * source) * embed * embed + batch * length * embed * embed   # q, k, v, out
    bias = (batch * (length + 2 * source) * embed * (qkv_bias is not None)
            + batch * length * embed * (proj_bias is not None))
    scores = batch * heads * length * source
    return attention_tally(scores, 2 * scores * (embed // heads), mask is not None) + Tally(mul=proj, acc=proj + bias)


# --- normalisation ---------------------------------------------------------------------------------------

def _bn(x: Any, training: bool) -> Tally:
    n = _numel(_shape(x, "input"))
    if not training:                              # eval: y = x * a + b with a, b precomputed per channel
        return Tally(mul=n, add=n)
    c = _shape(x, "input")[1]
    return Tally(add=4 * n + c, mul=3 * n, sqrt=c, div=c)   # statistics, normalise, affine


@register(aten.batch_norm, aten.native_batch_norm, aten._native_batch_norm_legit,
          aten._native_batch_norm_legit_functional, category="norm")
def _batch_norm(outs, input, training):
    return _bn(input, bool(training))


@register(aten._native_batch_norm_legit_no_training, category="norm")
def _batch_norm_eval(outs, input):
    return _bn(input, False)


def norm_tally(n: int, groups: int, affine: bool) -> Tally:
    """Layer/Group/InstanceNorm over n elements in `groups` normalisation groups."""
    # mean (add), variance (sub, mul, add), normalise (sub, mul by 1/std), per group sqrt and reciprocal
    t = Tally(add=4 * n + groups, mul=2 * n, sqrt=groups, div=groups)
    return t + Tally(mul=n, add=n) if affine else t


def norm_backward_tally(n: int, groups: int, affine: bool) -> Tally:
    """Backward of a normalisation over n elements: x_hat again (add, mul), g*x_hat (mul), the two group
    means of g and g*x_hat (2 add, 2 mul per group), dx = (g - mean(g) - x_hat*mean(g x_hat)) / std
    (2 add, 2 mul); with an affine weight, g*w (mul) and the weight/bias gradients (2 add)."""
    t = Tally(add=4 * n, mul=4 * n + 2 * groups)
    return t + Tally(mul=n, add=2 * n) if affine else t


@register(aten.layer_norm, aten.native_layer_norm, category="norm")
def _layer_norm(outs, input, normalized_shape, weight=None):
    x = _shape(input, "input")
    return norm_tally(_numel(x), _numel(x) // max(1, _numel(normalized_shape)), weight is not None)


@register(aten.native_layer_norm_backward, category="norm")
def _layer_norm_backward(outs, input, normalized_shape, weight=None):
    x = _shape(input, "input")
    return norm_backward_tally(_numel(x), _numel(x) // max(1, _numel(normalized_shape)), weight is not None)


@register(aten.group_norm, category="norm")
def _group_norm(outs, input, num_groups, weight=None):
    x = _shape(input, "input")
    return norm_tally(_numel(x), x[0] * int(num_groups), weight is not None)


@register(aten.native_group_norm, category="norm")
def _native_group_norm(outs, input, group, weight=None):
    x = _shape(input, "input")
    return norm_tally(_numel(x), x[0] * int(group), weight is not None)


@register(aten.native_group_norm_backward, category="norm")
def _group_norm_backward(outs, input, group, weight=None):
    x = _shape(input, "input")
    return norm_backward_tally(_numel(x), x[0] * int(group), weight is not None)


@register(aten.native_batch_norm_backward, category="norm")
def _batch_norm_backward(outs, input, weight, train):
    x = _shape(input, "input")
    if not train:     # eval statistics are constants: dx = g * w / std, dw = sum g x_hat, db = sum g
        n, c = _numel(x), x[1]
        return Tally(mul=3 * n + c, add=3 * n, sqrt=c, div=c)
    return norm_backward_tally(_numel(x), x[1], weight is not None)


@register(aten.instance_norm, category="norm")
def _instance_norm(outs, input, weight=None):
    x = _shape(input, "input")
    return norm_tally(_numel(x), x[0] * x[1], weight is not None)


# --- pooling, reductions, upsampling ---------------------------------------------------------------------

def _window(x: Any, kernel_size: Any, outs: Sequence[Any]) -> tuple[int, int]:
    x, out = _shape(x, "input"), _shape(outs[0], "output")
    k = kernel_size if isinstance(kernel_size, list) else [kernel_size]
    dims = len(x) - 2 if len(x) > 3 else 1
    area = _numel(k) if len(k) == dims else int(k[0]) ** dims
    return _numel(out), area


@register(aten.max_pool1d, aten.max_pool2d, aten.max_pool3d, aten.max_pool2d_with_indices,
          aten.max_pool3d_with_indices, category="pool")
def _max_pool(outs, self, kernel_size):
    n, area = _window(self, kernel_size, outs)
    return Tally(cmp=n * (area - 1))


@register(aten.avg_pool1d, aten.avg_pool2d, aten.avg_pool3d, category="pool")
def _avg_pool(outs, self, kernel_size):
    n, area = _window(self, kernel_size, outs)
    return Tally(add=n * (area - 1), mul=n)       # sum the window, scale by 1/area


@register(aten.max_pool2d_with_indices_backward, aten.max_pool3d_with_indices_backward, category="pool")
def _max_pool_backward(outs, grad_output):
    return Tally(add=_numel(_shape(grad_output, "grad_output")))   # scatter-add each gradient to its argmax


@register(aten.avg_pool2d_backward, aten.avg_pool3d_backward, category="pool")
def _avg_pool_backward(outs, grad_output, self, kernel_size):
    n, area = _window(self, kernel_size, [grad_output])
    return Tally(mul=n, add=n * area)             # scale each gradient, add it to every window element


def _adaptive_window_elements(x: tuple[int, ...], out: tuple[int, ...]) -> int:
    """Input elements read over all windows of an adaptive pool (windows overlap when upsampling)."""
    dims = len(out) - 2 if len(x) == len(out) else len(out) - 1
    total = _numel(out[:-dims])
    for n_in, n_out in zip(x[-dims:], out[-dims:]):
        # window i spans [floor(i * in / out), ceil((i + 1) * in / out)), as ATen computes it
        total *= sum(-(-((i + 1) * n_in) // n_out) - (i * n_in) // n_out for i in range(n_out))
    return total


@register(aten.adaptive_avg_pool1d, aten.adaptive_avg_pool2d, aten.adaptive_avg_pool3d, aten._adaptive_avg_pool2d,
          aten._adaptive_avg_pool3d, category="pool")
def _adaptive_avg(outs, self):
    n_out = _out(outs)
    return Tally(add=_adaptive_window_elements(_shape(self, "input"), _shape(outs[0], "output")) - n_out, mul=n_out)


@register(aten._adaptive_avg_pool2d_backward, aten._adaptive_avg_pool3d_backward, category="pool")
def _adaptive_avg_backward(outs, grad_output, self):
    g = _shape(grad_output, "grad_output")
    return Tally(mul=_numel(g), add=_adaptive_window_elements(_shape(self, "input"), g))


@register(aten.mean, category="pool")
def _mean(outs, self):
    n_in, n_out = _numel(_shape(self, "input")), _out(outs)
    return Tally(add=n_in - n_out, mul=n_out)        # sum, then scale by 1/n


@register(aten.adaptive_max_pool1d, aten.adaptive_max_pool2d, aten.adaptive_max_pool3d, category="pool")
def _adaptive_max(outs, self):
    return Tally(cmp=_adaptive_window_elements(_shape(self, "input"), _shape(outs[0], "output")) - _out(outs))


@register(aten.sum, category="reduce")
def _sum(outs, self):
    return Tally(add=_numel(_shape(self, "input")) - _out(outs))


def _p_norm(x: Any, p: Any, outs: Sequence[Any]) -> Tally:
    n_in, n_out = _numel(_shape(x, "input")), _out(outs)
    p = 2 if p is None else float(p)
    if p == 2:
        return Tally(mul=n_in, add=n_in - n_out, sqrt=n_out)        # sqrt(sum x^2)
    if p == 1:
        return Tally(add=n_in - n_out)                               # sum |x| (abs is free)
    if math.isinf(p):
        return Tally(cmp=n_in - n_out)                               # max |x|
    return Tally(exp=n_in + n_out, log=n_in + n_out, mul=n_in + n_out, add=n_in - n_out)   # (sum |x|^p)^(1/p)


@register(aten.linalg_vector_norm, category="reduce")
def _vector_norm(outs, self, ord=2):
    return _p_norm(self, ord, outs)


@register(aten.norm, category="reduce")
def _norm(outs, self, p=2):
    return _p_norm(self, p, outs)


@register(aten.max, aten.min, category="reduce")
def _max(outs, self, other=None):
    if isinstance(other, tuple):                  # elementwise maximum of two tensors
        return Tally(cmp=_out(outs))
    return Tally(cmp=_numel(_shape(self, "input")) - _out(outs))


@register(aten.amax, aten.amin, category="reduce")
def _amax(outs, self):
    return Tally(cmp=_numel(_shape(self, "input")) - _out(outs))


_INTERP = {"nearest": Tally(), "linear": Tally(mul=2, add=1), "bilinear": Tally(mul=4, add=3),
           "trilinear": Tally(mul=8, add=7), "bicubic": Tally(mul=16, add=15)}

def _interpolation(per: Tally):
    def count(outs):                              # weighted sum of the 2^d (4^d for bicubic) neighbours
        return per * _out(outs)
    return count


for _mode, _dims in (("nearest", (1, 2, 3)), ("linear", (1,)), ("bilinear", (2,)), ("trilinear", (3,)),
                     ("bicubic", (2,))):
    _ops = [f"aten::upsample_{_mode}{d}d" for d in _dims]
    if _mode == "nearest":
        _ops += [f"aten::_upsample_nearest_exact{d}d" for d in _dims]
    register(*_ops, category="upsample")(_interpolation(_INTERP[_mode]))
