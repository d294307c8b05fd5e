"""Fine-tuning with AdderNet's training rules: KD, checkpoints, DDP, AMP (on top of :mod:`adderconv.data`).

>>> from adderconv import get_model
>>> from adderconv.training import finetune, load_data
>>> result = finetune(get_model("lenet5_bn_adder"), load_data("digits"), epochs=10)   # doctest: +SKIP
>>> result.test["acc"]                                                                 # doctest: +SKIP
"""
from __future__ import annotations

from ..data import DataSplit, TensorPairs, degrade_bicubic, evaluate, load_data, safe_unpickle
from .checkpoint import load_checkpoint, save_checkpoint
from .distill import kd_loss, sr_kd_loss
from .prepare import Prepared, check_outputs, prepare
from .settings import TrainSettings
from .trainer import FinetuneResult, TrainingDiverged, energy_comparison, finetune

__all__ = [
    "finetune", "TrainSettings", "FinetuneResult", "TrainingDiverged", "DataSplit", "TensorPairs", "load_data",
    "degrade_bicubic", "safe_unpickle", "kd_loss", "sr_kd_loss", "evaluate", "energy_comparison",
    "load_checkpoint", "save_checkpoint", "prepare", "Prepared", "check_outputs",
]
