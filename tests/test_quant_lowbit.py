"""Quantisation below 8 bits and group-shared grids (issue 26): codes on 0 .. 2^N - 1 through the same uint8
kernels, the exact weight clamp on integer codes, k grids per layer (k = 1 is today's layer, bit for bit), the
quantised model equal to its integer simulation at every width, save -> load bit-identical, bad input in one line,
and the energy report pricing the layer at its width with the per-grid requantisation counted."""
from __future__ import annotations

import json
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import adderconv
from adderconv import AdderconvError, AdderConv2d, AdderLinear, get_model
from adderconv.ops import adder_conv2d
from adderconv.quant import QuantAdderConv2d, QuantAdderLinear, save_quantized
from adderconv.quant.layers import affine_of, from_adder
from adderconv.quant.scheme import Grid, split_channels


# --- an integer reference: codes, SAD sums exact in float64 (integers < 2^53), the epilogue as the kernel -------

def _sums(codes: torch.Tensor, weight: torch.Tensor, zp: int, layer: QuantAdderConv2d) -> torch.Tensor:
    """int64 ``S = sum |x - w|`` (N, O, OH, OW) of NCHW codes, padding with the zero point."""
    ph, pw = layer.padding
    q = F.pad(codes.double(), (pw, pw, ph, ph), value=float(zp))
    s = -adder_conv2d(q, weight.double(), layer.stride, 0, layer.dilation, layer.groups)
    return s.round().to(torch.int64)


