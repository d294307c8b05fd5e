"""Models from every MODEL form: zoo names, architecture specs, weight files with their recipes, trusted pickles.

This is the layer above :mod:`adderconv.io` (reading files safely) and :mod:`adderconv.arch` (what a name may
build): it rebuilds a saved model's structure with the conversion recipe (:mod:`adderconv.recipe`) and the
quantiser's (:mod:`adderconv.quant.recipe`), both on the ground floor: loading a file imports none of the
converter's graph, rewriting or counting code.

>>> net = load_model("resnet20_adder")
>>> type(net.layer1[0].conv1).__name__
'AdderConv2d'
"""
from __future__ import annotations

import collections
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import zoo
from .arch import ArchSpec, Budget, FileKwargs, looks_like_spec
from .errors import AdderconvError
from .io import (TRUST_HINT, ModelKind, as_state_dict, first_line, is_torchscript, is_zoo_name, model_kind,
                 read_safetensors, read_torch_file)
from .official import official_layout
from .quant.recipe import apply_quant_recipe
from .recipe import apply_recipe

__all__ = ["LoadedModel", "open_model", "load_model", "build_arch"]


def build_arch(spec: str | ArchSpec) -> nn.Module:
    """A fresh model from a spec the caller chose: a zoo name, ``torchvision:NAME``, ``timm:NAME`` or
    ``"package.module:factory"`` (see :mod:`adderconv.arch`)."""
    return (spec if isinstance(spec, ArchSpec) else ArchSpec.parse(spec)).build()


@dataclass
class LoadedModel:
    """A loaded model, the architecture it was built from (if any) and what loading had to say about it."""

    model: nn.Module
    arch: ArchSpec | None = None
    notes: list[str] = field(default_factory=list)


def _spec(arch: str | ArchSpec | None, metadata: dict[str, str], source: object) -> tuple[ArchSpec, bool]:
    """The architecture to build and whether it is trusted: the caller's own ``arch`` (with the file's recorded
    arguments when it names the same one) is; one read from the file's metadata is not."""
    recorded = ArchSpec.from_metadata(metadata)
    if arch is None:
        if recorded is None:
            raise AdderconvError(f"{source}: a state dict holds no architecture; pass `arch` "
                                 f"<zoo name | torchvision:NAME | module:factory>")
        return recorded, False
    spec = arch if isinstance(arch, ArchSpec) else ArchSpec.parse(arch)
    if recorded is not None and recorded.name == spec.name and not spec.kwargs:
        spec = ArchSpec(spec.name, recorded.kwargs)
    return spec, True


