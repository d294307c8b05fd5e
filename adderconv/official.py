"""Official AdderNet checkpoints (github.com/huawei-noah/AdderNet): recognise their layout, map it onto ours.

The official code trains under ``nn.DataParallel``, so every key starts with ``module.``, and its ``adder2d``
keeps its weight as ``adder`` (an optional bias as ``b``); our adder layers name them ``weight`` and ``bias``.
The networks themselves are the zoo's ``resnet20_adder`` (CIFAR) and ``resnet50_adder`` (ImageNet): same
module names, same classifier (a 1x1 convolution followed by BatchNorm).

>>> import torch, adderconv
>>> net = adderconv.get_model("resnet20_adder")
>>> theirs = {"module." + k.replace("conv1.weight", "conv1.adder") if ".0.conv1." in k else "module." + k: v
...           for k, v in net.state_dict().items()}
>>> state, note = official_layout(theirs, net)
>>> sorted(state) == sorted(net.state_dict())
True
>>> print(note)
official AdderNet layout remapped: 'module.' prefix (nn.DataParallel) removed, 3 adder weights renamed from ...
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["official_layout"]

_RENAMES = {"adder": "weight", "b": "bias"}    # official adder2d parameter -> ours


def _adder_modules(model: nn.Module) -> set[str]:
    from .layers import AdderConv1d, AdderConv2d, AdderLinear

    return {name for name, m in model.named_modules() if isinstance(m, (AdderConv1d, AdderConv2d, AdderLinear))}


def official_layout(state: Mapping[str, torch.Tensor], model: nn.Module) -> tuple[dict[str, torch.Tensor], str | None]:
    """``state`` with the official layout mapped onto ``model``'s names, and a note saying what was remapped
    (None, and ``state`` unchanged, when it already fits or the layout is not the official one)."""
    own = model.state_dict()
    if set(state) <= set(own):
        return dict(state), None
    strip = bool(state) and all(k.startswith("module.") for k in state)
    adders = _adder_modules(model)
    out: dict[str, torch.Tensor] = {}
    renamed = 0
    for key, value in state.items():
        name = key[len("module."):] if strip else key
        base, _, leaf = name.rpartition(".")
        if name not in own and leaf in _RENAMES and base in adders and f"{base}.{_RENAMES[leaf]}" in own:
            name = f"{base}.{_RENAMES[leaf]}"
            renamed += leaf == "adder"
        out[name] = value
    if not strip and not renamed:
        return dict(state), None
    done = (["'module.' prefix (nn.DataParallel) removed"] if strip else []) + \
        ([f"{renamed} adder weights renamed from '.adder' to '.weight'"] if renamed else [])
    return out, "official AdderNet layout remapped: " + ", ".join(done)
