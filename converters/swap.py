"""Module swap (the normal path): replace chosen Conv1d/Conv2d/Linear modules by adder layers.

In the style of torch.ao.quantization: an exact-type mapping from a getter returning a copy, the target class
owns the conversion (``AdderConv2d.from_conv``), replacements are collected first and then assigned under
every name a module has (a shared module stays shared and is converted once), hooks, device, dtype and
train/eval mode carry over, and the caller's model is left alone unless ``inplace=True``.

>>> import torch, adderconv
>>> cnn = adderconv.get_model("resnet20")
>>> net = convert(cnn, example_inputs=(torch.randn(1, 3, 32, 32),))
>>> len(net.adderconv_report.converted), len(net.adderconv_report.kept)
(20, 2)
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

from torch import nn

from adderconv.errors import AdderconvError
from adderconv.recipe import aliases, apply_recipe, replace_module

from .blocks import AdderBlock, build_adder
from .discover import discover
from .policy import Policy, decide_all
from .report import REPORT_ATTR, ConversionReport, LayerRecord

__all__ = ["convert", "apply_recipe", "replace_module"]

# A transposed convolution scatters x * w into the output; |x - w| has no such scatter form that keeps the
# AdderNet properties (every output a -L1 distance between a patch and a template), so they stay multiplicative.
TRANSPOSED_REASON = "kept: transposed convolution (no adder form: |x - w| defines no scatter)"


def convert(model: nn.Module, policy: Policy | None = None, *, example_inputs: Sequence[object] | None = None,
            inplace: bool = False, mapping: dict[type[nn.Module], type[nn.Module]] | None = None) -> nn.Module:
    """Return ``model`` with the convolutions ``policy`` chooses replaced by adder layers.

    ``example_inputs`` (a tuple of arguments for ``forward``) lets the converter trace the model: first/last
    layers then follow execution order, BatchNorm is inserted only where an adder output is not normalised,
    and functional convolutions are reported. The result carries its :class:`ConversionReport` as
    ``model.adderconv_report`` (its ``recipe()`` is what saved files store).
    Converted weights are the conv's weights (``policy.weight_init``; see the README on scale).
    """
    policy = policy or Policy()
    if not isinstance(model, nn.Module):
        raise AdderconvError(f"convert expects an nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    found = discover(model, example_inputs, mapping)
    decisions = decide_all(list(found.layers.values()), policy)
    names = aliases(model)
    previous = getattr(model, REPORT_ATTR, None)
    functional = [desc for kind, desc in found.functional if kind == "conv" or policy.convert_linear]
    report = ConversionReport(functional=functional, traced=found.traced, policy_json=policy.to_json(),
                              warnings=list(found.warnings),
                              previous=previous.recipe_layers() if isinstance(previous, ConversionReport) else [])
    if functional:
        report.warnings.append(f"{len(functional)} multiplicative op(s) are not Conv1d/Conv2d/Linear modules and "
                               f"stay multiplicative with module swap (the ATen rewrite, convert_exported, reaches "
                               f"functional conv1d/conv2d/linear): {', '.join(functional[:3])}")
    replacements = []
    for name, info in found.layers.items():
        mod, decision = found.modules[name], decisions[name]
        record = LayerRecord(name, info.type_name, decision.convert, decision.reason, index=info.index,
                             aliases=tuple(n for n in names[id(mod)] if n != name), calls=found.calls[name])
        if decision.convert:
            new = build_adder(mod, bn=policy.insert_bn and not found.normalised[name], shortcut=policy.shortcut,
                              power=policy.power, weight_init=policy.weight_init, mapping=mapping)
            inner = new.adder if isinstance(new, AdderBlock) else new
            record.new_type = type(inner).__name__
            record.bn_inserted = isinstance(new, AdderBlock) and new.bn is not None
            record.shortcut = isinstance(new, AdderBlock) and new.shortcut
            record.power = isinstance(new, AdderBlock) and new.power is not None
            replacements.append((mod, new, names[id(mod)]))
        report.layers.append(record)
    report.layers += [LayerRecord(name, type(mod).__name__, False, TRANSPOSED_REASON, calls=0)
                      for name, mod in model.named_modules() if isinstance(mod, nn.modules.conv._ConvTransposeNd)]
    for mod, new, where in replacements:      # collect first, then reassign
        replace_module(model, mod, new, where)
    setattr(model, REPORT_ATTR, report)
    return model
