"""Training checkpoints: written atomically each epoch, read back with ``torch.load(weights_only=True)``.

A checkpoint holds everything :func:`~adderconv.training.finetune` needs to continue exactly: the model,
optimizer (momentum buffers), LR schedule position, AMP scaler, the per-layer adaptive-LR etas, the RNG
states and the metrics so far. Only tensors and plain Python values go in, so loading runs no code.
A run killed mid-epoch leaves the previous epoch's file intact (the new one is renamed into place whole).

>>> save_checkpoint(tmp / "checkpoint.pt", {"epoch": 1, "model": {}})   # doctest: +SKIP
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from ..errors import AdderconvError, first_line
from ..io import atomic_write

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state"]

FORMAT = "adderconv.finetune/1"


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors and plain values) to ``path`` atomically."""
    with atomic_write(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors only: no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise AdderconvError(f"`resume`: no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise AdderconvError(f"{path}: not a readable checkpoint ({first_line(e)})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise AdderconvError(f"{path}: not an adderconv fine-tuning checkpoint (format {FORMAT!r})")
    return state
