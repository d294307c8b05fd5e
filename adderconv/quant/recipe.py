"""The quantisation recipe: plain JSON in a saved file's metadata (``adderconv.quant``), and saving.

The recipe says the code width (``bits``, 4..8), which adder layers are quantised (with their zero point,
output kind and clamp floor, the residual fused into their epilogue and the zero point of the codes they emit,
:mod:`.fuse`; with several grids, ``grids`` and their ``zero_points``), which BatchNorms were folded, and how
calibration ran; the tensors (uint8 weight codes, grid scales, epilogue
affines) are in the file. Loading checks every field is a plain value of the expected type and range and
names a layer of the expected type in the rebuilt float model; it never imports or calls anything it names.
Version 1 is what 8-bit one-grid files always were (a file of one grid per layer is still written as version 1,
at any width: older readers refuse a width they lack); version 2 adds layers with several grids.

>>> import json, torch, adderconv
>>> q = adderconv.quantize(adderconv.get_model("resnet20_adder").eval(), torch.randn(4, 3, 32, 32))
>>> sorted(json.loads(recipe_json(q)))
['bits', 'calibration', 'folded', 'layers', 'version']
"""
from __future__ import annotations

import json
import os
from typing import Any

from torch import nn

from ..errors import AdderconvError
from ..io import atomic_write
from ..layers import AdderConv2d, AdderLinear
from ..untrusted import json_loads
from .api import set_module
from .fuse import fuse_residuals
from .layers import QuantAdderConv2d, QuantAdderLinear, quantizable
from .plan import codes_for_readers, codes_to, plan
from .scheme import BITS

__all__ = ["QUANT_KEY", "recipe_json", "apply_quant_recipe", "save_quantized", "is_quantized"]

QUANT_KEY = "adderconv.quant"
_VERSIONS = (1, 2)   # 2: some layer has several grids (older readers would build one and fail on the tensors)
_REPLAYED = "adderconv_quant_recipe"   # set by apply_quant_recipe: a reloaded model saves the same recipe


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, QuantAdderConv2d) for m in model.modules())


def recipe_json(model: nn.Module) -> str:
    """The recipe of a model :func:`adderconv.quantize` returned."""
    layers = {n: {"zero_point": m.zero_point, "out": m.out_mode, "lo": m.out_lo}
              for n, m in model.named_modules() if isinstance(m, QuantAdderConv2d)}
    bits = {m.bits for m in model.modules() if isinstance(m, QuantAdderConv2d)}
    if len(bits) > 1:
        raise AdderconvError(f"the model's quantised layers have different widths {sorted(bits)}: one recipe has one")
    for n, m in model.named_modules():
        if isinstance(m, QuantAdderConv2d) and m.grid_groups > 1:
            layers[n].update(grids=m.grid_groups, zero_points=list(m.zero_points))
    for n, m in model.named_modules():
        if isinstance(m, QuantAdderConv2d) and m.residual:
            layers[n]["residual"] = m.residual
            if m.codes_zero_point >= 0:
                layers[n]["codes_zero_point"] = m.codes_zero_point
                layers[n]["codes_only"] = m.codes_only
    if not layers:
        raise AdderconvError("the model has no quantised adder layers (quantise it first: adderconv quantize)")
    report = getattr(model, "adderconv_quant", None)
    replayed = getattr(model, _REPLAYED, {})    # a model loaded from a file: what its recipe said
    folded = sorted(b for info in report.layers.values() if (b := info.get("bn"))) if report else \
        sorted(replayed.get("folded", []))
    calibration = {"method": report.method, "percentile": report.percentile, "batches": report.batches,
                   "samples": report.samples} if report else dict(replayed.get("calibration", {}))
    grouped = any("grids" in spec for spec in layers.values())
    return json.dumps({"version": 2 if grouped else 1, "bits": bits.pop() if bits else 8, "layers": layers,
                       "folded": folded, "calibration": calibration}, sort_keys=True)