def _simulate(layer: QuantAdderConv2d, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    """The layer's arithmetic from its stored codes and grids, independent of the kernels and their clamps."""
    linear = isinstance(layer, QuantAdderLinear)
    if x.dtype == torch.uint8:
        if layer.grid_groups != 1:
            raise AssertionError("a layer with several grids was handed codes")
        codes = [x.permute(0, 3, 1, 2).to(torch.int64)]
    else:
        xf = x[:, :, None, None] if linear else x
        codes = [g.codes(xf).to(torch.int64) for g in layer.grids]
    assert all(int(c.max()) <= layer.qmax for c in codes)
    group = layer.channel_group if layer.grid_groups > 1 else torch.zeros(layer.out_channels, dtype=torch.int64)
    s = None
    for g, c in enumerate(codes):
        part = _sums(c, layer.weight.to(torch.int64), layer.zero_points[g], layer)
        s = part if s is None else torch.where((group == g)[None, :, None, None], part, s)
    v = (s.permute(0, 2, 3, 1).to(torch.float32) * layer.out_scale + layer.out_shift).contiguous()
    if layer.out_mode == "uint8":
        return torch.round(v).clamp(layer.out_lo, layer.qmax).to(torch.uint8)
    v = v.permute(0, 3, 1, 2)
    if layer.residual:
        v = v + residual
        v = torch.relu(v) if layer.residual == "add_relu" else v
        if layer.codes_only:
            return Grid(float(layer.codes_scale), layer.codes_zero_point, layer.bits).codes(v).permute(0, 2, 3, 1)
    return v.reshape(v.shape[0], -1) if linear else v


def _simulated(q: nn.Module, x: torch.Tensor) -> torch.Tensor:
    layers = [m for m in q.modules() if isinstance(m, QuantAdderConv2d)]
    try:
        for m in layers:
            m.forward = types.MethodType(_simulate, m)
        with torch.no_grad():
            return q(x)
    finally:
        for m in layers:
            del m.forward


@pytest.fixture(scope="module")
def resnet(with_bn_stats):
    net = with_bn_stats(get_model("resnet20_adder"))
    gen = torch.Generator().manual_seed(1)
    return net, [torch.randn(16, 3, 32, 32, generator=gen) for _ in range(2)]


@pytest.fixture(scope="module")
def lenet(with_bn_stats):
    from adderconv.converters import Policy, convert
    net = convert(get_model("lenet5_bn").eval(), Policy(convert_linear=True),
                  example_inputs=(torch.zeros(1, 1, 32, 32),))
    return with_bn_stats(net, (1, 32, 32)), torch.randn(32, 1, 32, 32, generator=torch.Generator().manual_seed(2))


# --- the grid ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", range(4, 9))
def test_grid_codes_stay_on_their_width(bits):
    g = Grid.from_range(-1.0, 3.0, bits)
    qmax = 2 ** bits - 1
    assert g.qmax == qmax and g.bits == bits
    codes = g.codes(torch.linspace(-10, 10, 1001))
    assert codes.dtype == torch.uint8 and int(codes.min()) == 0 and int(codes.max()) == qmax
    assert g.values(g.codes(torch.zeros(1))).item() == 0.0          # padding is exactly the zero point
    lo, hi = g.bounds
    assert lo <= -1.0 + 1e-6 and hi >= 3.0 - g.scale and g.values(torch.tensor([0, qmax])).tolist() == \
        pytest.approx([lo, hi])


# --- the exact weight clamp on integer codes -------------------------------------------------------------------

@pytest.mark.parametrize("bits", range(4, 9))
def test_clamp_identity_exact_on_integer_codes(bits):
    gen = torch.Generator().manual_seed(bits)
    qmax = 2 ** bits - 1
    lo, hi = 0, qmax
    x = torch.randint(lo, hi + 1, (4000,), generator=gen)
    w = torch.randint(-3 * qmax, 4 * qmax, (4000,), generator=gen)
    c = w.clamp(lo, hi)
    assert torch.equal((x - w).abs(), (x - c).abs() + (w - c).abs())
    # and for a sub-range [lo, hi] of the codes too (inputs after a ReLU's floor)
    lo = qmax // 3
    x = torch.randint(lo, hi + 1, (4000,), generator=gen)
    c = w.clamp(lo, hi)
    assert torch.equal((x - w).abs(), (x - c).abs() + (w - c).abs())


@pytest.mark.parametrize("bits", range(4, 9))
def test_folded_constant_reproduces_the_unclipped_integer_sum(bits):
    """Weights on the grid's lattice but far outside its range: the layer stores clipped codes and folds
    ``C_o = sum_j dist`` into its epilogue; that reproduces the unclipped integer sum exactly."""
    gen = torch.Generator().manual_seed(10 + bits)
    grid = Grid.from_range(0.0, 2.0, bits)
    adder = AdderConv2d(3, 5, 3, padding=1)
    m = torch.randint(-2 * grid.qmax, 3 * grid.qmax, adder.weight.shape, generator=gen)   # unclipped codes
    with torch.no_grad():
        adder.weight.copy_(((m - grid.zero_point).double() * grid.scale).float())
    layer = from_adder(adder, grid)
    assert torch.equal(layer.weight.to(torch.int64), m.clamp(0, grid.qmax))
    x = torch.randint(0, grid.qmax + 1, (2, 3, 6, 6), generator=gen)
    unclipped = _sums(x, m, grid.zero_point, layer)                                  # the integer reference
    clipped = _sums(x, layer.weight.to(torch.int64), grid.zero_point, layer)
    const = (m - m.clamp(0, grid.qmax)).abs().flatten(1).sum(1)                      # C_o, integer
    assert torch.equal(unclipped, clipped + const[None, :, None, None])
    a, b = affine_of(adder, grid)
    assert torch.equal(torch.round(b / -grid.scale).to(torch.int64), const)         # the float fold is C_o * s
    assert torch.allclose(b, -grid.scale * const.double(), rtol=1e-6, atol=0)   # float32 weights: 1e-7
    # the layer (through the kernel) equals the unclipped sum's value a * S
    with torch.no_grad():
        got = layer(grid.values(x.to(torch.uint8)))
    want = -grid.scale * unclipped.double()
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-4 * grid.scale)


# --- groups of output channels ---------------------------------------------------------------------------------

def test_split_channels_sorts_by_weight_magnitude_into_balanced_groups():
    w = torch.tensor([5.0, 0.1, 3.0, 0.4, 9.0, 0.2, 1.0])[:, None] * torch.tensor([1.0, -0.5])
    g = split_channels(w, 3)
    assert g.tolist() == [2, 0, 1, 0, 2, 0, 1]      # sorted: 0.1 0.2 0.4 | 1 3 | 5 9
    assert torch.bincount(g).tolist() == [3, 2, 2]
    keys = w.abs().amax(1)
    for lo_g in range(2):      # every channel of a group is below every channel of the next
        assert keys[g == lo_g].max() <= keys[g == lo_g + 1].min()


