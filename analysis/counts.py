"""The counting vocabulary as the analysis names it: :mod:`adderconv.counting` (the ground floor), re-exported.

These are the same objects (``adderconv.analysis.counts.Tally is adderconv.counting.Tally``): the ops beneath
the analysis count with them without importing it.

>>> from adderconv.counting import Tally as ground
>>> Tally is ground
True
"""
from __future__ import annotations

from adderconv.counting import KINDS, LayerCounts, ModelCounts, OpCount, Tally, additions

__all__ = ["KINDS", "additions", "Tally", "OpCount", "LayerCounts", "ModelCounts"]
