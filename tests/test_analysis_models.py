"""Counts of whole models: the papers' CIFAR ResNets, and agreement with fvcore over torchvision's zoo."""
import warnings

import pytest
import torch
import torchvision

import adderconv
from adderconv.analysis import Tally, analyze

from conftest import count_smallest  # tests/conftest.py


def _conv_macs_by_layer(counts):
    return {layer.name: layer.by_category().get("conv", Tally())["mul"] for layer in counts.layers}


def test_resnet32_cnn_has_the_papers_69_12m_conv_multiplications_and_the_adder_version_none():
    cnn = analyze("resnet32")
    assert cnn.by_category["conv"] == Tally(mul=69_124_736, acc=69_124_736)    # the papers' #Add: add + acc
    adder = analyze("resnet32_adder")
    adder_layers = [le for le in adder.layers if le.type == "AdderConv2d"]
    n_conv = sum(isinstance(m, torch.nn.Conv2d) for m in adderconv.get_model("resnet32").modules())
    assert len(adder_layers) == n_conv - 2 == 32     # every conv but the stem and the 1x1 classifier
    assert all(le.mul == 0 for le in adder_layers)
    # twice the MACs of the same layers in the CNN, as additions
    cnn_macs = {le.name: le.mul for le in cnn.layers}
    assert all(le.add == 2 * cnn_macs[le.name] for le in adder_layers)
    kept = cnn_macs["conv1"] + cnn_macs["fc"]
    assert adder.by_category["adder"] == Tally(add=69_124_736 - kept, acc=69_124_736 - kept)
    assert adder.by_category["conv"] == Tally(mul=kept, acc=kept)


def test_resnet20_conv_counts():
    # 16*3*9*1024 (stem) + 3 stages of 6 3x3 convs + two 1x1 downsamples + the 1x1 classifier
    stem, stage = 16 * 3 * 9 * 1024, 6 * 16 * 16 * 9 * 1024
    down = 32 * 16 * 256 + 64 * 32 * 64
    expected = stem + 3 * stage - (16 * 16 * 9 * 1024 - 32 * 16 * 9 * 256) - (32 * 32 * 9 * 256 - 64 * 32 * 9 * 64) \
        + down + 10 * 64
    assert analyze("resnet20").by_category["conv"]["mul"] == expected == 40_813_184


# Classification models no input size in (32, 64, 112, 224, 299) gets through the tracer, with the reason: none
# in torchvision 0.29 (the list is pinned, so a model that stops tracing fails the test instead of dropping out).
UNTRACEABLE: list[str] = []


@pytest.mark.slow
def test_conv_and_linear_multiplications_equal_fvcore_over_torchvision():
    from fvcore.nn import FlopCountAnalysis

    compared, untraceable, unsupported = [], [], {}
    for name in torchvision.models.list_models(module=torchvision.models):
        found = count_smallest(name)
        if found is None:
            untraceable.append(name)
            continue
        model, x, counts = found
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fa = FlopCountAnalysis(model, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            theirs = fa.by_operator()
        ours = counts.by_category()
        assert ours.get("conv", Tally())["mul"] == theirs.get("conv", 0), name
        assert ours.get("linear", Tally())["mul"] == theirs.get("linear", 0) + theirs.get("addmm", 0), name
        # matrix products too (einsum aside: fvcore estimates it with numpy's einsum_path, ours is exact)
        by_op = counts.by_operator()
        ours_mm = sum(by_op.get(f"aten::{op}", Tally())["mul"] for op in ("matmul", "mm", "bmm"))
        assert ours_mm == sum(theirs.get(op, 0) for op in ("matmul", "mm", "bmm")), name
        compared.append((name, x.shape[-1]))
        for op in counts.unsupported:
            unsupported.setdefault(op, []).append(name)
    print(f"\ncompared {len(compared)} models: {compared}\nuntraceable: {untraceable}\nunsupported: {unsupported}")
    assert untraceable == UNTRACEABLE and len(compared) == len(torchvision.models.list_models(
        module=torchvision.models)) - len(UNTRACEABLE), (len(compared), untraceable)
    assert unsupported == {}            # every operator of torchvision's classification zoo has a handle
