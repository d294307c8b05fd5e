"""Recurrent layers (LSTM, GRU, RNN tanh/relu): one handle per ATen op, from the weights' shapes.

Every (layer, direction) runs one step per row of the sequence: ``rows = T * B`` for a padded batch, the
length of the packed data for a packed sequence (``sum(batch_sizes)``). Per row and per hidden unit:

- projections: ``x W_ih^T`` and ``h W_hh^T`` (1 mul + 1 acc per MAC), each bias 1 acc, and 1 acc to sum them
  per gate (G gates: LSTM 4, GRU 3, RNN 1); an LSTM projection (``proj_size``) adds ``h W_hr^T``;
- LSTM cell: 3 sigmoids (i, f, o), tanh(g), ``c = f c + i g`` (2 mul, 1 add), ``h = o tanh(c)`` (1 mul, 1 tanh);
- GRU cell: 2 sigmoids (r, z), ``n = tanh(x_n + r * h_n)`` (the product: 1 mul), ``h = n + z (h - n)``
  (2 add, 1 mul);
- RNN cell: tanh (exp) or relu (cmp).

A sigmoid is ``1 / (1 + e^-x)`` (exp, add, div), a tanh one exp, as for the activations.

The CPU LSTM's backward (``mkldnn_rnn_layer_backward``, one call per layer and direction), per row: the four
products of the gate gradients with the weights and with the layer's inputs and states (``dX``, ``dW_ih``,
``dH``, ``dW_hh``: ``2 * 4H * (I + H)`` MACs), the bias gradient (the gate gradients summed over the rows, once
for both biases); per row and hidden unit the cell's chain rule (:data:`LSTM_CELL_BACKWARD`).

>>> import torch
>>> from adderconv.analysis.registry import HANDLES
>>> HANDLES[torch.ops.aten.rnn_relu.input]([(5, 2, 3)], dict(input=(5, 2, 4), params=[(3, 4), (3, 3)],
...     has_biases=False, num_layers=1, bidirectional=False, batch_first=False))
Tally(mul=210, acc=240, cmp=30)
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .counts import Tally
from .registry import register

__all__ = ["recurrent_tally", "lstm_backward_tally", "GATES", "LSTM_CELL_BACKWARD"]

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
_SIGMOID = Tally(exp=1, add=1, div=1)
_CELL = {   # per row and hidden unit, after the projections and the gate sums
    "lstm": _SIGMOID * 3 + Tally(exp=2, mul=3, add=1),
    "gru": _SIGMOID * 2 + Tally(exp=1, mul=2, add=2),
    "rnn_tanh": Tally(exp=1),
    "rnn_relu": Tally(cmp=1),
}

#: per row and hidden unit: dh = g_out + g_next (1 add); tanh(c) again (1 exp); do = dh tanh(c), dc += dh o
#: (1 - tanh(c)^2) (4 mul, 2 add); di, dg, df, dc_prev = dc times g, i, c_prev, f (4 mul); through the three
#: sigmoids s (1 - s) (2 mul, 1 add each) and the tanh 1 - g^2 (2 mul, 1 add).
LSTM_CELL_BACKWARD = Tally(add=1 + 2 + 3 + 1, exp=1, mul=4 + 4 + 6 + 2)


def recurrent_tally(kind: str, rows: int, params: Sequence[Any], has_biases: bool, num_layers: int,
                    bidirectional: bool) -> Tally:
    """The whole recurrent op over ``rows`` steps x batch (see the module's conventions)."""
    gates, groups = GATES[kind], num_layers * (2 if bidirectional else 1)
    per = 2 + 2 * bool(has_biases)
    if len(params) not in (groups * per, groups * (per + 1)):
        raise ValueError(f"{kind}: {len(params)} weight tensors for {groups} layer-directions")
    stride = len(params) // groups            # + 1 when the LSTM has a projection (w_hr)
    total = Tally()
    for g in range(groups):
        w_ih, w_hh = params[g * stride], params[g * stride + 1]
        if not all(isinstance(w, tuple) and len(w) == 2 for w in (w_ih, w_hh)):
            raise ValueError(f"{kind}: expected 2-d weights, got {w_ih!r}, {w_hh!r}")
        hidden = w_ih[0] // gates
        macs = rows * (math.prod(w_ih) + math.prod(w_hh))
        adds = rows * gates * hidden * (1 + 2 * bool(has_biases))   # the gate sums, both biases
        if stride == per + 1:                  # LSTM projection h = (o tanh c) W_hr^T
            macs += rows * math.prod(params[g * stride + stride - 1])
        total = total + Tally(mul=macs, acc=macs + adds) + _CELL[kind] * (rows * hidden)
    return total


def _rows(x: Any, what: str) -> int:
    if not isinstance(x, tuple) or len(x) < 2:
        raise ValueError(f"expected a tensor shape for {what}, got {x!r}")
    return math.prod(x[:-1])                  # T * B (either layout) or the packed rows


def _handles(kind: str):
    def padded(outs, input, params, has_biases, num_layers, bidirectional):
        return recurrent_tally(kind, _rows(input, "input"), params, has_biases, num_layers, bidirectional)

    def packed(outs, data, params, has_biases, num_layers, bidirectional):
        return recurrent_tally(kind, _rows(data, "data"), params, has_biases, num_layers, bidirectional)

    register(f"aten::{kind}.input", category="recurrent")(padded)
    register(f"aten::{kind}.data", category="recurrent")(packed)


for _kind in GATES:
    _handles(_kind)


_MKLDNN_LSTM = 2   # the mode mkldnn_rnn_layer is given for an LSTM


def lstm_backward_tally(rows: int, w_ih: Any, w_hh: Any, has_biases: bool) -> Tally:
    """One layer-direction of an LSTM's backward over ``rows`` steps x batch (see the module)."""
    if not all(isinstance(w, tuple) and len(w) == 2 for w in (w_ih, w_hh)):
        raise ValueError(f"lstm backward: expected 2-d weights, got {w_ih!r}, {w_hh!r}")
    gates, hidden = w_ih[0], w_hh[1]
    macs = 2 * rows * (math.prod(w_ih) + math.prod(w_hh))
    bias = (rows - 1) * gates if has_biases else 0
    return Tally(mul=macs, acc=macs, add=bias) + LSTM_CELL_BACKWARD * (rows * hidden)


@register("aten::mkldnn_rnn_layer_backward", category="recurrent")
def _mkldnn_lstm_backward(outs, input, weight1, weight2, mode, has_biases):
    if mode != _MKLDNN_LSTM:
        raise ValueError(f"mkldnn rnn mode {mode} is not an LSTM")
    return lstm_backward_tally(_rows(input, "input"), weight1, weight2, bool(has_biases))
