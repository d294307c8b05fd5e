"""Per-element handles: arithmetic, activations, their backward ops, the optimizer's update ops, and the
ops ignored on purpose (views, copies, creation: no arithmetic), each with its reason.

A per-element handle counts a fixed tally per output element (the formulas are in the table below).
Backward formulas count what the derivative computes from what the forward kept (e.g. sigmoid: g y (1 - y)).

>>> import torch
>>> from adderconv.analysis.registry import HANDLES
>>> HANDLES[torch.ops.aten.sigmoid].fn([(2, 5)])
Tally(add=10, div=10, exp=10)
"""
from __future__ import annotations

import math

from .counts import Tally
from .registry import register

__all__ = ["PER_ELEMENT", "PER_ELEMENT_BACKWARD", "ZERO_ARITHMETIC"]


def _elementwise(per: Tally):
    def count(outs):
        return per * math.prod(outs[0])
    return count


#: (ATen names, tally per output element, category); each name also registers its in-place ``name_``.
PER_ELEMENT: tuple[tuple[tuple[str, ...], Tally, str], ...] = (
    (("mul", "square"), Tally(mul=1), "elementwise"),
    (("div", "reciprocal"), Tally(div=1), "elementwise"),
    (("eq", "ne", "lt", "le", "gt", "ge", "sign"), Tally(cmp=1), "elementwise"),
    (("addcmul",), Tally(mul=2, add=1), "elementwise"),                # self + value * t1 * t2
    (("addcdiv",), Tally(div=1, mul=1, add=1), "elementwise"),         # self + value * t1 / t2
    (("lerp",), Tally(add=2, mul=1), "elementwise"),                   # self + w (end - self)
    (("relu", "threshold", "clamp_min", "clamp_max"), Tally(cmp=1), "activation"),
    (("hardtanh", "relu6", "clamp"), Tally(cmp=2), "activation"),
    (("leaky_relu",), Tally(cmp=1, mul=1), "activation"),
    (("prelu", "_prelu_kernel"), Tally(cmp=1, mul=1), "activation"),
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
    (("maximum", "minimum", "fmax", "fmin"), Tally(cmp=1), "elementwise"),   # T5's relative-position buckets
    (("sin", "cos"), Tally(exp=1), "math"),                            # transcendental, as exp (rotary tables)
    (("log2",), Tally(log=1), "math"),
    (("round", "floor", "ceil", "trunc"), Tally(add=1), "math"),       # float to integer: the adder's shift+round
    (("softmax", "_softmax", "log_softmax", "_log_softmax", "_safe_softmax"),
     Tally(cmp=1, add=2, exp=1, div=1), "softmax"),   # max, x - max and the sum, exp, normalise
)

#: backward ops (no in-place forms): tally per element of the gradient they produce.
PER_ELEMENT_BACKWARD: tuple[tuple[tuple[str, ...], Tally, str], ...] = (
    (("threshold_backward",), Tally(cmp=1), "activation"),             # g where x > t
    (("hardtanh_backward",), Tally(cmp=2), "activation"),
    (("leaky_relu_backward",), Tally(cmp=1, mul=1), "activation"),
    (("sigmoid_backward",), Tally(mul=2, add=1), "activation"),        # g y (1 - y)
    (("tanh_backward",), Tally(mul=2, add=1), "activation"),           # g (1 - y^2)
    (("gelu_backward",), Tally(exp=2, mul=5, add=2), "activation"),    # g (Phi(x) + x phi(x))
    (("silu_backward",), Tally(exp=1, div=1, mul=3, add=2), "activation"),   # g s (1 + x (1 - s))
    (("hardswish_backward",), Tally(cmp=2, mul=2, add=1), "activation"),
    (("hardsigmoid_backward",), Tally(cmp=2, mul=1), "activation"),
    (("elu_backward",), Tally(cmp=1, mul=2, add=1), "activation"),
    (("_softmax_backward_data",), Tally(mul=2, add=2), "softmax"),     # y (g - sum(g y))
    (("_log_softmax_backward_data",), Tally(exp=1, mul=1, add=2), "softmax"),   # g - e^y sum(g)
)

def _with_inplace(names: tuple[str, ...]) -> list[str]:
    """``aten::relu`` and, where ATen has it, ``aten::relu_`` (the base name must exist: a typo raises)."""
    import torch

    return [f"aten::{n}{s}" for n in names for s in ("", "_") if not s or hasattr(torch.ops.aten, n + s)]


