"""Training counts per layer: each backward op belongs to the module whose forward created its autograd node,
whatever the module's place in its container (issue 28, item 1: a Sequential's last child used to lose its
backward to the Sequential). Checked layer by layer against hand formulas on torchvision's ResNet-18 and on an
adder layer that ends a Sequential."""
import copy
import math

import pytest
import torch
import torchvision
from torch import nn

import adderconv
from adderconv.analysis import Tally, count_ops


def _phases(counts):
    return {layer.name: layer.by_phase() for layer in counts.layers}


def _shapes(model, x):
    """Every named module's calls as (input shape, output shape), from a real forward on a copy."""
    model = copy.deepcopy(model)
    calls: dict[str, list] = {}
    for name, mod in model.named_modules():
        mod.register_forward_hook(lambda m, a, o, name=name: calls.setdefault(name, []).append(
            (tuple(a[0].shape), tuple(o.shape))))
    with torch.no_grad():
        model(x)
    return calls


def _bn_train(x):
    n, c = math.prod(x), x[1]
    forward = Tally(add=4 * n + c, mul=3 * n, sqrt=c, div=c) + Tally(add=1)     # statistics, affine; the step count
    backward = Tally(add=4 * n + 2 * n, mul=4 * n + 2 * c + n)                   # dx through the statistics; dw, db
    return forward, backward


def _expected_resnet(model, x):
    calls = _shapes(model, x)
    expect: dict[str, dict[str, Tally]] = {}
    for name, mod in model.named_modules():
        fw, bw = Tally(), Tally()
        for x_shape, out in calls.get(name, []):
            if isinstance(mod, nn.Conv2d):
                macs = out[0] * mod.weight.numel() * math.prod(out[2:])
                grads = 1 if name == "conv1" else 2          # the image needs no gradient: dW only
                fw, bw = fw + Tally(mul=macs, acc=macs), bw + Tally(mul=grads * macs, acc=grads * macs)
                if name.endswith(".conv1"):                   # the block's input gradient: dX + the shortcut's
                    bw = bw + Tally(add=math.prod(x_shape))
            elif isinstance(mod, nn.BatchNorm2d):
                f, b = _bn_train(x_shape)
                fw, bw = fw + f, bw + b
            elif isinstance(mod, nn.ReLU):                    # one module, used twice in each block
                fw, bw = fw + Tally(cmp=math.prod(out)), bw + Tally(cmp=math.prod(out))
            elif isinstance(mod, nn.MaxPool2d):
                fw, bw = fw + Tally(cmp=math.prod(out) * 8), bw + Tally(add=math.prod(out))
            elif isinstance(mod, nn.AdaptiveAvgPool2d):       # mean over 2x2; backward g / 4 spread (expand, div)
                fw, bw = fw + Tally(add=math.prod(x_shape) - math.prod(out), mul=math.prod(out)), \
                    bw + Tally(div=math.prod(x_shape))
            elif isinstance(mod, nn.Linear):
                macs = math.prod(out) * x_shape[-1]
                fw = fw + Tally(mul=macs, acc=macs + math.prod(out))
                bw = bw + Tally(mul=2 * macs, acc=2 * macs, add=math.prod(out) - out[-1])
            elif isinstance(mod, torchvision.models.resnet.BasicBlock):
                fw = fw + Tally(add=math.prod(out))           # out += identity; its backward passes g on
        expect[name] = {k: v for k, v in (("forward", fw), ("backward", bw)) if v}
    return expect


def test_resnet18_training_counts_equal_the_hand_formula_for_every_layer():
    model = torchvision.models.resnet18().train()
    x = torch.randn(2, 3, 64, 64)
    got = _phases(count_ops(model, x, training=True))
    expected = {n: e for n, e in _expected_resnet(model, x).items() if e}
    assert set(got) == set(expected)
    for name in expected:
        assert got[name] == expected[name], name
    # the Sequentials hold nothing of their own: the downsample kept its BatchNorm's backward
    assert "layer3.0.downsample" not in got and "layer2" not in got


@pytest.mark.parametrize("bias", [False, True])
def test_an_adder_layer_that_ends_a_sequential_keeps_its_backward(bias):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU(),
                          adderconv.AdderConv2d(4, 6, 3, padding=1, bias=bias))
    x = torch.randn(2, 3, 5, 5)
    got = _phases(count_ops(model, x, training=True))
    macs = 2 * 6 * 25 * 4 * 9                        # N * C_out * H * W * C_in * k * k
    w, g = 6 * 4 * 9, 2 * 6 * 25                     # weight elements, output-gradient elements
    grad_weight = Tally(mul=macs + w, acc=macs, add=(g - 6) + w)   # (g X^T) GEMM - W * sum_p g (rank-1 term)
    grad_input = Tally(mul=macs, add=macs, acc=macs, cmp=2 * macs)  # sum_o g clamp(W - X): sub, clamp, mul, acc
    adder_bw = grad_weight + grad_input + (Tally(add=g - 6) if bias else Tally())   # db sums g over N, H, W
    assert got["2"]["backward"] == adder_bw
    assert "" not in got                              # the Sequential runs nothing of its own
    conv_macs = 2 * 4 * 25 * 3 * 9
    assert got["0"]["backward"] == Tally(mul=conv_macs, acc=conv_macs)   # dW only: the input needs no gradient
    assert got["1"]["backward"] == Tally(cmp=2 * 4 * 25)
