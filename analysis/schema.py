"""The version of the energy report's JSON: what :mod:`.export` writes and every version :mod:`.gate` reads.

Its own module because both sides need it and neither may import the other for it (the gate's result is what the
Markdown view formats, so :mod:`.export` imports :mod:`.gate`, never the reverse).

>>> SCHEMA in SCHEMAS
True
"""
from __future__ import annotations

__all__ = ["SCHEMA", "SCHEMAS"]

#: /2 adds how the ops were captured, training steps (phases per layer and in total, the optimizer) and where
#: each layer's precision came from. /3 counts accumulations as their own kind (``acc``; before, an ``add``),
#: prices them at the accumulator's width (``pricing``, ``accumulator``, each layer's ``accumulator``), adds
#: processing elements and their area (``units``, each layer's ``unit``/``unit_um2``) and the dataflow engine's
#: result (``engine``, ``dataflow``). /4 adds, and changes nothing else: the parameter count (``params``,
#: ``trainable_params``), the MACs (``macs``) and the module tree (``modules``: every module path with its subtree's
#: counts, MACs, parameters and energy). The gate reads every version.
SCHEMA = "adderconv.energy/4"
SCHEMAS = ("adderconv.energy/1", "adderconv.energy/2", "adderconv.energy/3", SCHEMA)
