"""Building one adder layer from one multiplicative module, and the wrapper that adds BN / AdderSR parts.

On the ground floor beside the layers, because replaying a saved conversion (:mod:`adderconv.recipe`) needs them
and loading a model file must not import the converter; :mod:`adderconv.converters` re-exports every name.

A converted layer is a plain :class:`~adderconv.AdderConv2d` (/1d, :class:`~adderconv.AdderLinear`) when it
needs nothing else: its state dict keys are then the conv's keys. When BatchNorm is inserted or the AdderSR
preset applies, it is an :class:`AdderBlock` holding ``adder``, optional ``bn`` and ``power``.

>>> import torch
>>> block = build_adder(torch.nn.Conv2d(8, 8, 3, padding=1), bn=True, shortcut=True, power=True)
>>> block(torch.randn(2, 8, 6, 6)).shape
torch.Size([2, 8, 6, 6])
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import AdderConv1d, AdderConv2d, AdderConv3d, AdderLinear
from .sr import PowerActivation

__all__ = ["AdderBlock", "default_mapping", "mapped_target", "build_adder", "shape_preserving", "copy_hooks"]

_HOOK_DICTS = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks",
               "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_backward_pre_hooks",
               "_backward_hooks")


def mapped_target(module: nn.Module, mapping: dict[type[nn.Module], type[nn.Module]]) -> type[nn.Module] | None:
    """The adder class for ``module``: its exact type's, or that of the mapped base class it subclasses without
    overriding ``forward`` (torchvision's ``Conv3DSimple`` is an ``nn.Conv3d`` with another constructor)."""
    for base in type(module).__mro__:
        if base in mapping:
            same_forward = type(module).forward is base.forward and \
                getattr(type(module), "_conv_forward", None) is getattr(base, "_conv_forward", None)
            return mapping[base] if base is type(module) or same_forward else None
    return None


def default_mapping() -> dict[type[nn.Module], type[nn.Module]]:
    """Exact-type mapping from multiplicative modules to adder layers (a fresh copy on every call).

    A subclass is converted only when it keeps its base's ``forward`` (:func:`mapped_target`): one that
    overrides it may compute something else.
    """
    return {nn.Conv2d: AdderConv2d, nn.Conv1d: AdderConv1d, nn.Conv3d: AdderConv3d, nn.Linear: AdderLinear}


class AdderBlock(nn.Module):
    """``power(bn(adder(x)) [+ x])``: an adder layer with an inserted BatchNorm and/or AdderSR's parts.

    The shortcut is added after BN, as in AdderSR (adder -> BN -> +identity -> ReLU -> power); the power
    activation is applied here, before whatever activation followed the original conv, which gives the same
    result as after a ReLU because ``sign(x)|x|^a`` keeps signs and order.
    """

    def __init__(self, adder: nn.Module, bn: nn.Module | None = None, shortcut: bool = False,
                 power: nn.Module | None = None) -> None:
        super().__init__()
        self.adder = adder
        self.bn = bn
        self.shortcut = shortcut
        self.power = power

    def forward(self, x: Tensor) -> Tensor:
        y = self.adder(x)
        if self.bn is not None:
            if isinstance(self.adder, AdderLinear) and y.dim() != 2:   # BatchNorm1d wants (N, C)
                y = self.bn(y.reshape(-1, y.shape[-1])).reshape(y.shape)
            else:
                y = self.bn(y)
        if self.shortcut:
            y = y + x
        return self.power(y) if self.power is not None else y

    def extra_repr(self) -> str:
        return f"shortcut={self.shortcut}"


def shape_preserving(module: nn.Module) -> bool:
    """True when the layer's output has its input's shape for every input size (AdderSR's shortcut)."""
    if isinstance(module, nn.Linear):
        return module.in_features == module.out_features
    if not isinstance(module, nn.modules.conv._ConvNd) or module.in_channels != module.out_channels:
        return False
    if any(s != 1 for s in module.stride):
        return False
    if module.padding == "same":
        return True
    if isinstance(module.padding, str):
        return all(k == 1 for k in module.kernel_size)
    return all(2 * p == d * (k - 1) for p, d, k in zip(module.padding, module.dilation, module.kernel_size))


def copy_hooks(src: nn.Module, dst: nn.Module) -> None:
    """Carry the user's forward/backward hooks over to the replacement (as torch.ao.quantization does)."""
    for attr in _HOOK_DICTS:
        hooks = getattr(src, attr, None)
        if hooks:
            getattr(dst, attr).update(hooks)
    if getattr(src, "_is_full_backward_hook", None) is not None:
        dst._is_full_backward_hook = src._is_full_backward_hook


def _init_weights(adder: nn.Module, weight_init: str) -> None:
    with torch.no_grad():
        if weight_init == "normal":
            nn.init.normal_(adder.weight)
        elif weight_init == "copy_rescaled":
            std = adder.weight.std()
            if torch.isfinite(std) and std > 0:
                adder.weight.div_(std)


def build_adder(module: nn.Module, *, bn: bool = False, shortcut: bool = False, power: bool = False,
                weight_init: str = "copy",
                mapping: dict[type[nn.Module], type[nn.Module]] | None = None) -> nn.Module:
    """The adder replacement of ``module`` (weights per ``weight_init``, bias, device, dtype, hooks, mode)."""
    mapping = mapping if mapping is not None else default_mapping()
    target = mapped_target(module, mapping)
    if target is None:
        raise TypeError(f"no adder layer for {type(module).__name__}")
    adder = target.from_float(module)
    _init_weights(adder, weight_init)
    for name, p in module.named_parameters(recurse=False):
        getattr(adder, name).requires_grad_(p.requires_grad)
    copy_hooks(module, adder)
    shortcut = shortcut and shape_preserving(module)
    if not (bn or shortcut or power):
        return adder.train(module.training)
    factory = {"device": module.weight.device, "dtype": module.weight.dtype}
    channels = module.out_features if isinstance(module, nn.Linear) else module.out_channels
    norm = None
    if bn:
        norm_type = getattr(type(adder), "norm_type", None)
        if norm_type is None:
            raise TypeError(f"{type(adder).__name__} declares no norm_type: cannot insert BatchNorm after it")
        norm = norm_type(channels, **factory)
    act = PowerActivation(channels).to(**factory) if power else None
    return AdderBlock(adder, norm, shortcut, act).train(module.training)
