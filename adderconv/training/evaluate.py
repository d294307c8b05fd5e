"""Re-exports: the evaluation loop lives in :mod:`adderconv.data.evaluate`, the energy comparison in
:mod:`adderconv.analysis.compare` (fine-tuning's name for it, :func:`energy_comparison`, in ``trainer.py``).
This module keeps the old import path working for user code; the package imports those.

>>> from adderconv.data import evaluate as e
>>> e is evaluate
True
"""
from __future__ import annotations

from ..data.evaluate import autocast, evaluate, loader, psnr
from .trainer import energy_comparison

__all__ = ["evaluate", "loader", "psnr", "energy_comparison", "autocast"]
