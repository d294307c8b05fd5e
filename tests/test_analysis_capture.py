"""The dispatch capture: any model form counted like its eager module, meta-device models without
allocating, data-dependent control flow as one clear error, per-call handles, training-step counts
against hand formulas, and the optimizer line against torch.optim's own update run under the capture."""
import resource
import math

import pytest
import torch
from torch import nn

import adderconv
from adderconv.analysis import Tally, analyze, count_ops
from adderconv.analysis.capture import DataDependentError
from adderconv.analysis.training import optimizer_tally, parameter_sizes
from adderconv.errors import AdderconvError


def _layers(counts):
    return {layer.name: layer.tally for layer in counts.layers}


@pytest.fixture(scope="module")
def resnet20_adder():
    return adderconv.get_model("resnet20_adder").eval()


def test_compiled_and_exported_models_count_as_their_eager_module(resnet20_adder, tmp_path):
    x = torch.zeros(1, 3, 32, 32)
    eager = count_ops(resnet20_adder, x)
    assert count_ops(torch.compile(resnet20_adder), x).total == eager.total      # the original is counted
    program = torch.export.export(resnet20_adder, (x,))
    exported = count_ops(program, x)
    assert _layers(exported) == _layers(eager)          # layers from the graph's recorded module paths
    assert exported.layer("layer1.0.conv1").type == "AdderConv2d"
    path = tmp_path / "model.pt2"
    torch.export.save(program, path)
    with pytest.raises(AdderconvError, match="trust"):
        analyze(str(path))
    report = analyze(str(path), trust=True)             # the input shape comes from the archive
    assert report.input_shape == (1, 3, 32, 32) and report.totals.counts == eager.total


def _mm_plus_one(a, b):
    return torch.mm(a, b) + 1


def test_scripted_functions_inside_a_module_are_counted():
    with pytest.warns(FutureWarning):                 # torch.jit.script is deprecated; users still have them
        scripted = torch.jit.script(_mm_plus_one)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 5))

        def forward(self, a):
            return scripted(a, self.w)

    assert count_ops(Model(), torch.randn(3, 4)).total == Tally(mul=60, acc=60, add=15)
    traced = count_ops(Model(), torch.randn(3, 4), capture="jit")
    # the tracer inlines the call; the callee's shapes are unknown to it, so its ops are listed, never dropped
    assert traced.total == Tally()
    unknown = "shapes unknown to the tracer, e.g. inside a scripted function"
    assert traced.unsupported == {f"aten::mm ({unknown})": 1, f"aten::add ({unknown})": 1}


def test_a_torchscript_module_is_counted_as_one_layer():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    with pytest.warns(FutureWarning):
        scripted = torch.jit.script(model)
    x = torch.zeros(1, 3, 8, 8)
    counts = count_ops(scripted, x)                   # its submodules run inside TorchScript: no hooks
    assert counts.total == count_ops(model, x).total and [le.name for le in counts.layers] == [""]
    with pytest.raises(AdderconvError, match="TorchScript"):
        count_ops(scripted, x, capture="jit")