for _ops, _per, _cat in PER_ELEMENT:
    register(*_with_inplace(_ops), category=_cat)(_elementwise(_per))
for _ops, _per, _cat in PER_ELEMENT_BACKWARD:
    register(*(f"aten::{op}" for op in _ops), category=_cat)(_elementwise(_per))


@register(*_with_inplace(("add", "sub", "rsub")), category="elementwise")
def _add(outs, alpha=1):
    n = math.prod(outs[0])
    return Tally(add=n, mul=n if alpha not in (1, None) else 0)   # a + alpha * b: alpha != 1 is a product


@register("aten::embedding_dense_backward", category="embedding")
def _embedding_backward(outs, grad_output, indices, scale_grad_by_freq):
    """Each gradient row is added into its token's row of the weight gradient (1 add per element); scaling by
    frequency first counts the tokens (1 add per index) and divides every gradient element by its count."""
    n = math.prod(grad_output)
    if scale_grad_by_freq:
        return Tally(add=n + math.prod(indices), div=n)
    return Tally(add=n)


@register("aten::pow", "aten::pow_", category="math")
def _pow(outs, exponent):
    n = math.prod(outs[0])
    if exponent == 2:
        return Tally(mul=n)
    if exponent == 0.5:
        return Tally(sqrt=n)
    return Tally(log=n, mul=n, exp=n)                  # x ** y = exp(y ln x)


# --- ignored on purpose: no arithmetic -----------------------------------------------------------------------

#: reason -> ATen names (each must exist: a typo is an error at import).
ZERO_ARITHMETIC: dict[str, tuple[str, ...]] = {
    "moves or reshapes data, no arithmetic": (
        "view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "permute", "transpose", "t",
        "expand", "expand_as", "contiguous", "narrow", "select", "slice", "chunk", "split", "split_with_sizes",
        "unbind", "unsafe_split", "unsafe_chunk", "stack", "cat", "concat", "repeat", "roll", "flip",
        "pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "native_channel_shuffle", "movedim", "as_strided",
        "as_strided_", "view_as", "reshape_as", "type_as", "to", "_to_copy", "detach", "clone", "copy_", "index",
        "index_select", "gather", "masked_fill", "masked_fill_", "constant_pad_nd", "pad", "reflection_pad1d",
        "reflection_pad2d", "replication_pad1d", "replication_pad2d", "upsample_nearest2d_backward",
        "lift_fresh", "lift_fresh_copy", "alias", "_unsafe_view", "index_put_", "index_put", "scatter", "where",
        "squeeze_", "unsqueeze_", "transpose_", "t_", "slice_backward", "select_backward", "_reshape_alias",
        "new_empty_strided", "empty_strided", "split_with_sizes_copy", "_local_scalar_dense", "resize_",
        "set_", "detach_", "masked_scatter", "index_add", "embedding", "meshgrid",
    ),
    "creates tensors or reads shapes, no arithmetic on data": (
        "zeros", "ones", "zeros_like", "ones_like", "full", "full_like", "empty", "empty_like", "new_zeros",
        "new_empty", "new_full", "new_ones", "arange", "linspace", "tensor", "scalar_tensor", "size", "numel",
        "dim", "ScalarImplicit", "Int", "Float", "Bool", "IntImplicit", "FloatImplicit", "zero_", "fill_",
        "floor_divide", "remainder", "__and__", "__or__", "bitwise_not", "sym_size", "sym_numel", "sym_stride",
        "bernoulli_", "rand", "randn", "normal_", "uniform_", "_shape_as_tensor",
    ),
    "logic on masks or bits (and, or, xor, not), no arithmetic": (
        "bitwise_and", "bitwise_or", "bitwise_xor", "logical_and", "logical_or", "logical_xor", "logical_not",
        "bitwise_and_", "bitwise_or_", "logical_and_", "logical_or_", "logical_not_",
    ),
    "identity at inference (dropout is off in eval)": (
        "dropout", "dropout_", "feature_dropout", "feature_dropout_", "alpha_dropout", "alpha_dropout_",
        "native_dropout",
    ),
    "sign-bit operation (abs, neg), free in hardware": ("abs", "abs_", "neg", "neg_"),
}


def _register_ignored() -> None:
    from .registry import ignore

    for reason, ops in ZERO_ARITHMETIC.items():
        ignore([f"aten::{op}" for op in ops], reason)
    ignore(["profiler::_record_function_enter_new", "profiler::_record_function_exit"],
           "profiler bookkeeping (torch.optim marks its steps), no arithmetic")


_register_ignored()
