"""Tampered int8 parameters never load or run: every quantisation parameter is validated when a file is loaded (one
line naming the layer and the value) and in the ops (scales, zero points, clamp floors, geometry), on the C++
kernels and on the PyTorch fallback alike.
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import adderconv
from adderconv import AdderconvError
from adderconv.kernels import int8
from adderconv.quant import QuantAdderConv2d, save_quantized
from adderconv.quant.op import adder_conv2d_int8, adder_conv2d_int8_residual, quantize_uint8

KERNELS = ["cpp", "portable"]


@pytest.fixture(params=KERNELS)
def kernel(request, monkeypatch):
    if request.param == "portable":
        monkeypatch.setenv("ADDERCONV_INT8_KERNEL", "portable")
    elif not int8.available():
        pytest.fail("the C++ int8 kernels cannot be built here (no compiler?)")
    return request.param


X = torch.randint(0, 256, (1, 6, 6, 8), dtype=torch.uint8)
W = torch.randint(0, 256, (4, 8, 3, 3), dtype=torch.uint8)
ONES, ZEROS = torch.ones(4), torch.zeros(4)

# (what, scale, zero point, lo)
BAD_QUANTIZE = [
    ("NaN scale", float("nan"), 0, 0), ("zero scale", 0.0, 0, 0), ("negative scale", -1.0, 0, 0),
    ("infinite scale", float("inf"), 0, 0), ("scale 1e300 (inf in float32)", 1e300, 0, 0),
    ("scale 1e-300 (0 in float32)", 1e-300, 0, 0), ("zero point 999", 0.1, 999, 0), ("zero point -1", 0.1, -1, 0),
    ("floor -5", 0.1, 0, -5), ("floor 256", 0.1, 0, 256),
]


@pytest.mark.parametrize("case", BAD_QUANTIZE, ids=[c[0] for c in BAD_QUANTIZE])
def test_quantize_uint8_refuses_bad_grids(case, kernel):
    _, scale, zp, lo = case
    with pytest.raises(ValueError, match="scale|zero point|floor"):
        quantize_uint8(torch.randn(1, 3, 4, 4), scale, zp, lo)


@pytest.mark.parametrize("case", BAD_QUANTIZE, ids=[c[0] for c in BAD_QUANTIZE])
def test_quantize_uint8_op_refuses_bad_grids_under_fake_tensors_too(case):
    from torch._subclasses.fake_tensor import FakeTensorMode

    _, scale, zp, lo = case
    with FakeTensorMode(), pytest.raises(ValueError, match="scale|zero point|floor"):
        torch.ops.adderconv.quantize_uint8(torch.empty(1, 3, 4, 4), scale, zp, lo)


# (what, keyword arguments of adder_conv2d_int8, expected message)
BAD_INT8 = [
    ("floor -5 (wrapped to 251)", dict(zero_point=3, mode="uint8", lo=-5), "floor"),
    ("floor 256", dict(zero_point=3, mode="uint8", lo=256), "floor"),
    ("zero point 256", dict(zero_point=256), "zero point"),
    ("zero point -1", dict(zero_point=-1), "zero point"),
    ("stride -1", dict(zero_point=0, stride=-1), "stride"),
    ("stride 0", dict(zero_point=0, stride=(1, 0)), "stride"),
    ("dilation -1", dict(zero_point=0, dilation=-1), "dilation"),
    ("padding -1", dict(zero_point=0, padding=-1), "padding"),
    ("groups 0", dict(zero_point=0, groups=0), "groups"),
    ("NaN scale", dict(zero_point=0, mode="float", scale=torch.tensor([1, float("nan"), 1, 1])), "finite"),
    ("infinite shift", dict(zero_point=0, mode="uint8", shift=torch.tensor([0, 0, float("inf"), 0])), "finite"),
    ("float64 scale", dict(zero_point=0, mode="float", scale=torch.ones(4, dtype=torch.float64)), "float32"),
]


@pytest.mark.parametrize("case", BAD_INT8, ids=[c[0] for c in BAD_INT8])
def test_int8_op_refuses_bad_parameters(case, kernel):
    _, kw, match = case
    kw = {"scale": ONES, "shift": ZEROS, **kw}
    with pytest.raises(ValueError, match=match):
        adder_conv2d_int8(X, W, **kw)


def test_int8_kernel_checks_its_own_arguments():
    """The C++ kernel (behind the op's checks) refuses bad codes and non-finite epilogues itself."""
    if not int8.available():
        pytest.fail("the C++ int8 kernels cannot be built here (no compiler?)")
    ext, packed = int8.extension(), int8.pack(W, 3, 1)
    args = (X, packed, 4, 3, 3)
    geo = ([1, 1], [0, 0], [1, 1], 1)
    with pytest.raises((RuntimeError, ValueError), match="floor"):
        ext.forward(*args, 3, *geo, ONES, ZEROS, 2, -5, -1)
    with pytest.raises((RuntimeError, ValueError), match="zero point"):
        ext.forward(*args, 300, *geo, ONES, ZEROS, 0, 0, -1)
    with pytest.raises((RuntimeError, ValueError), match="finite"):
        ext.forward(*args, 3, *geo, torch.tensor([1, 1, float("nan"), 1]), ZEROS, 1, 0, -1)
    with pytest.raises((RuntimeError, ValueError), match="scale"):
        ext.quantize(torch.randn(1, 3, 4, 4), float("nan"), 0, 0)
    with pytest.raises((RuntimeError, ValueError), match="zero point"):
        ext.quantize(torch.randn(1, 3, 4, 4), 0.1, 999, 0)
    with pytest.raises((RuntimeError, ValueError), match="codes"):
        ext.forward_residual(*args, 3, *geo, ONES, ZEROS, torch.zeros(1, 4, 4, 4), False, float("nan"), 0, True, -1)


def test_int8_floor_is_a_floor_not_a_wrap(kernel):
    """A valid floor clamps: every output code is >= lo (the old op stored lo = -5 as 251 and clamped to that)."""
    y = adder_conv2d_int8(X, W, 3, scale=torch.full((4,), -0.01), shift=torch.full((4,), 300.0), mode="uint8",
                          lo=40)
    assert int(y.min()) >= 40


@pytest.mark.parametrize("codes_scale,codes_zero_point,match", [(float("nan"), 0, "scale"), (-1.0, 0, "scale"),
                                                                 (1e300, 0, "scale"), (0.1, 300, "zero point")])
def test_residual_op_refuses_bad_code_grids(codes_scale, codes_zero_point, match, kernel):
    with pytest.raises(ValueError, match=match):
        adder_conv2d_int8_residual(X, W, 3, 1, 1, scale=ONES, shift=ZEROS, residual=torch.zeros(1, 6, 6, 4),
                                   codes_scale=codes_scale, codes_zero_point=codes_zero_point)


# --- files --------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quantised(tmp_path_factory, with_bn_stats):
    """A quantised ResNet-20 (residual layers emit codes: a codes_scale) saved as a file; (path, tensors, meta)."""
    torch.manual_seed(0)
    net = with_bn_stats(adderconv.get_model("resnet20_adder"), (3, 32, 32))
    q = adderconv.quantize(net, [torch.randn(8, 3, 32, 32) for _ in range(2)])
    path = tmp_path_factory.mktemp("q") / "q.safetensors"
    save_quantized(q, path, {"adderconv.arch": "resnet20_adder"})
    with safe_open(str(path), framework="pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    codes = next(n for n, m in q.named_modules() if isinstance(m, QuantAdderConv2d) and m.codes_zero_point >= 0)
    return path, tensors, meta, codes


L = "layer1.0.conv1"       # a quantised layer of ResNet-20


def _set(value, dtype=torch.float32, index=None):
    def edit(t):
        t = t.to(dtype).clone()
        if index is None:
            t.fill_(value)
        else:
            t.view(-1)[index] = value
        return t
    return edit


# (what, tensor, edit): each loads today as garbage (accuracy falls to chance) with no word
TAMPERED = [
    ("input_scale 0", f"{L}.input_scale", _set(0.0)),
    ("input_scale -1", f"{L}.input_scale", _set(-1.0)),
    ("input_scale NaN", f"{L}.input_scale", _set(float("nan"))),
    ("input_scale inf", f"{L}.input_scale", _set(float("inf"))),
    ("input_scale 1e300 (float64)", f"{L}.input_scale", _set(1e300, torch.float64)),
    ("input_scale 1e-300 (float64)", f"{L}.input_scale", _set(1e-300, torch.float64)),
    ("out_scale NaN", f"{L}.out_scale", _set(float("nan"), index=1)),
    ("out_scale inf", f"{L}.out_scale", _set(float("inf"), index=0)),
    ("out_scale 1e300 (float64)", f"{L}.out_scale", _set(1e300, torch.float64, index=2)),
    ("out_scale overflowing the epilogue", f"{L}.out_scale", _set(1e36, index=2)),
    ("out_shift NaN", f"{L}.out_shift", _set(float("nan"), index=3)),
    ("out_shift -inf", f"{L}.out_shift", _set(float("-inf"), index=0)),
    ("weight codes int32 300-555", f"{L}.weight", lambda t: t.to(torch.int32) + 300),
    ("weight codes int32 -1", f"{L}.weight", lambda t: t.to(torch.int32) - 256),
    ("weight codes int64 256", f"{L}.weight", lambda t: torch.full_like(t, 256, dtype=torch.int64)),
]


def _tampered_file(quantised, tmp_path, name, edit):
    _, tensors, meta, _ = quantised
    path = tmp_path / "tampered.safetensors"
    save_file({**tensors, name: edit(tensors[name]).contiguous()}, str(path), metadata=meta)
    return path


def test_the_untampered_file_loads(quantised):
    path, *_ = quantised
    assert any(isinstance(m, QuantAdderConv2d) for m in adderconv.load_model(path).modules())


@pytest.mark.parametrize("case", TAMPERED, ids=[c[0] for c in TAMPERED])
def test_tampered_file_is_refused_on_load(case, quantised, tmp_path):
    what, name, edit = case
    path = _tampered_file(quantised, tmp_path, name, edit)
    with pytest.raises(AdderconvError) as e:
        adderconv.load_model(path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg, msg
    assert name.rsplit(".", 1)[0] in msg or name in msg, msg     # the layer (or the tensor) is named


@pytest.mark.parametrize("value", [float("nan"), 0.0, -1.0, float("inf")])
def test_tampered_codes_scale_is_refused_on_load(value, quantised, tmp_path):
    *_, codes = quantised
    path = _tampered_file(quantised, tmp_path, f"{codes}.codes_scale", _set(value))
    with pytest.raises(AdderconvError, match="codes_scale"):
        adderconv.load_model(path)


def test_loading_a_state_dict_directly_is_checked_too(quantised):
    """Not only load_model: any load_state_dict into a quantised layer checks the values before they land."""
    path, *_ = quantised
    q = adderconv.load_model(path)
    layer = q.get_submodule(L)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    before = layer.input_scale.clone()
    state["input_scale"] = torch.tensor(float("nan"))
    with pytest.raises(AdderconvError, match="input_scale"):
        layer.load_state_dict(state)
    assert torch.equal(layer.input_scale, before)      # nothing landed


CLI = [c for c in TAMPERED if c[0] in ("input_scale NaN", "input_scale 1e300 (float64)", "out_scale NaN",
                                        "weight codes int32 300-555")]


@pytest.mark.parametrize("command", ["energy", "export"])
@pytest.mark.parametrize("case", CLI, ids=[c[0] for c in CLI])
def test_tampered_file_is_one_line_and_exit_2_on_the_command_line(case, command, quantised, tmp_path, run_cli):
    _, name, edit = case
    path = _tampered_file(quantised, tmp_path, name, edit)
    args = [command, path] + (["-o", tmp_path / "out.onnx"] if command == "export" else [])
    code, out, err = run_cli(*args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, out, err)
    assert "Traceback" not in out + err and not (tmp_path / "out.onnx").exists()


# --- a recipe that disagrees with the architecture (issue 28, 10) ------------------------------------------------

def _recipe_edit(quantised, tmp_path, edit):
    """The file with its quantisation recipe (JSON metadata) edited."""
    _, tensors, meta, _ = quantised
    recipe = json.loads(meta["adderconv.quant"])
    edit(recipe)
    path = tmp_path / "recipe.safetensors"
    save_file(tensors, str(path), metadata={**meta, "adderconv.quant": json.dumps(recipe)})
    return path


def _flip_out(recipe):
    spec = recipe["layers"][L]                  # hands uint8 codes to layer1.0.conv2
    spec["out"] = "float" if spec["out"] == "uint8" else "uint8"


def _flip_codes_only(recipe):
    spec = next(s for s in recipe["layers"].values() if "codes_zero_point" in s)
    spec["codes_only"] = not spec["codes_only"]


def _drop_codes(recipe):
    spec = next(s for s in recipe["layers"].values() if "codes_zero_point" in s)
    del spec["codes_zero_point"], spec["codes_only"]


def _add_codes(recipe):
    recipe["layers"][L].update(codes_zero_point=3, codes_only=True)


def _fold_one_less(recipe):
    recipe["folded"] = recipe["folded"][1:]


@pytest.mark.parametrize("edit, match", [
    (_flip_out, "writes"), (_flip_codes_only, "read"), (_drop_codes, "lacks the codes"),
    (_add_codes, "has the codes"), (_fold_one_less, "folded BatchNorms"),
], ids=["out flipped", "codes_only flipped", "codes dropped", "codes added", "a fold missing"])
def test_a_recipe_that_disagrees_with_the_architecture_is_one_line(edit, match, quantised, tmp_path, run_cli):
    """Before: a flipped out loaded and ran without a word; a flipped codes_only ran into a traceback."""
    path = _recipe_edit(quantised, tmp_path, edit)
    with pytest.raises(AdderconvError, match=match):
        adderconv.load_model(path)
    code, out, err = run_cli("energy", path)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_the_unedited_recipe_passes_the_same_checks(quantised, tmp_path):
    path = _recipe_edit(quantised, tmp_path, lambda recipe: None)
    assert any(isinstance(m, QuantAdderConv2d) for m in adderconv.load_model(path).modules())