def _int(value: Any, what: str, lo: int = 0, hi: int = 255) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise AdderconvError(f"quantisation recipe: {what} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _grids(name: str, spec: dict, adder: nn.Module, version: int) -> int:
    """A layer's grid count from its recipe (1 unless it says ``grids``; then ``zero_points`` has one each)."""
    if "grids" not in spec and "zero_points" not in spec:
        return 1
    channels = adder.weight.shape[0]
    k = spec.get("grids")
    if version < 2 or getattr(adder, "groups", 1) != 1:
        raise AdderconvError(f"quantisation recipe: layer {name!r} cannot have several grids "
                             f"({'version 1' if version < 2 else 'a layer with channel groups'})")
    _int(k, f"{name} grids", 2, channels)
    zps = spec.get("zero_points")
    if not isinstance(zps, list) or len(zps) != k:
        raise AdderconvError(f"quantisation recipe: {name} zero_points must be a list of {k} zero points, got "
                             f"{str(zps)[:40]}")
    return k


def apply_quant_recipe(model: nn.Module, text: str) -> nn.Module:
    """Rebuild the quantised structure (empty buffers, filled by the state dict) on the float ``model``."""
    recipe = json_loads(text, "the quantisation recipe in the file's metadata")   # bounded depth: one line
    version, bits = recipe.get("version") if isinstance(recipe, dict) else None, \
        recipe.get("bits") if isinstance(recipe, dict) else None
    if (isinstance(version, bool) or version not in _VERSIONS or isinstance(bits, bool) or not isinstance(bits, int)
            or bits not in BITS):
        raise AdderconvError(f"quantisation recipe of an unknown version or width (expected version "
                             f"{' or '.join(map(str, _VERSIONS))}, bits {BITS[0]} to {BITS[-1]}): {str(recipe)[:80]}")
    qmax = (1 << bits) - 1
    layers, folded = recipe.get("layers"), recipe.get("folded", [])
    if not isinstance(layers, dict) or not layers or not isinstance(folded, list):
        raise AdderconvError("quantisation recipe: 'layers' must be a non-empty object and 'folded' a list")
    modules = dict(model.named_modules())
    for name, spec in layers.items():
        adder = modules.get(name) if isinstance(name, str) else None
        if not isinstance(adder, (AdderConv2d, AdderLinear)) or quantizable(adder):
            raise AdderconvError(f"quantisation recipe names {name!r}, which is not a quantisable adder layer of "
                                 f"this architecture")
        if not isinstance(spec, dict) or spec.get("out") not in ("float", "uint8"):
            raise AdderconvError(f"quantisation recipe: layer {name!r} needs out 'float' or 'uint8', got {spec!r}")
    ngrids = {name: _grids(name, spec, modules[name], version) for name, spec in layers.items()}
    # what each layer hands on is a fact of the architecture (the quantiser's plan): a file must agree with it,
    # or a layer would write codes its reader takes as floats (or the reverse)
    structure = plan(model, list(layers))
    for name, spec in layers.items():
        step = structure.steps[name]
        codes_next = codes_to(step, ngrids)
        if spec["out"] != ("uint8" if codes_next else "float"):
            raise AdderconvError(f"quantisation recipe: layer {name!r} writes {spec['out']}, but in this architecture "
                                 + (f"it hands uint8 codes to {step.next!r}" if codes_next else "its output is read "
                                    "as float"))
    if {str(b) for b in folded} != {s.bn for s in structure.steps.values() if s.bn}:
        raise AdderconvError(f"quantisation recipe: the folded BatchNorms {sorted(map(str, folded))[:4]} are not "
                             f"the ones this architecture folds")
    for name, spec in layers.items():
        adder = modules[name]
        zp = _int(spec.get("zero_point"), f"{name} zero_point", hi=qmax)
        lo = _int(spec.get("lo", 0), f"{name} lo", hi=qmax)
        zps: int | list[int] = zp
        if ngrids[name] > 1:
            zps = [_int(z, f"{name} zero_points", hi=qmax) for z in spec["zero_points"]]
            if zps[0] != zp:
                raise AdderconvError(f"quantisation recipe: {name} zero_point {zp} is not its first grid's {zps[0]}")
        if isinstance(adder, AdderLinear):
            layer: QuantAdderConv2d = QuantAdderLinear(adder.in_features, adder.out_features, zps, spec["out"], lo,
                                                       bits)
        else:
            left, _, top, _ = adder._explicit_padding()
            layer = QuantAdderConv2d(adder.in_channels, adder.out_channels, adder.kernel_size, adder.stride,
                                     (top, left), adder.dilation, adder.groups, zps, spec["out"], lo, bits)
        set_module(model, name, layer)
    for name in folded:
        if not isinstance(name, str) or type(modules.get(name)) not in (nn.BatchNorm2d, nn.BatchNorm1d):
            raise AdderconvError(f"quantisation recipe folds {name!r}, which is not a BatchNorm of this architecture")
        set_module(model, name, nn.Identity())
    model, fused = fuse_residuals(model)   # the same pass as quantize's: it must find what the recipe says
    wanted = {n: spec["residual"] for n, spec in layers.items() if spec.get("residual")}
    if fused != wanted:
        raise AdderconvError(f"quantisation recipe: the residual fusions of this architecture "
                             f"({sorted(fused.items())}) differ from the file's ({sorted(wanted.items())})")
    for name, spec in layers.items():
        step = structure.steps[name]
        codes = codes_for_readers(step, name in fused, ngrids)   # as quantize decides (its set_codes)
        if ("codes_zero_point" in spec) != codes:
            raise AdderconvError(f"quantisation recipe: layer {name!r} {'has' if not codes else 'lacks'} the codes of "
                                 f"a residual sum that this architecture's layers {'do not ' if not codes else ''}read")
        if codes:
            only = spec.get("codes_only", False)
            if not isinstance(only, bool):
                raise AdderconvError(f"quantisation recipe: {name} codes_only must be true or false, got {only!r}")
            if only != step.only_readers:
                raise AdderconvError(f"quantisation recipe: layer {name!r} says its sum is read "
                                     f"{'only' if only else 'not only'} by the next layers' codes, but in this "
                                     f"architecture it is {'' if step.only_readers else 'not '}")
            model.get_submodule(name).set_codes(_int(spec["codes_zero_point"], f"{name} codes_zero_point", hi=qmax),
                                                only=only)
    setattr(model, _REPLAYED, {"folded": list(folded), "calibration": recipe.get("calibration", {})})
    return model.eval()


def save_quantized(model: nn.Module, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write ``model`` as safetensors with its recipe (plus ``metadata``: the source's arch and conversion
    recipe, so :func:`adderconv.load_model` rebuilds the float structure first). Atomic."""
    from safetensors.torch import save_file

    md = {k: v for k, v in (metadata or {}).items() if k != QUANT_KEY}
    md.update({"format": "pt", QUANT_KEY: recipe_json(model)})
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=md)
