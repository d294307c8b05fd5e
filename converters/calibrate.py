"""BatchNorm re-estimation after conversion: adder outputs have a different scale than conv outputs.

>>> import torch, adderconv
>>> net = adderconv.convert(adderconv.get_model("resnet20"))
>>> _ = recalibrate_bn(net, [torch.randn(4, 3, 32, 32) for _ in range(2)])
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from adderconv.errors import AdderconvError

__all__ = ["recalibrate_bn"]


def _inputs(batch: object) -> tuple:
    """A batch as forward() arguments: a tensor, or the first item of an (inputs, targets) pair."""
    if isinstance(batch, torch.Tensor):
        return (batch,)
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return (batch[0],)
    raise AdderconvError(f"calibration data must yield tensors or (inputs, targets) pairs, got {type(batch).__name__}")


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data: Iterable[object], num_batches: int | None = None) -> nn.Module:
    """Re-estimate every BatchNorm's running mean/variance from ``data`` (in place; returns ``model``).

    Running statistics are reset and replaced by the exact average over the batches (momentum=None, as
    torch.optim.swa_utils.update_bn does); everything else runs in eval mode (dropout off), and the model's
    modes and momenta are restored afterwards. Use a few dozen batches of training images.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return model
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in norms}
    seen = 0
    try:
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        for batch in data:
            if num_batches is not None and seen >= num_batches:
                break
            model(*(x.to(device) for x in _inputs(batch)))
            seen += 1
    finally:
        for m, mode in modes.items():
            m.train(mode)
        for m, momentum in momenta.items():
            m.momentum = momentum
    if seen == 0:
        raise AdderconvError("recalibrate_bn got no calibration batches")
    return model
