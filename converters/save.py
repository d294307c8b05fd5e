"""Saving a converted model: safetensors with the recipe in its metadata (default), a pickle, or a .pt2.

A safetensors file holds only tensors; its metadata carries "adderconv.recipe" (how to rebuild the converted
structure on the original architecture) and, when known, "adderconv.arch" with the arguments it was built
with ("adderconv.arch_kwargs", e.g. the class count a model was fine-tuned for), so ``adderconv.load_model(path)``
(or ``--arch`` for a user architecture) gives the converted model back. Writes are atomic.

>>> import tempfile, torch, adderconv
>>> net = adderconv.convert(adderconv.get_model("resnet20"))
>>> path = tempfile.mkdtemp() + "/r20.safetensors"
>>> save_converted(net, path, arch="resnet20")
>>> type(adderconv.load_model(path).layer1[0].conv1).__name__
'AdderConv2d'
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from adderconv.arch import ArchSpec
from adderconv.errors import AdderconvError
from adderconv.choices import SAVE_FORMATS as FORMATS
from adderconv.io import atomic_write
from adderconv.quant.recipe import QUANT_KEY, is_quantized, recipe_json

from .report import REPORT_ATTR

__all__ = ["save_converted", "FORMATS"]


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with every tensor its own storage (a shared module appears under each of its names)."""
    out, seen = {}, set()
    for name, t in model.state_dict().items():
        t = t.detach()
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)) if t.numel() else None
        out[name] = (t.clone().contiguous() if key in seen or not t.is_contiguous() else t).cpu()
        if key is not None:
            seen.add(key)
    return out


def save_converted(model: nn.Module, path: str | os.PathLike, *, arch: str | ArchSpec | None = None,
                   fmt: str = "safetensors",
                   example_inputs: Sequence[object] | None = None) -> None:
    """Write ``model`` (the result of :func:`adderconv.convert`) to ``path`` atomically.

    ``fmt="pt2"`` exports with torch.export and needs ``example_inputs``; ``"pickle"`` saves the whole module
    (loading it then needs ``--trust``).
    """
    if fmt not in FORMATS:
        raise AdderconvError(f"`fmt` must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "pt2" and example_inputs is None:
        raise AdderconvError("`fmt` pt2 needs an input shape to export with (`input_shape`)")
    report = getattr(model, REPORT_ATTR, None)
    with atomic_write(path) as tmp:
        if fmt == "safetensors":
            from safetensors.torch import save_file
            metadata = {"format": "pt"}
            if report is not None:
                metadata["adderconv.recipe"] = report.recipe()
            if arch:
                metadata.update((arch if isinstance(arch, ArchSpec) else ArchSpec.parse(arch)).to_metadata())
            if is_quantized(model):          # int8 layers: their recipe too, so the file loads back quantised
                metadata[QUANT_KEY] = recipe_json(model)
            save_file(_tensors(model), str(tmp), metadata=metadata)
        elif fmt == "pickle":
            torch.save(model, tmp)
        else:
            was_training = model.training
            try:
                ep = torch.export.export(model.eval(), tuple(example_inputs), strict=False)
            finally:
                model.train(was_training)
            torch.export.save(ep, tmp)
