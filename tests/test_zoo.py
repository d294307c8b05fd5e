"""The papers' networks: shapes, adder placement, and one adder node per layer under torch.export."""
import pytest
import torch
from torch import nn

from adderconv import AdderConv2d, AdderLinear, default_input_shape, get_model, list_models


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_runs_forward_and_backward(name):
    model = get_model(name)
    shape = default_input_shape(name)
    x = torch.randn(2, *shape[1:])
    y = model(x)
    assert torch.isfinite(y).all()
    y.float().pow(2).mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def _count(model, types):
    return sum(isinstance(m, types) for m in model.modules())


def test_adder_variants_keep_first_and_last_layer_multiplicative():
    pairs = [("resnet20", "resnet20_adder"), ("vgg_small", "vgg_small_adder"), ("lenet5_bn", "lenet5_bn_adder")]
    for cnn, adder in pairs:
        a = get_model(adder)
        convs = [m for m in a.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert len(convs) == 2, f"{adder}: expected only stem and classifier multiplicative, got {len(convs)}"
        assert _count(get_model(cnn), (AdderConv2d, AdderLinear)) == 0
    # ResNet-20: 18 3x3 convs + 2 downsample 1x1 become adders
    assert _count(get_model("resnet20_adder"), AdderConv2d) == 20


def test_torch_export_keeps_one_adder_node_per_layer():
    model = get_model("resnet20_adder").eval()
    ep = torch.export.export(model, (torch.randn(2, 3, 32, 32),))
    nodes = [n for n in ep.graph.nodes if n.op == "call_function" and "adder_conv2d" in str(n.target)]
    assert len(nodes) == _count(model, AdderConv2d) == 20
    out = ep.module()(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)


def test_resnet_names_and_depths():
    assert _count(get_model("resnet56_adder"), AdderConv2d) == 54 + 2
    with pytest.raises(KeyError, match="unknown zoo model"):
        get_model("resnet18_adder")


def test_torch_compile_full_graph_matches_eager():
    """torch.compile traces through the custom op (fake kernel) with no graph break, forward and backward."""
    torch._dynamo.reset()
    model = get_model("lenet5_bn_adder")
    x = torch.randn(4, 1, 32, 32)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), model(x))
    compiled(x).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x).sum().backward()
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad)
