"""Operation counting, energy pricing, reports and the CI gate (installed as adderconv.analysis).

Counts are facts (:mod:`.counts`, :mod:`.registry` + :mod:`.handles`, :mod:`.capture`, :mod:`.onnx_frontend`),
energy is a price list applied to them (:mod:`.tables`, :mod:`.energy`), reports are views (:mod:`.render`,
:mod:`.export`); :mod:`.gate` compares a report with a baseline for CI. The counting vocabulary and the handle
registry live on the ground floor (:mod:`adderconv.counting`, :mod:`adderconv.op_registry`; :mod:`.counts` and
:mod:`.registry` re-export the same objects), so the ops register their handles without importing this package;
a custom op elsewhere can ``from adderconv.analysis import register`` as well. Names are imported lazily.

>>> from adderconv.analysis import analyze
>>> report = analyze("resnet20_adder", precision="int8")
>>> report.totals.mul, report.totals.add > 80_000_000
(643786, True)
"""
from __future__ import annotations

if __name__ != "adderconv.analysis":   # a checkout's top level is on sys.path: refuse to become a second copy
    raise ImportError(f"import adderconv.analysis, not {__name__}: a second copy would have its own registries "
                      f"(isinstance and handle look-ups fail across copies)")

from adderconv.lazy import lazy_getattr

# name -> submodule defining it (imported on first use)
_LAZY = {
    "analyze": "api", "count_model": "api", "count_ops": "capture", "KINDS": "counts", "LayerCounts": "counts",
    "ModelCounts": "counts", "OpCount": "counts", "Tally": "counts", "CONVENTIONS": "energy",
    "EnergyReport": "energy", "LayerEnergy": "energy", "ModuleEnergy": "energy", "Totals": "energy",
    "price": "energy", "render_comparison": "render", "render_report": "render", "render_tree": "render",
    "PRECISIONS": "tables", "PriceTable": "tables",
    "load_table": "tables", "register": "registry", "ignore": "registry", "Handle": "registry",
    "optimizer_tally": "training", "compare_energy": "compare",
}


__getattr__ = lazy_getattr(globals(), _LAZY)


__all__ = list(_LAZY)
