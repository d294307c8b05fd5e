"""Every torchvision classification model with convolutions converts.

Two levels, because the portable adder kernel makes real backward passes of ImageNet-sized networks take
minutes on a CPU:
- every model (all 80 in torchvision 0.29), at its native input size, on the meta device: traced, converted
  by policy (exactly its first/last multiplicative layers kept), and run forward (shapes only);
- one real network per family at 64x64, batch 2: forward and backward finite, the analysis counter shows zero
  multiplications in every converted layer, and the saved file loads back to identical outputs.
"""
import contextlib
import warnings

import pytest
import torch
import torchvision
from torch import nn

import adderconv
from adderconv.converters import AdderBlock, Policy, convert, save_converted

ALL = torchvision.models.list_models(module=torchvision.models)
# One real network per family (the smallest), with the input size it allows near 64x64. ViT and Swin are
# attention networks whose one conv is the patch embedding: covered by the all-models test above.
FAMILIES = {"resnet18": 64, "vgg11_bn": 64, "mobilenet_v2": 64, "mobilenet_v3_small": 64, "efficientnet_b0": 64,
            "regnet_y_400mf": 64, "densenet121": 64, "squeezenet1_1": 64, "shufflenet_v2_x0_5": 64,
            "mnasnet0_5": 64, "googlenet": 64, "convnext_tiny": 64, "inception_v3": 75, "alexnet": 64}
FAST = ("mobilenet_v3_small", "squeezenet1_1")
CONVS = (nn.Conv1d, nn.Conv2d)


@contextlib.contextmanager
def _meta_weights():
    """Build on the CPU but keep every parameter/buffer on the meta device (free), as accelerate's
    init_empty_weights does; RegNet's constructor computes on CPU tensors, so torch.device("meta") fails."""
    register = nn.Module.register_parameter

    def to_meta(module, name, param):
        register(module, name, param)
        if param is not None:
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = to_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def _build(name: str) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # googlenet/inception's init-weights FutureWarning
        return torchvision.models.get_model(name)


def _policy(model: nn.Module) -> Policy:
    # ViT and Swin have one convolution (the patch embedding); it is their first layer, so the default
    # policy keeps it and converts nothing: convert it explicitly.
    n = sum(type(m) in CONVS for m in model.modules())
    return Policy() if n > 1 else Policy(keep_first=False)


def _logits(out):
    return out[0] if isinstance(out, tuple) else out


def test_single_conv_models_need_keep_first_off():
    with _meta_weights():
        vit = _build("vit_b_16").to("meta")
    x = torch.randn(1, 3, 224, 224, device="meta")
    with pytest.raises(adderconv.AdderconvError, match="converts none"):
        convert(vit, example_inputs=(x,))


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_every_torchvision_model_converts(name):
    size = 299 if name == "inception_v3" else 224
    with _meta_weights():
        model = _build(name).eval()
    model = model.to("meta")                # buffers too
    x = torch.randn(1, 3, size, size, device="meta")
    convs = {n for n, m in model.named_modules() if type(m) in CONVS}
    assert convs, f"{name} has no convolutions"
    net = convert(model, _policy(model), example_inputs=(x,))
    report = net.adderconv_report
    assert report.traced and not report.functional, report.warnings
    kept_convs = {r.name for r in report.kept if r.name in convs}
    assert {r.name for r in report.converted} == convs - kept_convs
    assert all(r.reason.startswith(("kept: first", "kept: last")) for r in report.kept if r.name in convs)
    assert len(kept_convs) <= 2
    for r in report.converted:
        new = net.get_submodule(r.name)
        inner = new.adder if isinstance(new, AdderBlock) else new
        assert type(inner).__name__ == r.new_type and r.new_type.startswith("Adder")
    assert _logits(net(x)).shape == (1, 1000)


def _check_family(name, tmp_path):
    """Convert at 64x64; zero mul in adders; forward+backward finite; the saved file loads back bit-identical."""
    size = FAMILIES[name]
    model = _build(name)
    x = torch.randn(2, 3, size, size)
    net = convert(model, _policy(model), example_inputs=(x[:1],))
    report = net.adderconv_report
    assert report.converted and report.traced

    from adderconv.analysis import count_model
    counts = {layer.name: layer for layer in count_model(net, (1, 3, size, size)).layers}
    ran = [r for r in report.converted if r.calls]      # GoogLeNet/Inception aux heads run only in training
    assert ran
    for r in ran:
        adder = r.name + ".adder" if r.bn_inserted or r.shortcut or r.power else r.name
        assert counts[adder].tally["mul"] == 0 and counts[adder].tally["add"] > 0, (adder, counts[adder].tally)

    net.train()
    aux = getattr(net, "AuxLogits", None)
    if name == "inception_v3":
        net.AuxLogits = None       # the aux head needs 299x299 inputs; the main path is what is checked here
    out = _logits(net(x))
    out.square().mean().backward()
    assert torch.isfinite(out).all()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    if aux is not None:
        net.AuxLogits = aux

    net.eval()
    path = tmp_path / f"{name}.safetensors"
    save_converted(net, path, arch=f"torchvision.models:{name}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = adderconv.load_model(path).eval()
    with torch.no_grad():
        torch.testing.assert_close(_logits(back(x)), _logits(net(x)), rtol=0, atol=0)


@pytest.mark.parametrize("name", FAST)
def test_small_torchvision_models_run_count_and_round_trip(name, tmp_path):
    _check_family(name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in FAMILIES if n not in FAST])
def test_one_model_per_family_runs_counts_and_round_trips(name, tmp_path):
    _check_family(name, tmp_path)
