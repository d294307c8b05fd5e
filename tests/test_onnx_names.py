"""ONNX layers are named after the PyTorch module that did the work, so a PyTorch report and the report of the
same model's ONNX export line up layer for layer (issue 27, item 6).

Every exporter in use folds an eval-mode BatchNorm into the Conv before it: the dynamo exporter's fused Conv
carries the BatchNorm's scope (``bn1``), the TorchScript exporter's names the conv. The differences that
folding makes are stated, not hidden: the folded BatchNorm layers are absent from the ONNX count (their
1 mul + 1 add per element with them), and a folded conv gains a bias (1 acc per output element) unless the
bias came out zero (fresh BatchNorm statistics) and the rewriter dropped it.
"""
import io
import math
import warnings

import onnx
import pytest
import torch
import torchvision

import adderconv
from adderconv.analysis import count_model
from adderconv.analysis.onnx_frontend import count_onnx, norm_convention
from adderconv.converters.onnx_export import export_onnx_model

SHAPE = (1, 3, 64, 64)      # small enough to export quickly; every layer still has spatial extent
WEIGHTED = {"conv", "linear", "adder"}


def _plain_export(model, shape, dynamo):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = torch.randn(*shape)
        if dynamo:
            return torch.onnx.export(model, (x,), dynamo=True, verbose=False).model_proto
        f = io.BytesIO()
        torch.onnx.export(model, (x,), f, dynamo=False)
        return onnx.load_from_string(f.getvalue())


def _project_export(model, shape):
    return export_onnx_model(model, shape)[0]


def _weighted(counts):
    return {layer.name: layer for layer in counts.layers if layer.by_category().keys() & WEIGHTED}


def _check_lines_up(model, shape, proto):
    """Layer names and every weighted layer's counts agree; the rest of the difference is folded BatchNorm."""
    torch_counts = count_model(model, shape)
    onnx_counts = count_onnx(proto, shape)
    torch_layers = {layer.name: layer for layer in torch_counts.layers}
    onnx_names = [layer.name for layer in onnx_counts.layers]
    assert len(onnx_names) == len(set(onnx_names))
    assert set(onnx_names) <= set(torch_layers), set(onnx_names) - set(torch_layers)
    assert not [n for n in onnx_names if "bn" in n.split(".")[-1]
                and "norm" not in onnx_counts.layer(n).by_category()]          # no conv wears a BatchNorm's name
    pt, ox = _weighted(torch_counts), _weighted(onnx_counts)
    assert list(pt) == list(ox)                                                # same layers, same order
    for name, layer in pt.items():
        t, o = layer.tally, ox[name].tally
        assert o["mul"] == t["mul"] and o["add"] == t["add"], name
        bias = o["acc"] - t["acc"]                         # a BatchNorm folded into a bias-free conv adds one
        assert bias in (0, math.prod(_out_shape(model, name, shape))), (name, bias)
    # what is missing from the ONNX count is exactly the folded BatchNorms (and the biases they became)
    missing = [torch_layers[n] for n in torch_layers if n not in set(onnx_names)]
    assert missing and all(layer.type.startswith("BatchNorm") for layer in missing)
    rest = [n for n in onnx_names if n not in ox]
    assert {n: onnx_counts.layer(n).tally for n in rest} == {n: torch_layers[n].tally for n in rest}
    return torch_counts, onnx_counts, missing


def _out_shape(model, name, shape):
    out = {}
    module = model.get_submodule(name)

    def hook(mod, inputs, output):
        out.setdefault("s", tuple(output.shape))

    handle = module.register_forward_hook(hook)
    with torch.no_grad():
        model.eval()(torch.zeros(*shape))
    handle.remove()
    return out["s"]


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()       # random weights, nothing downloaded


@pytest.mark.parametrize("how", ["project", "dynamo", "torchscript"])
def test_resnet18_onnx_layers_line_up_with_pytorch(resnet18, how):
    proto = (_project_export(resnet18, SHAPE) if how == "project"
             else _plain_export(resnet18, SHAPE, dynamo=how == "dynamo"))
    torch_counts, onnx_counts, missing = _check_lines_up(resnet18, SHAPE, proto)
    bns = [n for n, m in resnet18.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert sorted(layer.name for layer in missing) == sorted(bns)             # all 20 folded, none kept
    assert "layer1.0.conv1" in _weighted(onnx_counts) and "bn1" not in {la.name for la in onnx_counts.layers}
    note = norm_convention(onnx_counts)
    if how == "torchscript":     # its graph does not say that it folded: the note says what the graph shows
        assert note.startswith("BatchNorm: the graph has no BatchNormalization node")
    else:
        assert onnx_counts.ignored["BatchNormalization (folded into Conv by the exporter)"] == len(bns) == 20
        assert "folded 20 BatchNorms into the Conv" in note and "not counted here" in note


@pytest.mark.parametrize("how", ["project", "torchscript"])
def test_zoo_cnn_onnx_layers_line_up_with_pytorch(how):
    model = adderconv.get_model("resnet20").eval()
    shape = (1, 3, 32, 32)
    proto = _project_export(model, shape) if how == "project" else _plain_export(model, shape, dynamo=False)
    _, onnx_counts, missing = _check_lines_up(model, shape, proto)
    assert len(missing) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_zoo_adder_net_keeps_its_batchnorms_and_says_so():
    model = adderconv.get_model("resnet20_adder").eval()
    shape = (1, 3, 32, 32)
    torch_counts, onnx_counts, missing = _check_lines_up(model, shape, _project_export(model, shape))
    # BatchNorm after an adder layer cannot be folded: the ONNX graph keeps it and it is counted as PyTorch does
    kept = [layer for layer in onnx_counts.layers if "norm" in layer.by_category()]
    assert len(kept) == 20 and all(layer.tally == torch_counts.layer(layer.name).tally for layer in kept)
    assert sorted(layer.name for layer in missing) == ["bn1", "bn2"]          # after the stem conv and the fc
    note = norm_convention(onnx_counts)
    assert note.startswith("BatchNorm: the graph's 20 BatchNormalization nodes are counted")
    assert "the exporter folded 2 more into the Conv before them" in note


def test_a_repeated_module_call_keeps_its_module_name():
    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.relu, self.relu_1 = torch.nn.Conv2d(3, 3, 1), torch.nn.ReLU(), torch.nn.Sigmoid()

        def forward(self, x):
            return self.relu_1(self.relu(self.conv(self.relu(self.conv(x)))))

    model, shape = Twice().eval(), (1, 3, 4, 4)
    for dynamo in (True, False):
        counts = count_onnx(_plain_export(model, shape, dynamo), shape)
        torch_counts = count_model(model, shape)
        assert {la.name: la.tally for la in counts.layers} == {la.name: la.tally for la in torch_counts.layers}


def test_the_onnx_report_states_what_happened_to_batchnorm(tmp_path):
    """analyze() of an ONNX file states the BatchNorm convention the graph holds, not the PyTorch one."""
    from adderconv.analysis import analyze

    model = adderconv.get_model("resnet20").eval()
    path = tmp_path / "resnet20.onnx"
    path.write_bytes(_project_export(model, (1, 3, 32, 32)).SerializeToString())
    onnx_report, torch_report = analyze(str(path)), analyze(model, (1, 3, 32, 32))
    norm = [c for c in onnx_report.conventions if c.startswith("BatchNorm")]
    assert len(norm) == 1 and "folded" in norm[0] and "not assumed folded" not in norm[0]
    assert [c for c in torch_report.conventions if c.startswith("BatchNorm")][0].endswith("cannot be folded)")
