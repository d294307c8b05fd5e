"""LSTM, GRU and RNN (tanh/relu) counts against hand formulas written from the layer's hyper-parameters,
both captures agreeing, and the projections' MACs against torch's FLOP counter where ATen's CPU path
decomposes the layer into matrix products it can see (GRU, RNN)."""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils.flop_counter import FlopCounterMode

from adderconv.analysis import Tally, count_ops

SIGMOID = Tally(exp=1, add=1, div=1)
CELL = {  # per step and hidden unit, after the projections (see analysis/handles_rnn.py's conventions)
    "LSTM": SIGMOID * 3 + Tally(exp=1) + Tally(mul=2, add=1) + Tally(exp=1, mul=1),   # gates, c, h = o tanh(c)
    "GRU": SIGMOID * 2 + Tally(mul=1) + Tally(exp=1) + Tally(add=2, mul=1),            # r z, r*h_n, tanh, h
    "RNN_tanh": Tally(exp=1),
    "RNN_relu": Tally(cmp=1),
}
GATES = {"LSTM": 4, "GRU": 3, "RNN_tanh": 1, "RNN_relu": 1}


def hand(kind, steps, input_size, hidden, layers=1, bidirectional=False, bias=True, proj=0):
    """Every (layer, direction) runs `steps` rows (T * B, or the packed length)."""
    g, dirs = GATES[kind], 2 if bidirectional else 1
    out = proj or hidden
    total = Tally()
    for layer in range(layers):
        width = input_size if layer == 0 else out * dirs
        macs = steps * g * hidden * (width + out) + steps * proj * hidden
        adds = steps * g * hidden * (1 + 2 * bias)         # sum of the two projections, both biases
        total = total + (Tally(mul=macs, acc=macs + adds) + CELL[kind] * (steps * hidden)) * dirs
    return total


def _make(kind, *args, **kw):
    if kind.startswith("RNN_"):
        return nn.RNN(*args, nonlinearity=kind[4:], **kw)
    return getattr(nn, kind)(*args, **kw)


def _both(model, *inputs, jit=True):
    model.eval()
    with torch.no_grad():
        ours = count_ops(model, inputs)
        traced = count_ops(model, inputs, capture="jit") if jit else ours
    assert ours.unsupported == traced.unsupported == {}, (ours.unsupported, traced.unsupported)
    assert ours.total == traced.total
    return ours


@pytest.mark.parametrize("kind", list(GATES))
@pytest.mark.parametrize("layers,bidirectional,batch_first", [(1, False, False), (2, True, False), (3, False, True)])
def test_recurrent_layers_equal_the_hand_formula(kind, layers, bidirectional, batch_first):
    rnn = _make(kind, 5, 7, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
    x = torch.randn(3, 4, 5) if batch_first else torch.randn(4, 3, 5)     # T=4, B=3 either way
    c = _both(rnn, x)
    assert c.total == hand(kind, 12, 5, 7, layers, bidirectional)
    assert c.layers[0].by_category() == {"recurrent": c.total}


@pytest.mark.parametrize("kind", list(GATES))
def test_packed_sequences_count_only_the_real_steps(kind):
    rnn = _make(kind, 3, 4, bias=False)
    x = torch.randn(5, 3, 3)                      # T=5, B=3 with lengths 5, 2, 1: 8 real steps
    packed = pack_padded_sequence(x, [5, 2, 1])
    # (the TorchScript tracer turns the PackedSequence into a plain tuple, which nn.RNN's forward rejects)
    assert _both(rnn, packed, jit=False).total == hand(kind, 8, 3, 4, bias=False)
    assert count_ops(rnn, packed, capture="real").total == hand(kind, 8, 3, 4, bias=False)


def test_lstm_with_a_projection():
    lstm = nn.LSTM(6, 8, proj_size=3, num_layers=2)
    assert _both(lstm, torch.randn(2, 2, 6)).total == hand("LSTM", 4, 6, 8, 2, proj=3)


@pytest.mark.parametrize("kind", ["GRU", "RNN_tanh"])
def test_projection_macs_equal_torchs_flop_counter(kind):
    rnn = _make(kind, 5, 7, num_layers=2, bidirectional=True).eval()
    x = torch.randn(4, 3, 5)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:      # ATen's CPU path: addmm per step
        rnn(x)
    macs = sum(w.numel() for n, w in rnn.named_parameters() if n.startswith("weight")) * 12
    assert fc.get_total_flops() // 2 == macs
    cell_mul = (CELL[kind] * (12 * 7 * 4))["mul"]                  # 2 layers x 2 directions of 12 x 7 cells
    assert count_ops(rnn, x).total["mul"] == macs + cell_mul