def test_one_group_is_todays_layer_bit_for_bit(resnet):
    net, calib = resnet
    a, b = adderconv.quantize(net, calib), adderconv.quantize(net, calib, groups=1)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert all("channel_group" not in k for k in sa) and sa["layer1.0.conv1.input_scale"].shape == ()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("bits", [8, 5])
def test_groups_sharing_one_grid_equal_the_one_grid_layer(bits):
    """The grouped path (quantise per grid, a kernel per group, gather) with every grid equal is the one-grid layer."""
    torch.manual_seed(0)
    adder = AdderConv2d(6, 7, 3, padding=1, stride=2)
    grid = Grid.from_range(-0.5, 2.5, bits)
    one = from_adder(adder, grid)
    three = from_adder(adder, [grid] * 3, split_channels(adder.weight, 3))
    assert torch.equal(one.weight, three.weight) and torch.equal(one.out_shift, three.out_shift)
    x = torch.randn(3, 6, 9, 9)
    with torch.no_grad():
        assert torch.equal(one(x), three(x))


@pytest.mark.parametrize("bits", [8, 6, 4])
def test_group_grids_exact_against_the_integer_reference(bits):
    torch.manual_seed(bits)
    adder = AdderConv2d(5, 9, 3, padding=1)
    with torch.no_grad():
        adder.weight.mul_(torch.linspace(0.2, 4.0, 9)[:, None, None, None])   # channels of very different ranges
    group_of = split_channels(adder.weight, 3)
    grids = [Grid.from_range(-0.2, 0.6, bits), Grid.from_range(-0.5, 1.5, bits), Grid.from_range(-1.0, 3.0, bits)]
    layer = from_adder(adder, grids, group_of)
    assert layer.grid_groups == 3 and torch.equal(layer.channel_group, group_of)
    for o in range(9):          # each channel's codes and epilogue slope on its own grid
        g = grids[int(group_of[o])]
        assert torch.equal(layer.weight[o], g.codes(adder.weight[o].detach()))
        assert layer.out_scale[o].item() == pytest.approx(-g.scale, rel=1e-7)
    x = torch.rand(2, 5, 7, 7) * 0.8 - 0.2    # inside every grid: weights outside one are clipped exactly
    with torch.no_grad():
        got = layer(x)
    assert torch.equal(got, _simulate(layer, x))
    with torch.no_grad():       # and close to the float adder: rounding is all that is lost
        err = (got - adder(x)).abs().mean() / adder(x).abs().mean()
    assert err < {8: 0.02, 6: 0.05, 4: 0.25}[bits]


# --- whole models: equal to the simulation at every width, save -> load bit-identical ---------------------------

@pytest.mark.parametrize("bits", range(4, 9))
@pytest.mark.parametrize("groups", [1, 2])
def test_lenet_equals_its_simulation_and_reloads_at_every_width(bits, groups, lenet, tmp_path):
    net, calib = lenet
    q = adderconv.quantize(net, calib, bits=bits, groups=groups)
    layers = {n: m for n, m in q.named_modules() if isinstance(m, QuantAdderConv2d)}
    assert layers and all(m.bits == bits and m.energy_precision == f"int{bits}" for m in layers.values())
    assert all(m.grid_groups == groups and int(m.weight.max()) <= 2 ** bits - 1 for m in layers.values())
    assert any(isinstance(m, QuantAdderLinear) for m in layers.values())
    x = torch.randn(5, 1, 32, 32)
    with torch.no_grad():
        got = q(x)
    assert torch.equal(got, _simulated(q, x))
    path = tmp_path / "q.safetensors"
    save_quantized(q, path, _lenet_metadata(net, tmp_path))
    loaded = adderconv.load_model(path)
    a, b = q.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    with torch.no_grad():
        assert torch.equal(loaded(x), got)
    recipe = json.loads(adderconv.quant.recipe_json(loaded))
    assert recipe["bits"] == bits and recipe["version"] == (2 if groups > 1 else 1)


