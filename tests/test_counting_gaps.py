"""Counting gaps found on real models (issue 28, items 2 and 3), each against a hand formula: work the jit
capture's trace would drop as dead code, LSTM and embedding backward, T5's minimum, rotary sin/cos, the
detection heads' ops under the real capture, and zero-arithmetic ops the tracer used to list as unsupported."""
import pytest
import torch
import torchvision
from torch import nn

from adderconv.analysis import Tally, count_ops
from adderconv.analysis.handles_detection import nms_tally, sort_comparisons
from adderconv.analysis.handles_rnn import LSTM_CELL_BACKWARD


def _by_op(counts, op):
    return Tally.sum(o.tally for layer in counts.layers for o in layer.ops if o.op == op)


# --- item 2: the jit capture counts what the forward computes but does not return ------------------------------

class _Pooled(nn.Module):
    """A pooler-like side output: a Linear whose result is kept on ``self``, and a product kept the same way."""

    def __init__(self):
        super().__init__()
        self.head, self.pooler = nn.Linear(8, 8, bias=False), nn.Linear(8, 8, bias=False)

    def forward(self, x):
        self.pooled = self.pooler(x)
        self.scores = x @ self.head.weight
        return self.head(x)


def test_the_jit_capture_counts_work_whose_result_is_not_returned():
    model, x = _Pooled().eval(), torch.randn(2, 8)
    dispatch, jit = count_ops(model, x), count_ops(model, x, capture="jit")
    assert dispatch.total == Tally(mul=3 * 128, acc=3 * 128)       # three 2x8 @ 8x8 products
    assert jit.total == dispatch.total and jit.unsupported == {}
    assert {n.name: n.tally for n in jit.layers} == {n.name: n.tally for n in dispatch.layers}


def test_the_jit_capture_ignores_shape_tensors_and_meshgrid_with_a_reason(fn_module):
    def grid(x):
        shape = torch._shape_as_tensor(x)
        gy, gx = torch.meshgrid(x[0, 0, :, 0], x[0, 0, 0, :], indexing="ij")
        return x * shape[0] + gy + gx

    counts = count_ops(fn_module(grid), torch.randn(1, 2, 3, 4), capture="jit")
    assert counts.unsupported == {}
    assert {"aten::_shape_as_tensor", "aten::meshgrid"} <= set(counts.ignored)


# --- item 3: per-element ops on transformer paths ----------------------------------------------------------------

@pytest.mark.parametrize("capture", ["dispatch", "jit"])
def test_minimum_maximum_sin_cos_log2_and_rounding(capture, fn_module):
    def f(a, b):
        rotary = torch.cat([a.sin(), a.cos()], -1)              # 2 * 12 transcendental
        bucket = torch.minimum(a, b) + torch.maximum(a, b)      # 2 * 12 comparisons, 12 adds
        return rotary, bucket, torch.log2(b.abs() + 1).floor() + torch.round(a) + torch.ceil(b)

    counts = count_ops(fn_module(f), (torch.randn(3, 4), torch.randn(3, 4)), capture=capture)
    n = 12
    assert counts.unsupported == {}
    rounding = Tally(add=3 * n) + Tally(add=2 * n)             # floor, round, ceil; the two sums
    assert counts.total == Tally(exp=2 * n, cmp=2 * n, add=n) + Tally(add=n, log=n) + rounding


def test_bitwise_and_is_ignored_with_a_reason(fn_module):
    counts = count_ops(fn_module(lambda a, b: (a > 0) & (b > 0)), (torch.randn(5), torch.randn(5)))
    assert counts.unsupported == {} and counts.total == Tally(cmp=10)
    assert counts.ignored["aten::bitwise_and"] == 1


# --- item 3: backward of embeddings and of the CPU LSTM ------------------------------------------------------------

@pytest.mark.parametrize("by_freq", [False, True])
def test_embedding_backward_adds_every_gradient_row_into_the_table(by_freq):
    emb = nn.Embedding(10, 4, scale_grad_by_freq=by_freq)
    tokens = torch.randint(0, 10, (2, 3))
    counts = count_ops(emb, tokens, training=True)
    n = 2 * 3 * 4                                             # gradient elements
    expected = Tally(add=n + 6, div=n) if by_freq else Tally(add=n)
    assert counts.unsupported == {} and _by_op(counts, "aten::embedding_dense_backward") == expected


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="the CPU LSTM runs on oneDNN")
@pytest.mark.parametrize("capture", ["dispatch", "real"])
def test_lstm_backward_equals_the_hand_formula(capture):
    t, b, i, h = 5, 3, 8, 6
    lstm = nn.LSTM(i, h, num_layers=2, bidirectional=True)
    counts = count_ops(lstm, torch.randn(t, b, i), training=True, capture=capture)
    assert counts.unsupported == {}
    rows, expected = t * b, Tally()
    for d_in in (i, i, 2 * h, 2 * h):                          # layer 0 both directions, then layer 1
        macs = 2 * rows * (4 * h * d_in + 4 * h * h)           # dX, dW_ih, dH, dW_hh
        expected += Tally(mul=macs, acc=macs, add=(rows - 1) * 4 * h) + LSTM_CELL_BACKWARD * (rows * h)
    assert _by_op(counts, "aten::mkldnn_rnn_layer_backward") == expected


