"""``analyze``: one call from a model (module, zoo name, file) to an :class:`EnergyReport`.

>>> report = analyze("resnet20_adder")
>>> report.totals.mul < report.totals.add
True
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from adderconv import zoo
from adderconv.errors import AdderconvError
from adderconv.io import is_zoo_name, load_model

from .capture import count_ops
from .counts import ModelCounts
from .energy import EnergyReport, price
from .tables import load_table

__all__ = ["analyze", "count_model", "default_shape"]


def default_shape(source: object, arch: str | None = None) -> tuple[int, ...] | None:
    """The zoo's input shape for a zoo name (or a state dict whose ``arch`` is a zoo name), else None."""
    for name in (source, arch):
        if isinstance(name, str) and name in zoo.list_models():
            return zoo.default_input_shape(name)
    return None


def count_model(model: nn.Module, input_shape: tuple[int, ...]) -> ModelCounts:
    """Count ``model`` in eval mode on zeros of ``input_shape``; the caller's training flag is restored."""
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        x = torch.zeros(input_shape, device=param.device if param is not None else "cpu")
        with torch.no_grad():
            return count_ops(model, x)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AdderconvError(f"the model does not run on an input of shape {tuple(input_shape)}: {first}; "
                             f"pass the right --input-shape") from None
    finally:
        model.train(was_training)


def analyze(model: nn.Module | str | Path, input_shape: tuple[int, ...] | None = None, *,
            precision: str = "fp32", table: str | Path | None = None, arch: str | None = None,
            trust: bool = False, layer_precision: Mapping[str, str] | None = None, memory: str | None = None,
            energy_scale: float = 1.0) -> EnergyReport:
    """Count a model's operations and price them.

    ``model`` is an ``nn.Module``, a zoo name, an ``.onnx`` file (ONNX front end), or a state dict /
    safetensors file (+ ``arch``) or, with ``trust``, a pickled model (see :func:`adderconv.io.load_model`).
    ``layer_precision`` maps glob patterns over layer names to precisions; ``memory`` names a memory level
    of the table (``sram_8kb``, ``sram_32kb``, ``sram_1mb``, ``dram``) to add memory energy; ``energy_scale``
    multiplies every price (technology-node scaling).
    """
    prices = load_table(table)
    if energy_scale != 1.0:
        prices = prices.scaled(energy_scale)
    if isinstance(model, nn.Module):
        name = type(model).__name__
        if input_shape is None:
            raise AdderconvError(f"an input shape is needed to count {name}; pass --input-shape, e.g. 1,3,224,224")
        counts = count_model(model, tuple(input_shape))
    else:
        name = str(model)
        if not is_zoo_name(name) and Path(name).suffix == ".onnx":
            from .onnx_frontend import count_onnx

            counts = count_onnx(Path(name), input_shape)
        else:
            input_shape = input_shape or default_shape(name, arch)
            loaded = load_model(name, arch=arch, trust=trust)
            if input_shape is None:
                raise AdderconvError(f"{name}: no default input shape for this model; pass --input-shape, "
                                     f"e.g. 1,3,224,224")
            counts = count_model(loaded, tuple(input_shape))
    return price(counts, precision=precision, table=prices, layer_precision=layer_precision, memory=memory,
                 model=name, input_shape=tuple(input_shape) if input_shape else None)
