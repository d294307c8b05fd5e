"""Replaying a conversion: the recipe a converted file stores, applied to a fresh original architecture.

On the ground floor beside the layers (:mod:`.blocks` builds each adder layer), so loading a model file
(:mod:`adderconv.loading`) never imports the converter, its graph library or its counting handles.
:mod:`adderconv.converters` re-exports :func:`apply_recipe`; :func:`replace_module` and :func:`aliases` serve
the converter's module swap too.

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
>>> recipe = '{"format": "adderconv.recipe/1", "layers": [{"name": "0", "from": "Conv2d"}]}'
>>> type(apply_recipe(net, recipe)[0]).__name__
'AdderConv2d'
"""
from __future__ import annotations

import json
from collections.abc import Sequence

from torch import nn

from .blocks import build_adder
from .conversion import RECIPE_FORMAT, REPORT_ATTR, ConversionReport
from .errors import AdderconvError
from .untrusted import json_loads, plain

__all__ = ["apply_recipe", "replace_module", "aliases"]

_ENTRY = {"name": str, "from": str, "to": (str, type(None)), "bn": bool, "shortcut": bool, "power": bool}


def aliases(model: nn.Module) -> dict[int, list[str]]:
    """id(module) -> every name it is registered under (a shared module has several)."""
    names: dict[int, list[str]] = {}
    for name, mod in model.named_modules(remove_duplicate=False):
        names.setdefault(id(mod), []).append(name)
    return names


def replace_module(model: nn.Module, module: nn.Module, new: nn.Module, names: Sequence[str]) -> None:
    """Assign ``new`` under every name in ``names`` (all the places ``module`` is registered)."""
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        if parent._modules.get(attr) is not module:
            raise AdderconvError(f"internal: {name!r} is not the module being replaced")
        parent._modules[attr] = new


def _check_entry(entry: object) -> None:
    """A recipe entry is an object of a layer name and type, and booleans: anything else is one line."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not isinstance(entry.get("from"), str):
        raise AdderconvError(f"conversion recipe: each layer entry needs a 'name' and a 'from' (strings), got "
                             f"{plain(repr(entry))[:80]}")
    for key, kind in _ENTRY.items():
        if key in entry and not isinstance(entry[key], kind):
            raise AdderconvError(f"conversion recipe: layer {plain(entry['name'])!r} has {key} "
                                 f"{plain(repr(entry[key]))[:40]}, expected {getattr(kind, '__name__', 'a string')}")


def apply_recipe(model: nn.Module, recipe: str) -> nn.Module:
    """Rebuild a conversion on a fresh original architecture (in place) so a saved state dict loads into it.

    >>> import adderconv
    >>> net = adderconv.convert(adderconv.get_model("resnet20"))
    >>> again = apply_recipe(adderconv.get_model("resnet20"), net.adderconv_report.recipe())
    >>> again.load_state_dict(net.state_dict())
    <All keys matched successfully>
    """
    spec = json_loads(recipe, "the conversion recipe in the file's metadata")
    if not isinstance(spec, dict) or spec.get("format") != RECIPE_FORMAT:
        got = spec.get("format") if isinstance(spec, dict) else type(spec).__name__
        raise AdderconvError(f"unreadable conversion recipe (format {plain(repr(got))[:80]}, expected "
                             f"{RECIPE_FORMAT!r})")
    layers, policy = spec.get("layers"), spec.get("policy", {})
    if not isinstance(layers, list) or not isinstance(policy, dict):
        raise AdderconvError("unreadable conversion recipe: 'layers' must be a list and 'policy' an object")
    names = aliases(model)
    replacements = []
    for entry in layers:
        _check_entry(entry)
        try:
            mod = model.get_submodule(entry["name"])
        except AttributeError:
            raise AdderconvError(f"recipe names layer {plain(entry['name'])!r}, which the architecture lacks") from None
        if type(mod).__name__ != entry["from"]:
            raise AdderconvError(f"recipe expects {plain(entry['name'])!r} to be {plain(entry['from'])}, "
                                 f"the architecture has {type(mod).__name__}")
        try:
            new = build_adder(mod, bn=entry.get("bn", False), shortcut=entry.get("shortcut", False),
                              power=entry.get("power", False))
        except TypeError as e:      # the layer has no adder form
            raise AdderconvError(f"recipe converts {plain(entry['name'])!r}: {e}") from None
        replacements.append((mod, new, names[id(mod)]))
    for mod, new, where in replacements:
        replace_module(model, mod, new, where)
    setattr(model, REPORT_ATTR, ConversionReport(policy_json=json.dumps(spec.get("policy", {})), previous=layers))
    return model
