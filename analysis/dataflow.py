"""Data movement through an accelerator's memory hierarchy, from a real engine: ZigZag (KU Leuven).

The counts and prices stay ours; ZigZag supplies what arithmetic alone cannot: a searched mapping of each conv,
linear and adder layer onto an accelerator's array and memories, with the energy of every memory level, the
latency in cycles and the utilisation. Each layer's operational unit is priced at its own operation and
widths: a SAD unit (subtract with absolute value, then accumulate) for adder layers, a MAC unit for the layers
that stay multiplicative. ZigZag prices compute as one unit energy x MACs per accelerator, so the compute term
is re-priced per layer after the search (exact: it is separable). The other layers (BatchNorm, ReLU, pooling)
keep their arithmetic energy; their data movement is not modelled, and the report says so.

The same-area comparison goes one step past the papers: a SAD unit is smaller than a MAC unit at the same
widths, so the adder net also runs on an array with as many more units as that area buys.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

from adderconv.errors import AdderconvError

from .energy import EnergyReport
from .tables import PriceTable

if TYPE_CHECKING:
    from .zigzag import DataflowResult

__all__ = ["Dataflow", "check_engine", "with_dataflow", "BITS"]

#: Operand and accumulator widths handed to ZigZag (its memory traffic is counted in bits).
BITS: dict[str, int] = {**{f"int{n}": n for n in range(4, 9)}, "int16": 16, "int32": 32, "fp16": 16, "bf16": 16,
                        "fp32": 32}


@dataclass(frozen=True)
class Dataflow:
    """ZigZag's view of one model on one accelerator, and optionally the same-area variant."""

    accelerator: str
    operand_bits: int
    accumulator_bits: int
    result: DataflowResult
    same_area: DataflowResult | None = None
    array_scale: float = 1.0               # units of the same-area array / the accelerator's own (as rounded)
    notes: tuple[str, ...] = ()


def check_engine(accelerator: str, *, training: bool = False) -> None:
    """Everything the zigzag engine needs, checked before any counting: ZigZag itself and the accelerator."""
    from .zigzag import require_zigzag, resolve_accelerator

    if training:
        raise AdderconvError("the zigzag engine maps inference layers; a training step is counted with the "
                             "arithmetic engine")
    require_zigzag()
    resolve_accelerator(accelerator)


def _unit_pj(table: PriceTable, op: str, precision: str, accumulator: str) -> float:
    """One operation of the layer's unit: the operand part (a multiplication, or for an adder the subtraction
    with its absolute value) at the operand width, and the accumulation at the accumulator's."""
    parts = [table.price(precision, "add" if op == "adder" else "mul"), table.price(accumulator, "acc")]
    if any(p is None for p in parts):
        raise AdderconvError(f"price list {table.name!r} does not price a {op} unit at {precision}/{accumulator}")
    return sum(parts)


def with_dataflow(report: EnergyReport, module: nn.Module, input_shape: tuple[int, ...], *, accelerator: str,
                  table: PriceTable, same_area: bool = False) -> EnergyReport:
    """``report`` with ZigZag's dataflow of ``module`` on ``accelerator`` (see the module docstring)."""
    from .zigzag import layer_specs, run_dataflow

    main = report.main_unit
    if main is None:
        raise AdderconvError(f"{report.model}: no conv, linear or adder layer for a dataflow engine to map")
    specs = layer_specs(module, (1, *input_shape[1:]))
    layers = {le.name: le for le in report.layers}
    missing = [s.name for s in specs if s.name not in layers]
    if missing:
        raise AdderconvError(f"{report.model}: layer {missing[0]!r} has no counts to price its dataflow")
    unit_pj = {s.name: _unit_pj(table, s.op, layers[s.name].precision, layers[s.name].accumulator) for s in specs}
    bits = BITS[main.precision], BITS[main.accumulator]
    notes = ["ZigZag maps the conv, linear and adder layers (batch 1); the other layers keep their arithmetic "
             "energy and their data movement is not modelled"]
    if len({(layers[s.name].precision, layers[s.name].accumulator) for s in specs}) > 1:
        notes.append(f"mixed widths: memory traffic at the main unit's {main.precision}/{main.accumulator}")
    result = run_dataflow(specs, accelerator, unit_pj=unit_pj, operand_bits=bits[0], accumulator_bits=bits[1])
    same, scale = None, 1.0
    if same_area:
        mac = [table.area(main.precision, "mul"), table.area(main.accumulator, "acc")]
        if main.unit != "SAD":
            notes.append("same area: the model's datapath is MAC units; the comparison applies to adder nets")
        elif main.um2 is None or any(a is None for a in mac):
            notes.append(f"same area: price list {table.name!r} lists no area for these units")
        else:
            wanted = sum(a.value for a in mac) / main.um2
            same = run_dataflow(specs, accelerator, unit_pj=unit_pj, operand_bits=bits[0],
                                accumulator_bits=bits[1], array_scale=wanted)
            scale = same.array_scale
            notes.append(f"same area: a {main.label} unit is {wanted:.2f}x smaller than a MAC unit of the same "
                         f"widths; the array gets {scale:.2f}x the units ({'x'.join(map(str, same.array_sizes))}), "
                         f"its memories unchanged")
    notes += [n for n in result.notes if n not in notes]
    flow = Dataflow(str(accelerator), bits[0], bits[1], result, same, scale, tuple(notes))
    return dataclasses.replace(report, engine="zigzag", dataflow=flow)