def test_data_dependent_control_flow_is_one_clear_error():
    class Gate(nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x

    with pytest.raises(DataDependentError, match="`capture` jit") as e:
        count_ops(Gate(), torch.ones(3))
    assert "\n" not in str(e.value)
    assert count_ops(Gate(), torch.ones(3), capture="real").total == Tally(mul=3, add=2, cmp=1)


def test_meta_models_count_like_real_ones_and_allocate_nothing(resnet20_adder):
    real = count_ops(resnet20_adder, torch.zeros(2, 3, 32, 32))
    with torch.device("meta"):
        meta_model = adderconv.get_model("resnet20_adder").eval()
    assert _layers(count_ops(meta_model, torch.empty(2, 3, 32, 32, device="meta"))) == _layers(real)
    assert _layers(count_ops(meta_model, torch.zeros(2, 3, 32, 32))) == _layers(real)   # a real input joins it
    # 2.1e9 parameters: 8.6 GB if anything were allocated
    with torch.device("meta"):
        big = nn.Sequential(nn.Linear(46_000, 46_000), nn.LayerNorm(46_000), nn.Linear(46_000, 1000))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    counts = count_ops(big, torch.empty(4, 46_000, device="meta"))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert counts.layer("0").tally["mul"] == 4 * 46_000 * 46_000
    assert grown_mb < 500, grown_mb


def test_the_model_is_not_touched(resnet20_adder):
    state = {k: v.clone() for k, v in resnet20_adder.state_dict().items()}
    resnet20_adder.train()
    count_ops(resnet20_adder, torch.zeros(2, 3, 32, 32), training=True)
    resnet20_adder.eval()
    assert all(torch.equal(state[k], v) for k, v in resnet20_adder.state_dict().items())   # BN stats too
    assert all(p.grad is None for p in resnet20_adder.parameters())


def test_per_call_handles_override_without_touching_the_registry(fn_module):
    from adderconv.analysis.registry import HANDLES

    before = dict(HANDLES)
    conv = nn.Conv2d(2, 4, 3, bias=False)
    x = torch.randn(1, 2, 5, 5)
    mine = count_ops(conv, x, handles={torch.ops.aten.convolution: lambda outs, weight: Tally(add=math.prod(weight))})
    assert mine.total == Tally(add=4 * 2 * 9) and mine.layers[0].ops[0].category == "conv"
    assert count_ops(conv, x).total == Tally(mul=4 * 9 * 18, acc=4 * 9 * 18)        # the global table is intact
    assert HANDLES == before
    with pytest.raises(ValueError, match="reads 'wieght'"):
        count_ops(conv, x, handles={"aten::convolution": lambda outs, wieght: Tally()})
    # an op without a global handle gains one for the call: its ops leave `unsupported`
    cumsum = count_ops(fn_module(lambda t: torch.cumsum(t, 1)), torch.randn(3, 4),
                       handles={torch.ops.aten.cumsum: lambda outs, self: Tally(add=math.prod(self))})
    assert cumsum.unsupported == {} and cumsum.total == Tally(add=12)
    assert analyze(conv, (1, 2, 5, 5), handles={torch.ops.aten.convolution: lambda outs: Tally()}).totals.counts \
        == Tally()


# --- training steps -------------------------------------------------------------------------------------------

def _backward(layer, x):
    counts = count_ops(layer, x.requires_grad_(True), training=True)
    return counts.by_phase()


def test_conv_backward_is_two_forward_convolutions_plus_the_bias_sum():
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)
    x = torch.randn(3, 4, 9, 9)
    out = conv(x)
    macs = out.numel() * (4 // 2) * 9
    phases = _backward(conv, x)
    assert phases["forward"] == Tally(mul=macs, acc=macs + out.numel())
    # dX (a transposed convolution) and dW (a correlation) have the forward's MACs; db sums over N, H, W
    assert phases["backward"] == Tally(mul=2 * macs, acc=2 * macs + out.numel() - 6)


def test_linear_backward_is_two_matrix_products_plus_the_bias_sum():
    lin = nn.Linear(7, 5)
    phases = _backward(lin, torch.randn(4, 7))
    assert phases["backward"] == Tally(mul=2 * 4 * 5 * 7, acc=2 * 4 * 5 * 7, add=4 * 5 - 5)


def test_adder_backward_as_its_kernels_compute_it():
    layer = adderconv.AdderConv2d(4, 6, 3, padding=1, bias=False)
    x = torch.randn(2, 4, 5, 5)
    macs = 2 * 6 * 25 * 4 * 9                        # N * C_out * H * W * C_in * k * k
    phases = _backward(layer, x)
    assert phases["forward"] == Tally(add=macs, acc=macs)
    w, g = 6 * 4 * 9, 2 * 6 * 25                       # weight elements, output-gradient elements
    grad_weight = Tally(mul=macs + w, acc=macs, add=(g - 6) + w)  # (g X^T) GEMM - W * sum_p g  (rank-1 term)
    grad_input = Tally(mul=macs, add=macs, acc=macs, cmp=2 * macs)  # sum_o g clamp(W - X): sub, clamp, mul, acc
    assert phases["backward"] == grad_weight + grad_input


def test_training_counts_layers_by_phase_and_the_optimizer_line():
    report = analyze("resnet20_adder", (2, 3, 32, 32), training=True, optimizer="sgd")
    model = adderconv.get_model("resnet20_adder")
    opt = [le for le in report.layers if le.name == "(optimizer)"]
    assert len(opt) == 1 and opt[0].counts == optimizer_tally("sgd", parameter_sizes(model))
    forward = analyze("resnet20_adder", (2, 3, 32, 32))
    assert report.totals.counts["add"] > 2 * forward.totals.counts["add"]
    with pytest.raises(AdderconvError, match="optimizer"):
        analyze("lenet5_bn", (2, 1, 28, 28), training=True, optimizer="rmsprop")   # before any work


@pytest.mark.parametrize("name,make", [
    ("sgd", lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=5e-4, foreach=False)),
    ("adam", lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=False)),
])
def test_optimizer_formula_equals_torch_optim_run_under_the_capture(name, make):
    model = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 3))
    opt = make(model.parameters())
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()                                        # the first step creates the buffers; count the second

    class Step(nn.Module):
        def forward(self):
            opt.step()

    counted = count_ops(Step(), (), capture="real")
    assert counted.unsupported == {}
    assert counted.total == optimizer_tally(name, parameter_sizes(model))


