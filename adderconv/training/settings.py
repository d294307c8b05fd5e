"""The training recipe, declared once: :class:`TrainSettings` and its validation.

``finetune(model, data, epochs=3, lr=0.05)`` and ``adderconv finetune --epochs 3 --lr 0.05`` both fill this one
dataclass; the checkpoint records the fields that shape the trajectory (:data:`TRAJECTORY`), and resuming with
any of them changed is refused.

>>> s = TrainSettings(epochs=3)
>>> s.check()
>>> TrainSettings(eta=-1).check()
Traceback (most recent call last):
...
adderconv.errors.AdderconvError: invalid training settings, need `eta` > 0 (got -1)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from ..choices import AMP_MODES, TRAIN_OPTIMIZERS
from ..errors import AdderconvError, check_choice

__all__ = ["TrainSettings", "TRAJECTORY", "pick_device", "amp_dtype"]


@dataclass(kw_only=True)
class TrainSettings:
    """AdderNet's reference CIFAR recipe by default (SGD lr 0.1, momentum 0.9, wd 5e-4, batch 256, cosine,
    eta 0.2). ``epochs=0`` evaluates only (nothing trains, BatchNorm is not recalibrated: the way to test a
    quantised model). ``optimizer="adam"`` (``momentum`` is then beta1) suits SR nets; ``adder_lr_scale``
    multiplies the adder weights' learning rate (50 for SR nets under Adam, see the trainer's docstring);
    ``eta_relative`` scales each layer's eta by its starting RMS; ``recalibrate`` re-estimates BatchNorm
    statistics on ``calib_batches`` batches before the first epoch; ``batch_size`` is global (split over DDP
    ranks). ``bits`` (4..8) trains through the fake quantisation of :func:`adderconv.quant.prepare_qat` (grids
    calibrated on ``calib_batches`` training batches, ``groups`` per layer) and ends with
    :func:`adderconv.quantize` on those grids: the model tested and written holds the integer codes."""

    epochs: int = 10
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    eta: float = 0.2
    eta_relative: bool = False
    adder_lr_scale: float = 1.0
    kd_alpha: float = 0.5
    kd_temperature: float = 4.0
    warmup_epochs: int = 0
    recalibrate: bool = True
    calib_batches: int = 20
    bits: int | None = None            # train through int<bits> fake quantisation (4..8) and write the codes
    groups: int = 1                    # with ``bits``: grids per layer, as adderconv.quantize
    device: str = "auto"
    amp: str = "auto"
    seed: int = 0
    num_workers: int = 0

    def check(self) -> None:
        """Every setting in its range (one line naming all that are not); the device and AMP mode exist."""
        check_choice("optimizer", self.optimizer, TRAIN_OPTIMIZERS)
        if self.bits is not None:
            from ..quant.scheme import check_bits

            check_bits(self.bits)
        if isinstance(self.groups, bool) or not isinstance(self.groups, int) or self.groups < 1:
            raise AdderconvError(f"`groups` (grids per layer) must be a positive integer, got {self.groups!r}")
        bad = []
        for name, (low, closed, high) in _RANGES.items():
            v = getattr(self, name)
            ok = math.isfinite(v) and (v >= low if closed else v > low) and (high is None or v <= high)
            if not ok:
                bad.append(f"`{name}` {'>=' if closed else '>'} {low}{f' and <= {high}' if high else ''} (got {v})")
        if bad:
            raise AdderconvError("invalid training settings, need " + "; ".join(bad))
        amp_dtype(self.amp, pick_device(self.device))

    def trajectory(self) -> dict[str, object]:
        """The recorded settings that shape the run (see :data:`TRAJECTORY`)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in TRAJECTORY}


# (lowest, lowest allowed, highest) of each numeric setting.
_RANGES = {"epochs": (0, True, None), "batch_size": (1, True, None), "lr": (0, False, None),
           "adder_lr_scale": (0, False, None), "eta": (0, False, None), "weight_decay": (0, True, None),
           "momentum": (0, True, 1), "kd_alpha": (0, True, 1), "kd_temperature": (0, False, None),
           "num_workers": (0, True, None), "calib_batches": (0, True, None), "warmup_epochs": (0, True, None)}

#: What shapes the trajectory: resuming with any of these changed would not continue the same run. Beside the
#: recipe's fields, the run records its world size, its data (source, split and sizes) and whether it distils.
TRAJECTORY = ("epochs", "optimizer", "lr", "momentum", "weight_decay", "batch_size", "eta", "eta_relative",
              "kd_alpha", "kd_temperature", "warmup_epochs", "seed", "amp", "adder_lr_scale",
              "bits", "groups", "world_size", "data", "teacher")


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise AdderconvError(f"`device` must be auto, cpu, cuda or cuda:N, got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AdderconvError(f"`device` {device}: CUDA is not available on this machine")
    return dev


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """'auto' -> bf16 on GPUs that have it, fp16 on older GPUs, none on CPU; or 'bf16' | 'fp16' | 'off'."""
    check_choice("amp", amp, AMP_MODES, "mixed-precision mode")
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda":
        raise AdderconvError(f"`amp` {amp} needs a CUDA device (training runs on {device})")
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16
