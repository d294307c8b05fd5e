"""Operation counting, energy pricing, reports and the CI gate (installed as adderconv.analysis).

Counts are facts (:mod:`.counts`, :mod:`.handles`, :mod:`.capture`, :mod:`.onnx_frontend`), energy is a
price list applied to them (:mod:`.tables`, :mod:`.energy`), reports are views (:mod:`.render`,
:mod:`.export`); :mod:`.gate` compares a report with a baseline for CI.

>>> report = analyze("resnet20_adder", precision="int8")
>>> report.totals.mul, report.totals.add > 80_000_000
(643786, True)
"""
from __future__ import annotations

from .api import analyze, count_model
from .capture import count_ops
from .counts import KINDS, LayerCounts, ModelCounts, OpCount, Tally
from .energy import CONVENTIONS, EnergyReport, LayerEnergy, Totals, price
from .render import render_comparison, render_report
from .tables import PRECISIONS, PriceTable, load_table

__all__ = [
    "analyze", "count_model", "count_ops", "KINDS", "LayerCounts", "ModelCounts", "OpCount", "Tally",
    "CONVENTIONS", "EnergyReport", "LayerEnergy", "Totals", "price", "render_comparison", "render_report",
    "PRECISIONS", "PriceTable", "load_table",
]