def _fit(model: nn.Module, state: dict[str, torch.Tensor], source: object, arch: ArchSpec) -> None:
    """Load ``state`` into ``model``; every mismatch (names, shapes, kinds of dtype) is one line."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise AdderconvError(f"{source}: weights do not fit architecture {arch.describe()!r} "
                             f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    shapes = [f"{k} {tuple(v.shape)} (architecture: {tuple(own[k].shape)})" for k, v in state.items()
              if tuple(v.shape) != tuple(own[k].shape)]
    if shapes:
        raise AdderconvError(f"{source}: {len(shapes)} tensors do not fit architecture {arch.describe()!r}: "
                             f"{'; '.join(shapes[:4])}{'; ...' if len(shapes) > 4 else ''}")
    kinds = [f"{k} {v.dtype} (architecture: {own[k].dtype})" for k, v in state.items()
             if v.dtype.is_floating_point != own[k].dtype.is_floating_point
             or (v.dtype == torch.bool) != (own[k].dtype == torch.bool)]
    if kinds:
        raise AdderconvError(f"{source}: tensors of another kind than the architecture's (they would be cast "
                             f"silently): {'; '.join(kinds[:4])}")
    wrapped = [f"{k} {v.dtype} holds {int(v.min())}..{int(v.max())}, outside {own[k].dtype}"
               for k, v in state.items() if _wraps(v, own[k].dtype)]
    if wrapped:
        raise AdderconvError(f"{source}: integer tensors whose values do not fit the architecture's type (they "
                             f"would wrap silently): {'; '.join(wrapped[:4])}")
    if getattr(state, "_metadata", None) is None:
        # safetensors keeps no per-module state-dict versions (MNASNet refuses to load without them); the
        # architecture just built carries the current ones, which is what the weights were saved from.
        state = collections.OrderedDict(state)
        state._metadata = own._metadata  # type: ignore[attr-defined]
    try:
        model.load_state_dict(state)    # the quantised layers check their values as they load (one line each)
    except AdderconvError as e:
        raise AdderconvError(f"{source}: {e}") from None


def _wraps(t: torch.Tensor, dtype: torch.dtype) -> bool:
    """An integer tensor of another integer type whose values the architecture's type cannot hold (int32 300 in
    a uint8 buffer is stored as 44)."""
    if t.dtype == dtype or t.numel() == 0 or any(d.is_floating_point or d.is_complex or d == torch.bool
                                                 for d in (t.dtype, dtype)):
        return False
    info = torch.iinfo(dtype)
    return int(t.min()) < info.min or int(t.max()) > info.max


def open_model(source: str | os.PathLike, arch: str | ArchSpec | None = None, trust: bool = False) -> LoadedModel:
    """Load a model with what is known about it; see :func:`load_model` for the accepted sources."""
    if is_zoo_name(source):
        spec = ArchSpec(str(source))
        return LoadedModel(spec.build(), spec, [f"{source}: a zoo model with random initialisation"])
    path = Path(source)
    if not path.exists():
        if looks_like_spec(str(source)):   # the user typed an architecture: build it as asked
            spec = ArchSpec.parse(str(source))
            return LoadedModel(spec.build(), spec, [f"{source}: built with random initialisation (no weights)"])
        raise AdderconvError(f"{source}: no such file, and not a zoo model ({', '.join(zoo.list_models())}) "
                             f"or an architecture (torchvision:NAME, module:factory)")
    if path.is_dir():
        raise AdderconvError(f"{source}: is a directory, expected a model file")
    if model_kind(source) is ModelKind.ONNX:
        raise AdderconvError(f"{source}: an ONNX file cannot be loaded as a PyTorch module")
    if path.suffix == ".pt2":
        if not trust:
            raise AdderconvError(f"{source}: refusing to load a .pt2 archive: {TRUST_HINT}")
        try:
            return LoadedModel(torch.export.load(path).module())
        except Exception as e:
            raise AdderconvError(f"{source}: not a loadable .pt2 archive ({first_line(e)})") from None
    if is_torchscript(path):
        if not trust:
            raise AdderconvError(f"{source}: refusing to load TorchScript: {TRUST_HINT}")
        try:
            return LoadedModel(torch.jit.load(str(path), map_location="cpu"))
        except Exception as e:
            raise AdderconvError(f"{source}: not a loadable TorchScript file ({first_line(e)})") from None
    if path.suffix == ".safetensors":
        state, metadata = read_safetensors(path)
    else:
        obj = read_torch_file(path, trust)
        if isinstance(obj, nn.Module):
            return LoadedModel(obj)
        state, metadata = as_state_dict(obj, path), {}
    spec, trusted = _spec(arch, metadata, source)
    # arguments the file chose are bounded by the weights it holds (10**8 blocks are refused at once)
    budget = Budget.for_weights(sum(t.numel() for t in state.values()), len(state)) \
        if isinstance(spec.kwargs, FileKwargs) and spec.kwargs else None
    model = spec.build(trusted=trusted or trust, budget=budget)
    notes: list[str] = []
    if recipe := metadata.get("adderconv.recipe"):      # plain JSON the converter owns and validates
        model = apply_recipe(model, recipe)
    if quant := metadata.get("adderconv.quant"):         # plain JSON; names only our own layers
        model = apply_quant_recipe(model, quant)
    state, remapped = official_layout(state, model)
    if remapped:
        notes.append(f"{source}: {remapped}")
    _fit(model, state, source, spec)
    return LoadedModel(model, spec, notes)


def load_model(source: str | os.PathLike, arch: str | ArchSpec | None = None, trust: bool = False) -> nn.Module:
    """Load a model from any MODEL form; see the README's "Model input" section.

    - a zoo name, ``torchvision:NAME``, ``timm:NAME`` or ``module:factory`` (built with random initialisation);
    - a safetensors file or a tensors-only ``.pt`` state dict: the architecture is ``arch`` or the one the file
      records (files written by adderconv record theirs, with its arguments, and their conversion recipe);
      an official AdderNet checkpoint (``module.`` prefixes, adder weights under ``.adder``) is recognised;
    - with ``trust``: a pickled module, TorchScript, or a ``.pt2`` archive (these can run code when loaded).
    """
    return open_model(source, arch, trust).model