def _lenet_metadata(net: nn.Module, tmp_path) -> dict[str, str]:
    from safetensors import safe_open

    from adderconv.converters import save_converted
    src = tmp_path / "adder.safetensors"
    save_converted(net, src, arch="lenet5_bn")
    with safe_open(str(src), framework="pt") as f:
        return {k: v for k, v in f.metadata().items() if k.startswith("adderconv.")}


@pytest.mark.parametrize("bits, groups", [(6, 1), (4, 1), (4, 2), (8, 4)])
def test_resnet_equals_its_simulation_and_reloads(bits, groups, resnet, tmp_path):
    net, calib = resnet
    q = adderconv.quantize(net, calib, bits=bits, groups=groups)
    fused = [m for m in q.modules() if isinstance(m, QuantAdderConv2d) and m.residual]
    assert (len(fused) == 9) == (groups == 1)            # several grids: the add and ReLU stay separate ops
    chained = [m for m in q.modules() if isinstance(m, QuantAdderConv2d) and m.out_mode == "uint8"]
    assert (len(chained) > 0) == (groups == 1)           # several grids read float
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        got, ref = q(x), net(x)
    assert torch.equal(got, _simulated(q, x))
    assert (got - ref).abs().mean() < {8: 0.1, 6: 0.2, 4: 0.6}[bits] * ref.std()
    path = tmp_path / "q.safetensors"
    save_quantized(q, path, {"adderconv.arch": "resnet20_adder"})
    loaded = adderconv.load_model(path)
    a, b = q.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with torch.no_grad():
        assert torch.equal(loaded(x), got)


def test_old_8bit_recipe_text_still_loads(resnet, tmp_path):
    """A file written before widths and groups (version 1, bits 8, no new keys) loads as it did."""
    from safetensors import safe_open
    net, calib = resnet
    q = adderconv.quantize(net, calib)
    path = tmp_path / "q.safetensors"
    save_quantized(q, path, {"adderconv.arch": "resnet20_adder"})
    with safe_open(str(path), framework="pt") as f:
        recipe = json.loads(f.metadata()["adderconv.quant"])
    assert recipe["version"] == 1 and recipe["bits"] == 8
    assert all(set(s) <= {"zero_point", "out", "lo", "residual", "codes_zero_point", "codes_only"}
               for s in recipe["layers"].values())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(adderconv.load_model(path)(x), q(x))


# --- bad input, hostile files --------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [3, 9, True, 8.0, "6"])
def test_bad_bits_one_line(bits, lenet):
    net, calib = lenet
    with pytest.raises(AdderconvError, match="`bits` must be an integer from 4 to 8") as e:
        adderconv.quantize(net, calib, bits=bits)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("groups, match", [
    (0, "positive integer"), (True, "positive integer"), (2.0, "positive integer"),
    (17, "more than the 16 output channels of layer '4'")])
def test_bad_groups_one_line(groups, match, lenet):
    net, calib = lenet
    with pytest.raises(AdderconvError, match=match) as e:
        adderconv.quantize(net, calib, groups=groups)
    assert "\n" not in str(e.value) and "`groups`" in str(e.value)


@pytest.fixture(scope="module")
def lowbit_file(resnet, tmp_path_factory):
    net, calib = resnet
    q = adderconv.quantize(net, calib, bits=4, groups=2)
    path = tmp_path_factory.mktemp("q4") / "q.safetensors"
    save_quantized(q, path, {"adderconv.arch": "resnet20_adder"})
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        return path, {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _rewrite(lowbit_file, tmp_path, recipe_edit=None, tensor_edit=None):
    from safetensors.torch import save_file
    _, tensors, meta = lowbit_file
    recipe = json.loads(meta["adderconv.quant"])
    if recipe_edit:
        recipe_edit(recipe)
    tensors = dict(tensors)
    if tensor_edit:
        tensor_edit(tensors)
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path), metadata={**meta, "adderconv.quant": json.dumps(recipe)})
    return path


L = "layer1.0.conv1"


def _set_layer(**kw):
    return lambda r: r["layers"][L].update(kw)