def test_adaptive_lr_is_part_of_an_adder_layers_update():
    sizes = parameter_sizes(nn.Sequential(adderconv.AdderConv2d(2, 3, 3), nn.BatchNorm2d(3)))
    assert sizes == [(54, True), (3, False), (3, False)]
    k = 54
    assert optimizer_tally("sgd", sizes) == Tally(mul=3 * 60, add=3 * 60) + Tally(mul=2 * k + 1, add=k - 1, sqrt=1,
                                                                                      div=1)


@torch.library.custom_op("adderconv_test::no_fake", mutates_args=())
def _no_fake(x: torch.Tensor) -> torch.Tensor:
    return x * 2


def test_an_op_without_a_fake_implementation_is_one_clear_error(fn_module):
    model = fn_module(_no_fake)
    with pytest.raises(AdderconvError, match="cannot run on fake tensors.*`capture` real") as e:
        count_ops(model, torch.randn(3))
    assert "\n" not in str(e.value)
    assert count_ops(model, torch.randn(3), capture="real").unsupported == {"adderconv_test::no_fake": 1}


# --- the fake-tensor bookkeeping (issue 28, item 4) ----------------------------------------------------------------

def test_a_model_counted_again_fakes_no_parameter_twice(monkeypatch):
    from torch._subclasses.meta_utils import MetaConverter

    model, x = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Linear(6, 4)).eval(), torch.randn(1, 3, 8, 8)
    count_ops(model, x)
    made = []
    real_call = MetaConverter.__call__
    monkeypatch.setattr(MetaConverter, "__call__",
                        lambda self, t, *a, **k: made.append(t) or real_call(self, t, *a, **k))
    again = count_ops(model, x)
    assert made == [] and again.total == count_ops(model, x).total      # parameters, buffers and input: all known


def test_a_tensor_changed_since_its_fake_was_made_is_faked_again():
    lin = nn.Linear(4, 3, bias=False)
    x = torch.randn(2, 4)
    assert count_ops(lin, x).total == Tally(mul=24, acc=24)
    lin.weight.data = torch.randn(5, 4)                 # the same Parameter object, another shape
    x.data = torch.randn(6, 4)
    assert count_ops(lin, x).total == Tally(mul=6 * 5 * 4, acc=6 * 5 * 4)


def test_counting_a_shape_allocates_no_input():
    """Issue 28 (7): an input shape of 120 GB (as float32) is counted from the shape alone, by hand: 8 x 99998^2
    outputs of 27 MACs each (the real allocation of zeros this used to make would fail here)."""
    from adderconv.analysis import count_model

    counts = count_model(nn.Conv2d(3, 8, 3, bias=False), (1, 3, 100_000, 100_000))
    assert counts.total == Tally(mul=8 * 99_998**2 * 27, acc=8 * 99_998**2 * 27)


def test_count_ops_counts_inference_in_eval_mode_like_analyze():
    """Issue 27 (4): a zoo model comes in train mode; count_ops raised a raw ValueError at batch 1 (BatchNorm's
    batch statistics) and counted training-mode BatchNorm at batch 2, unlike analyze. One rule for both now."""
    model = adderconv.get_model("lenet5_bn")
    assert model.training
    one = count_ops(model, torch.zeros(1, 1, 32, 32))
    two = count_ops(model, torch.zeros(2, 1, 32, 32))
    assert model.training and all(m.training for m in model.modules())          # flags restored
    assert two.total == one.total * 2 == analyze("lenet5_bn", (2, 1, 32, 32)).totals.counts
    model.eval()
    train = count_ops(model, torch.zeros(2, 1, 32, 32), training=True)            # a training count trains
    assert not model.training and train.by_phase()["forward"] != two.total