# --- item 3: sorting, selection and the detection heads' ops ---------------------------------------------------------

def test_sort_topk_argmax_and_nonzero(fn_module):
    x = torch.randn(4, 16)
    counts = count_ops(fn_module(lambda x: (x.sort(dim=1)[0], x.topk(5, dim=1)[1], torch.topk(x, 1, dim=0)[0])), x)
    sort = 4 * 16 * 4                                          # 4 rows of 16: 16 * log2(16) each
    topk = 4 * 16 * (1 + 3) + 16 * 4 * 1                       # heap of 5: 1 + ceil(log2 5); k = 1: one compare
    assert counts.unsupported == {} and counts.total == Tally(cmp=sort + topk)
    arg = count_ops(fn_module(lambda x: (x.argmax(dim=1), x.argmin())), x)
    assert arg.unsupported == {} and arg.total == Tally(cmp=4 * 15 + 63)
    real = count_ops(fn_module(lambda x: (x > 0).nonzero()), x, capture="real")
    assert real.unsupported == {} and real.total == Tally(cmp=64 + 64)    # the comparison, then the scan


def test_unique_sorts_then_compares_neighbours(fn_module):
    x = torch.tensor([3, 1, 3, 2, 1, 5, 5, 0])
    counts = count_ops(fn_module(lambda x: torch.unique(x)), x, capture="real")
    assert counts.unsupported == {} and counts.total == Tally(cmp=8 * 3 + 7)
    assert sort_comparisons(8) == 24 and sort_comparisons(1) == 0


def test_nms_counts_each_kept_box_against_every_later_box(fn_module):
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [21, 21, 31, 31], [50, 50, 60, 60.]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    counts = count_ops(fn_module(lambda b, s: torchvision.ops.nms(b, s, 0.5)), (boxes, scores), capture="real")
    kept = 3                                                   # boxes 0, 2, 4 (1 and 3 overlap their leader)
    # the kernel compared 0 with 1..4 and 2 with 3..4 (6 pairs); shapes show only that 3 of 5 were kept, and
    # the bound for 3 kept is 3 leaders at the top of the order: 4 + 3 + 2 pairs
    pairs = 4 + 3 + 2
    iou = Tally(cmp=7, add=4, mul=1, div=1)
    expected = Tally(cmp=5 * 3) + Tally(add=2 * 5, mul=5) + iou * pairs
    assert counts.unsupported == {} and counts.total == expected == nms_tally(5, kept)


@pytest.mark.parametrize("capture", ["dispatch", "real"])
def test_roi_align_and_its_backward(capture, fn_module):
    feats = torch.randn(1, 3, 8, 8)
    rois = torch.tensor([[0, 0.0, 0.0, 4.0, 4.0], [0, 2.0, 2.0, 7.0, 6.0]])

    def f(x):
        return torchvision.ops.roi_align(x, rois, output_size=(2, 3), spatial_scale=1.0, sampling_ratio=2)

    counts = count_ops(fn_module(f), feats.requires_grad_(True), training=True, capture=capture)
    k, c, bins, s = 2, 3, 2 * 3, 4                             # boxes, channels, bins, points per bin
    n = k * c * bins
    forward = Tally(mul=6 * k * bins * s + 4 * s * n, add=6 * k * bins * s, acc=4 * s * n, div=n)
    assert counts.unsupported == {}
    assert _by_op(counts, "torchvision::roi_align") == forward
    assert _by_op(counts, "torchvision::_roi_align_backward") == Tally(div=n, mul=10 * s * n, add=10 * s * n)


def test_roi_align_with_an_adaptive_grid_is_listed_not_guessed(fn_module):
    box = [torch.tensor([[0.0, 0, 4, 4]])]
    f = fn_module(lambda x: torchvision.ops.roi_align(x, box, output_size=2, sampling_ratio=-1))
    counts = count_ops(f, torch.randn(1, 2, 8, 8), capture="real")
    assert counts.total == Tally() and len(counts.unsupported) == 1
    assert "sampling_ratio" in next(iter(counts.unsupported))
