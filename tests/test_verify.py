"""verify on a zoo name's random weights (issue 27, item 3): the README's `adderconv verify resnet20_adder.onnx
--against resnet20_adder` compares something that can tell models apart, says what, and exits 0.

Why the outputs collapse: an adder layer's output -sum|x - w| is <= 0, the zoo's BatchNorm has its initial
statistics (mean 0, var 1, gamma 1, beta 0) and keeps it <= 0, ReLU zeroes it; every input gives all zeros.
"""
import io
import warnings

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn

from adderconv.converters.command import VerifyOptions, run_verify
from adderconv.converters.onnx_export import export_onnx
from adderconv.converters.onnx_verify import load_seeded, verify_onnx
from adderconv.errors import AdderconvError


@pytest.fixture(scope="module")
def zoo_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("verify") / "resnet20_adder.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(load_seeded("resnet20_adder"), path, (1, 3, 32, 32))     # what `adderconv export` writes
    return path


def test_random_zoo_outputs_collapse_for_the_reason_given():
    model = load_seeded("resnet20_adder").eval()
    with torch.no_grad():
        out = model(torch.randn(4, 3, 32, 32) * 10)              # more spread in the input does not help
    assert torch.count_nonzero(out) == 0


def test_verify_compares_the_adder_nodes_and_says_so(zoo_file):
    result = verify_onnx(zoo_file, load_seeded("resnet20_adder"))
    assert result.input_independent and result.ok
    [layers] = result.layers                                     # batch 4: 18 3x3 adders + 2 downsampling
    assert layers.nodes == 20 and 0 < layers.rel_error < 1e-5 and layers.input_dependent >= 1
    [note] = result.notes
    assert "same output" in note and "20 AdderConv2d nodes" in note and "--" not in note


def test_the_node_comparison_tells_models_apart(zoo_file):
    other = load_seeded("resnet20_adder", seed=1)                # same architecture, other random weights
    result = verify_onnx(zoo_file, other)
    assert result.max_rel_error == 0.0                           # both all zeros: the outputs say nothing
    assert result.layers[0].rel_error > 1e-2 and not result.ok   # the nodes do


def test_the_readme_example_exits_0_with_a_note(zoo_file):
    buf = io.StringIO()
    code = run_verify(VerifyOptions(onnx_file=str(zoo_file), against="resnet20_adder"), Console(file=buf, width=200))
    assert code == 0, buf.getvalue()


def test_nothing_to_compare_instead_is_an_error(tmp_path):
    class Dead(nn.Module):           # a plain CNN whose output does not depend on its input: no adder node
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            nn.init.constant_(self.conv.bias, -1e3)

        def forward(self, x):
            return torch.relu(self.conv(x)).mean((2, 3))

    model = Dead().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(model, tmp_path / "dead.onnx", (1, 3, 8, 8))
    with pytest.raises(AdderconvError, match="same output.*no AdderConv2d node"):
        verify_onnx(tmp_path / "dead.onnx", model)


def test_messages_name_parameters_not_flags(zoo_file):
    with pytest.raises(AdderconvError, match=r"^`input_shape` \(1, 3, 16, 16\) does not fit") as e:
        verify_onnx(zoo_file, load_seeded("resnet20_adder"), (1, 3, 16, 16))
    assert "--" not in str(e.value)
    assert np.isfinite(verify_onnx(zoo_file, load_seeded("resnet20_adder"), (2, 3, 32, 32)).max_rel_error)


def test_a_model_with_group_grids_verifies_end_to_end_and_says_which_nodes_were_not_paired(tmp_path):
    """A layer with several grids runs one integer node per group: the exact node-by-node check pairs one node
    with one layer, so those nodes are counted as compared end to end (issue 26), and the outputs still are."""
    import adderconv
    from adderconv import AdderConv2d

    torch.manual_seed(0)
    float_net = nn.Sequential(AdderConv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 8 * 8, 4)).eval()
    q = adderconv.quantize(float_net, torch.randn(16, 3, 8, 8), bits=6, groups=2)
    path = tmp_path / "grouped.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(q, path, (1, 3, 8, 8))
    result = verify_onnx(path, q)
    assert result.ok and not result.input_independent
    assert result.integer and all(c.nodes == 0 and c.grouped == 2 for c in result.integer)
