"""Each counting handle against counts worked out by hand, and the MAC-type ops against torch's own
dispatch-level FLOP counter (an independent capture: torch.utils.flop_counter counts 2 FLOPs per MAC).
Every hand-formula case runs through both captures (dispatch on fake tensors, and the TorchScript tracer):
they see different ops (``convolution`` vs ``_convolution``, ``addmm`` vs ``linear``) and must agree."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from adderconv import AdderConv2d, AdderLinear
from adderconv.analysis import Tally, count_ops


class Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


def counted(model, *inputs):
    model.eval()
    with torch.no_grad():
        counts = count_ops(model, tuple(inputs))
        traced = count_ops(model, tuple(inputs), capture="jit")
    assert counts.unsupported == {} and traced.unsupported == {}, (counts.unsupported, traced.unsupported)
    assert counts.total == traced.total
    return counts


def torch_macs(model, *inputs):
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(*inputs)
    return fc.get_total_flops() // 2


@pytest.mark.parametrize("groups,dilation,stride,bias", [(1, 1, 1, False), (2, 2, 1, True), (4, 1, 2, False),
                                                         (8, 1, 1, True)])
def test_conv2d_all_geometries(groups, dilation, stride, bias):
    conv = nn.Conv2d(8, 16, 3, stride=stride, padding=1, dilation=dilation, groups=groups, bias=bias)
    x = torch.randn(2, 8, 10, 12)
    out = conv(x).shape
    macs = 2 * 16 * out[2] * out[3] * (8 // groups) * 3 * 3          # N * C_out * H * W * (C_in/g) * k * k
    assert counted(conv, x).total == Tally(mul=macs, acc=macs + (out.numel() if bias else 0))
    assert macs == torch_macs(conv, x)


@pytest.mark.parametrize("conv,x", [
    (nn.Conv1d(4, 6, 5, padding=2, groups=2), torch.randn(3, 4, 20)),
    (nn.Conv3d(2, 4, 3, bias=False), torch.randn(1, 2, 5, 6, 7)),
    (nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2, bias=False), torch.randn(2, 4, 5, 5)),
    (nn.ConvTranspose1d(3, 5, 4, stride=3, bias=False), torch.randn(2, 3, 7)),
])
def test_conv_1d_3d_transposed(conv, x):
    w = conv.weight.shape
    if isinstance(conv, (nn.ConvTranspose1d, nn.ConvTranspose2d)):
        # every input element scatters into C_out/g * prod(k) outputs
        macs = x.numel() // x.shape[1] * conv.in_channels * (conv.out_channels // conv.groups) * w[2:].numel()
    else:
        out = conv(x)
        macs = out.numel() * (conv.in_channels // conv.groups) * w[2:].numel()
    bias = conv(x).numel() if conv.bias is not None else 0
    assert counted(conv, x).total == Tally(mul=macs, acc=macs + bias)
    assert macs == torch_macs(conv, x)


def test_adder_conv_is_two_adds_per_mac_and_no_mul():
    layer = AdderConv2d(6, 12, 3, stride=2, padding=1, dilation=1, groups=3)
    x = torch.randn(2, 6, 9, 9)
    macs = 2 * 12 * 5 * 5 * (6 // 3) * 9
    c = counted(layer, x)
    assert c.total == Tally(add=macs, acc=macs)
    assert c.by_operator() == {"adderconv::adder_conv2d": Tally(add=macs, acc=macs)}
    assert c.layers[0].name == "" and c.layers[0].type == "AdderConv2d"


def test_adder_linear_and_reflect_padded_adder():
    c = counted(AdderLinear(10, 4), torch.randn(3, 10))
    assert c.total == Tally(add=3 * 4 * 10, acc=3 * 4 * 10)
    layer = AdderConv2d(2, 3, 3, padding=1, padding_mode="reflect", bias=True)
    c = counted(layer, torch.randn(1, 2, 6, 6))
    assert c.total == Tally(add=3 * 36 * 2 * 9 + 3 * 36, acc=3 * 36 * 2 * 9)     # adder MACs + bias


def test_linear_matmul_bmm_einsum():
    lin = nn.Linear(7, 5)
    x = torch.randn(2, 3, 7)
    assert counted(lin, x).total == Tally(mul=2 * 3 * 5 * 7, acc=2 * 3 * 5 * 7 + 2 * 3 * 5)
    a, b = torch.randn(4, 3, 6), torch.randn(4, 6, 2)
    for fn in (torch.matmul, torch.bmm, lambda p, q: torch.einsum("bij,bjk->bik", p, q)):
        m = Fn(fn)
        assert counted(m, a, b).total == Tally(mul=4 * 3 * 2 * 6, acc=4 * 3 * 2 * 6)
        assert torch_macs(m, a, b) == 4 * 3 * 2 * 6
    v = torch.randn(6)
    assert counted(Fn(torch.matmul), a, v).total == Tally(mul=4 * 3 * 6, acc=4 * 3 * 6)


def test_sdpa():
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 4)
    m = Fn(F.scaled_dot_product_attention)
    scores = 2 * 3 * 5 * 7
    macs = scores * 8 + scores * 4
    t = counted(m, q, k, v).total
    assert t == Tally(mul=macs + scores, acc=macs, add=2 * scores, cmp=scores, exp=scores, div=scores)
    assert macs == torch_macs(m, q, k, v)


def test_batchnorm_eval_and_training():
    bn = nn.BatchNorm2d(4)
    x = torch.randn(2, 4, 3, 3)
    assert counted(bn, x).total == Tally(mul=72, add=72)     # eval: one affine per element
    t = count_ops(bn, (x,), training=True).by_phase()["forward"]     # a training count runs BN in train mode
    # statistics + normalise + affine, per channel sqrt/reciprocal; + 1 add: num_batches_tracked += 1
    assert t == Tally(add=4 * 72 + 4 + 1, mul=3 * 72, sqrt=4, div=4)


def test_layer_group_instance_norm():
    x = torch.randn(2, 6, 4, 4)
    n = x.numel()
    # mean (add), variance (sub, mul, add), normalise (sub, mul), per group sqrt + reciprocal, affine mul+add
    assert counted(nn.LayerNorm([4, 4]), x).total == Tally(add=4 * n + 12 + n, mul=2 * n + n, sqrt=12, div=12)
    assert counted(nn.GroupNorm(3, 6), x).total == Tally(add=4 * n + 6 + n, mul=3 * n, sqrt=6, div=6)
    assert counted(nn.InstanceNorm2d(6), x).total == Tally(add=4 * n + 12, mul=2 * n, sqrt=12, div=12)


def test_pooling():
    x = torch.randn(1, 2, 8, 8)
    assert counted(nn.MaxPool2d(2), x).total == Tally(cmp=2 * 16 * 3)          # 3 comparisons per 2x2 window
    assert counted(nn.AvgPool2d(3, stride=1), x).total == Tally(add=2 * 36 * 8, mul=2 * 36)
    assert counted(nn.AdaptiveAvgPool2d(1), x).total == Tally(add=128 - 2, mul=2)
    assert counted(nn.AdaptiveMaxPool2d(2), x).total == Tally(cmp=128 - 8)
    assert counted(Fn(lambda t: t.mean((2, 3))), x).total == Tally(add=126, mul=2)


def test_elementwise_and_activations():
    x = torch.randn(2, 5)
    n = 10
    cases = [
        (lambda t: t + t, Tally(add=n)), (lambda t: t - 1, Tally(add=n)), (lambda t: t * t, Tally(mul=n)),
        (lambda t: t / 3, Tally(div=n)), (nn.ReLU(), Tally(cmp=n)), (nn.ReLU6(), Tally(cmp=2 * n)),
        (nn.Hardtanh(), Tally(cmp=2 * n)), (nn.Sigmoid(), Tally(exp=n, add=n, div=n)),
        (nn.SiLU(), Tally(exp=n, add=n, div=n, mul=n)), (nn.Tanh(), Tally(exp=n)),
        (nn.GELU(), Tally(exp=n, mul=2 * n, add=n)), (nn.Hardswish(), Tally(add=n, cmp=2 * n, mul=2 * n)),
        (nn.Hardsigmoid(), Tally(add=n, cmp=2 * n, mul=n)), (nn.LeakyReLU(), Tally(cmp=n, mul=n)),
        (nn.Softmax(-1), Tally(cmp=n, add=2 * n, exp=n, div=n)), (torch.exp, Tally(exp=n)),
        (torch.sqrt, Tally(sqrt=n)), (torch.sign, Tally(cmp=n)),
    ]
    for fn, expected in cases:
        m = fn if isinstance(fn, nn.Module) else Fn(fn)
        assert counted(m, x.abs()).total == expected, fn


def test_upsampling():
    x = torch.randn(1, 3, 4, 4)
    out = 3 * 8 * 8
    assert counted(nn.Upsample(scale_factor=2, mode="nearest"), x).total == Tally()
    assert counted(nn.Upsample(scale_factor=2, mode="bilinear"), x).total == Tally(mul=4 * out, add=3 * out)
    assert counted(nn.Upsample(scale_factor=2, mode="bicubic"), x).total == Tally(mul=16 * out, add=15 * out)


def test_layers_are_module_paths_and_residuals_belong_to_the_block():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1, bias=False)
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.conv(x)) + x

    model = nn.Sequential(Block(), Block())
    c = counted(model, torch.randn(1, 2, 3, 3))
    names = [(layer.name, layer.type) for layer in c.layers]
    assert names == [("0.conv", "Conv2d"), ("0.act", "ReLU"), ("0", "Block"), ("1.conv", "Conv2d"),
                     ("1.act", "ReLU"), ("1", "Block")]
    assert c.layer("0").tally == Tally(add=18) and c.layer("0.conv").tally == Tally(mul=36, acc=36)
    assert c.layer("0.conv").weights == 4 and c.layer("0.conv").act_in == 18 and c.layer("0.conv").act_out == 18


def test_nothing_is_dropped_silently():
    model = Fn(lambda t: torch.cumsum(t, 1).flatten() + torch.cumsum(t, 0).flatten())
    for capture, view in (("dispatch", "aten::view"), ("jit", "aten::flatten")):
        with torch.no_grad():
            c = count_ops(model, (torch.randn(3, 4),), capture=capture)
        assert c.unsupported == {"aten::cumsum": 2}
        assert c.ignored == {view: 2}
        assert c.total == Tally(add=12)


def test_duplicate_handle_registration_is_an_error():
    from adderconv.analysis import register

    with pytest.raises(ValueError, match="already"):
        register("aten::_convolution", category="conv")(lambda outs: Tally())
    with pytest.raises(ValueError, match="already"):
        register(torch.ops.aten.view, category="conv")(lambda outs: Tally())


def test_a_typo_in_a_registration_is_an_error_not_a_handle_that_never_matches():
    from adderconv.analysis import register
    from adderconv.analysis.registry import HANDLES

    before = dict(HANDLES)
    with pytest.raises(ValueError, match="no operator named 'aten::convolutoin'"):
        register("aten::convolutoin", category="conv")(lambda outs: Tally())
    with pytest.raises(ValueError, match="reads 'wieght'"):            # an argument the schema does not have
        register("aten::cumsum", category="reduce")(lambda outs, self, wieght: Tally())
    with pytest.raises(ValueError, match="name the arguments"):
        register("aten::cumsum", category="reduce")(lambda outs, **kw: Tally())
    assert HANDLES == before


def test_adaptive_pools_with_uneven_and_overlapping_windows():
    # 5 -> 2 rows: windows [0, 3) and [2, 5); 7 -> 3 columns: [0, 3), [2, 5), [4, 7): 6 x 9 elements per channel
    x = torch.randn(1, 2, 5, 7)
    assert counted(nn.AdaptiveAvgPool2d((2, 3)), x).total == Tally(add=2 * 6 * 9 - 12, mul=12)
    assert counted(nn.AdaptiveMaxPool2d((2, 3)), x).total == Tally(cmp=2 * 6 * 9 - 12)
    # upsampling (AlexNet/VGG at small inputs): every window is one element, nothing is summed
    assert counted(nn.AdaptiveAvgPool2d(6), torch.randn(1, 2, 1, 1)).total == Tally(mul=72)


def test_pow():
    x = torch.rand(3, 4) + 0.5
    assert counted(Fn(lambda t: t ** 2), x).total == Tally(mul=12)
    assert counted(Fn(lambda t: t.pow(0.5)), x).total == Tally(sqrt=12)
    assert counted(Fn(lambda t: t ** 1.7), x).total == Tally(exp=12, log=12, mul=12)


def test_multihead_attention_inference_fast_path():
    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, t):
            return self.mha(t, t, t, need_weights=False)[0]    # eval + no_grad: the fused inference op

    with torch.no_grad():                                # the dispatch capture sees the slow path's parts
        c = count_ops(SelfAttention().eval(), torch.randn(3, 5, 8))
        traced = count_ops(SelfAttention().eval(), torch.randn(3, 5, 8), capture="jit")
    assert set(traced.by_operator()) == {"aten::_native_multi_head_attention"}
    tokens, e, scores = 3 * 5, 8, 3 * 2 * 5 * 5
    proj = tokens * 3 * e * e + tokens * e * e           # q, k, v and output projections
    attn = 2 * scores * (e // 2)                         # Q K^T and P V over 2 heads of 4
    in_bias, out_bias = tokens * 3 * e, tokens * e
    # the packed in-projection of a transposed input runs as mm + add under dispatch (its bias an elementwise add),
    # the fused op adds it into the accumulator (acc): the same additions, of two kinds
    assert c.total == Tally(mul=proj + attn + scores, acc=proj + out_bias + attn, add=in_bias + 2 * scores,
                            cmp=scores, exp=scores, div=scores)
    assert traced.total == Tally(mul=proj + attn + scores, acc=proj + in_bias + out_bias + attn, add=2 * scores,
                                 cmp=scores, exp=scores, div=scores)


def test_vector_norms():
    x = torch.randn(3, 8)
    assert counted(Fn(lambda t: F.normalize(t, dim=1)), x).total == \
        Tally(mul=24, add=21, sqrt=3, cmp=3, div=24)                 # norm, clamp_min(eps), divide
    assert counted(Fn(lambda t: torch.linalg.vector_norm(t, 1, dim=1)), x).total == Tally(add=21)
    assert counted(Fn(lambda t: torch.linalg.vector_norm(t, float("inf"), dim=1)), x).total == Tally(cmp=21)
