"""``analyze``: one call from a model (module, zoo name, file) to an :class:`EnergyReport`.

>>> report = analyze("resnet20_adder")
>>> report.totals.mul < report.totals.add
True
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from adderconv.errors import AdderconvError, first_line
from adderconv.io import ModelKind, input_shape_of, model_kind
from adderconv.loading import open_model

from .capture import CAPTURES, count_ops
from .counts import ModelCounts
from .energy import ENGINES, EnergyReport, price
from .tables import load_table
from .training import OPTIMIZERS

__all__ = ["analyze", "count_model", "default_shape"]


default_shape = input_shape_of   # the zoo's input shape for a zoo name, an arch, or a file that records one


def program_shape(model: object) -> tuple[int, ...] | None:
    """The input shape an exported program (or its ``.module()``, e.g. a loaded ``.pt2``) was exported with."""
    if isinstance(model, torch.export.ExportedProgram):
        model = model.module()
    if isinstance(model, torch.fx.GraphModule):
        for node in model.graph.nodes:
            val = node.meta.get("val") if node.op == "placeholder" else None
            if isinstance(val, torch.Tensor):
                try:
                    return tuple(int(d) for d in val.shape)
                except TypeError:       # a symbolic size: the user must say
                    return None
    return None


def count_model(model: nn.Module, input_shape: tuple[int, ...], *, capture: str = "dispatch",
                training: bool = False, optimizer: str | None = None,
                handles: Mapping[object, object] | None = None) -> ModelCounts:
    """Count ``model`` on an input of ``input_shape`` (a fake made from the shape alone by default, nothing
    allocated; zeros for the real and jit captures); the caller's training flag is restored. Inference counts
    run in eval mode; ``training=True`` counts a training step in train mode (forward, backward, and the update
    of ``optimizer`` (``sgd``/``adam``) as a line of its own)."""
    if capture not in CAPTURES:
        raise AdderconvError(f"unknown capture {capture!r}; choose one of {', '.join(CAPTURES)}")
    module = model.module() if isinstance(model, torch.export.ExportedProgram) else model
    try:
        param = next(module.parameters(), None)
        x = torch.empty(input_shape, device="meta") if capture == "dispatch" else \
            torch.zeros(input_shape, device=param.device if param is not None else "cpu")
        counts = count_ops(model, x, capture=capture, training=training, handles=handles)
    except (RuntimeError, ValueError) as e:
        first = first_line(e)
        mode = " in training mode" if training else ""
        raise AdderconvError(f"the model does not run on an input of shape {tuple(input_shape)}{mode}: {first}; "
                             f"pass the right `input_shape`") from None
    if training and optimizer:
        from .training import optimizer_layer

        counts.layers.append(optimizer_layer(optimizer, module))
        counts.optimizer = optimizer
    return counts


def analyze(model: nn.Module | str | Path, input_shape: tuple[int, ...] | None = None, *,
            precision: str = "fp32", table: str | Path | None = None, arch: str | None = None,
            trust: bool = False, layer_precision: Mapping[str, str] | None = None, memory: str | None = None,
            energy_scale: float = 1.0, capture: str = "dispatch", training: bool = False,
            optimizer: str | None = "sgd", handles: Mapping[object, object] | None = None,
            pricing: str = "hardware", accumulator: str | None = None, engine: str = "arithmetic",
            accelerator: str = "tpu_like", same_area: bool = False) -> EnergyReport:
    """Count a model's operations and price them.

    ``model`` is an ``nn.Module``, a zoo name, an ``.onnx`` file (ONNX front end), or a state dict /
    safetensors file (+ ``arch``) or, with ``trust``, a pickled model (see :func:`adderconv.loading.load_model`).
    ``layer_precision`` maps glob patterns over layer names to precisions; ``memory`` names a memory level
    of the table (``sram_8kb``, ``sram_32kb``, ``sram_1mb``, ``dram``) to add memory energy; ``energy_scale``
    multiplies every price (technology-node scaling). ``pricing`` and ``accumulator`` choose the width the
    accumulations are priced at (:func:`.energy.accumulator_for`). ``engine="zigzag"`` adds ZigZag's
    dataflow model on ``accelerator`` (a bundled name or a YAML file; ``same_area``: an array with as many
    more units as the area a SAD unit saves buys; see :mod:`.dataflow`). ``capture`` is ``dispatch`` (fake
    tensors: nothing is computed), ``real`` or ``jit`` (see :mod:`.capture`); ``training`` counts a training
    step (forward, backward, and ``optimizer``'s update, ``sgd``/``adam``/None); ``handles={op: fn}`` adds or overrides
    counting handles for this call only. ``model`` may also be a ``torch.compile``-d module or a
    ``torch.export`` program (and, with ``trust``, a ``.pt2`` file).
    """
    if optimizer is not None and optimizer not in OPTIMIZERS:
        raise AdderconvError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if engine not in ENGINES:
        raise AdderconvError(f"unknown energy engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine != "arithmetic":
        from .dataflow import check_engine

        check_engine(accelerator, training=training)      # before any counting: bad input fails fast
    prices = load_table(table)
    if energy_scale != 1.0:
        prices = prices.scaled(energy_scale)
    how = {"capture": capture, "training": training, "optimizer": optimizer, "handles": handles}
    notes: tuple[str, ...] = ()
    module: nn.Module | None = None
    if isinstance(model, (nn.Module, torch.export.ExportedProgram)):
        name = type(model).__name__
        input_shape = input_shape or program_shape(model)
        if input_shape is None:
            raise AdderconvError(f"an input shape is needed to count {name}; pass `input_shape`, e.g. 1,3,224,224")
        counts = count_model(model, tuple(input_shape), **how)
        module = model.module() if isinstance(model, torch.export.ExportedProgram) else model
    else:
        name = str(model)
        if model_kind(name) is ModelKind.ONNX:
            from .onnx_frontend import count_onnx

            if training or capture != "dispatch":
                raise AdderconvError(f"{name}: an ONNX graph is counted as it is (inference only, its own front "
                                     f"end); training counts and `capture` need a PyTorch model")

            counts = count_onnx(Path(name), input_shape)
        else:
            input_shape = input_shape or default_shape(name, arch)
            opened = open_model(name, arch=arch, trust=trust)
            notes = tuple(opened.notes)
            input_shape = input_shape or program_shape(opened.model)
            if input_shape is None:
                raise AdderconvError(f"{name}: no default input shape for this model; pass `input_shape`, "
                                     f"e.g. 1,3,224,224")
            counts = count_model(opened.model, tuple(input_shape), **how)
            module = opened.model
    report = price(counts, precision=precision, table=prices, layer_precision=layer_precision, memory=memory,
                   model=name, input_shape=tuple(input_shape) if input_shape else None, pricing=pricing,
                   accumulator=accumulator)
    if notes:
        report = dataclasses.replace(report, source_notes=notes)
    if counts.frontend == "onnx":      # BatchNorm as the graph holds it: counted, or folded by the exporter
        from .onnx_frontend import norm_convention

        report = dataclasses.replace(report, conventions=tuple(
            norm_convention(counts) if c.startswith("BatchNorm") else c for c in report.conventions))
    if engine != "arithmetic":
        from .dataflow import with_dataflow

        if module is None:
            raise AdderconvError(f"{name}: `engine` zigzag builds its workload from a PyTorch model's layers; "
                                 f"count the model itself (zoo name or model file), not its ONNX export")
        report = with_dataflow(report, module, tuple(input_shape), accelerator=accelerator, table=prices,
                               same_area=same_area)
    return report