@pytest.mark.parametrize("recipe_edit, tensor_edit, match", [
    (lambda r: r.update(bits=3), None, "unknown version or width"),
    (lambda r: r.update(bits=True), None, "unknown version or width"),
    (lambda r: r.update(version=1), None, "cannot have several grids"),
    (_set_layer(zero_points=[0]), None, "zero_points must be a list of 2"),
    (_set_layer(grids=17, zero_points=[0] * 17), None, r"grids must be an integer in \[2, 16\]"),
    (_set_layer(zero_point=99, zero_points=[99, 0]), None, r"zero_point must be an integer in \[0, 15\]"),
    (None, lambda t: t.update({f"{L}.weight": t[f"{L}.weight"].clone().fill_(200)}),
     r"weight codes must be in \[0, 15\]"),
    (None, lambda t: t.update({f"{L}.channel_group": torch.full_like(t[f"{L}.channel_group"], 5)}), "channel_group"),
    (None, lambda t: t.update({f"{L}.channel_group": torch.zeros_like(t[f"{L}.channel_group"])}), "channel_group"),
    (None, lambda t: t.update({f"{L}.input_scale": torch.tensor([0.1, float("nan")])}), "input_scale"),
], ids=["bits 3", "bits true", "grids in version 1", "zero_points short", "more grids than channels",
        "zero point above 15", "codes above 15", "channel_group out of range", "a grid unused", "NaN grid scale"])
def test_hostile_lowbit_files_are_refused_in_one_line(recipe_edit, tensor_edit, match, lowbit_file, tmp_path):
    path = _rewrite(lowbit_file, tmp_path, recipe_edit, tensor_edit)
    with pytest.raises(AdderconvError, match=match) as e:
        adderconv.load_model(path)
    assert "\n" not in str(e.value)


def test_the_unedited_lowbit_file_loads(lowbit_file, tmp_path):
    loaded = adderconv.load_model(_rewrite(lowbit_file, tmp_path))
    assert loaded.get_submodule(L).grid_groups == 2 and loaded.get_submodule(L).bits == 4


# --- energy ----------------------------------------------------------------------------------------------------

def test_energy_prices_the_layer_at_its_width_and_counts_each_grids_requantisation(with_bn_stats):
    from adderconv.analysis.api import analyze
    from adderconv.analysis.tables import load_table

    net = with_bn_stats(nn.Sequential(AdderConv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8)), (4, 6, 6))
    calib = torch.randn(16, 4, 6, 6)
    reports = {k: analyze(adderconv.quantize(net, calib, bits=4, groups=k), (1, 4, 6, 6)) for k in (1, 2)}
    one, two = (next(le for le in reports[k].layers if le.name == "0") for k in (1, 2))
    assert one.precision == two.precision == "int4" and one.precision_from == "declared"
    assert one.accumulator == "int32" and one.unit == "SAD"
    table = load_table()
    assert table.entry("int4", "add").estimate and table.price("int4", "add") == pytest.approx(0.03 * 4 / 8)
    assert table.price("int4", "mul") == pytest.approx(0.2 * (4 / 8) ** 2)
    assert any("int4 add" in e for e in reports[1].estimates)
    # the second grid quantises the input once more: one mul, one add and the clamps per input element
    n = 4 * 6 * 6
    assert two.counts["mul"] - one.counts["mul"] == n and two.counts["add"] - one.counts["add"] == n
    assert two.counts["acc"] == one.counts["acc"] == 8 * 36 * 4 * 9
    assert two.energy_pj > one.energy_pj


def test_every_narrow_width_is_priced_with_an_int32_accumulator():
    from adderconv.analysis.energy import accumulator_for
    from adderconv.analysis.tables import load_table

    t = load_table()
    for n in range(4, 8):
        assert accumulator_for(f"int{n}") == "int32"
        assert t.price(f"int{n}", "add") == pytest.approx(0.03 * n / 8)
        assert t.area(f"int{n}", "mul").value == pytest.approx(282 * (n / 8) ** 2) and t.area(f"int{n}", "mul").estimate


def test_adder_linear_alone_with_groups():
    torch.manual_seed(3)
    lin = AdderLinear(12, 6)
    group_of = split_channels(lin.weight, 2)
    grids = [Grid.from_range(-1, 1, 6), Grid.from_range(-2, 3, 6)]
    layer = from_adder(lin, grids, group_of)
    x = torch.randn(4, 12)
    with torch.no_grad():
        assert torch.equal(layer(x), _simulate(layer, x))
