"""The CI gate: compare a report with a baseline JSON and say what grew beyond the allowed increase.

The gate never passes bad input: the limit and the baseline are validated before any work (a finite,
non-negative limit; a baseline of any schema :data:`SCHEMAS` whose totals and layers hold finite numbers), and
a baseline is compared only with a report of the same kind: the same model, input shape, precision, price list,
operand and accumulator widths, memory level, engine and accelerator, and a training step only with a training
step. It gates on every kind's count, on the energy of whichever engine produced the baseline, and on
operators that could not be counted (a new one, or more calls of one, is a regression: work nobody priced).
Schemas before ``/3`` counted an accumulation as an ``add`` and priced it at the operand precision (the
papers' convention); against them ``add`` is compared as ``add + acc``. From ``/4`` on, the parameter count is
gated too (a model that grew is what a size budget in CI watches), where both reports have it; a ``/4`` run against
an older baseline gates on what both hold. The MACs are not gated apart: they are the ``mul``/``add`` terms of
the ``acc`` counts the gate already compares, and would report one growth twice.

>>> base = {"schema": "adderconv.energy/1", "totals": {"mul": 100, "add": 100, "energy_pj": 10.0}, "layers": []}
>>> now = {"schema": "adderconv.energy/1", "totals": {"mul": 102, "add": 100, "energy_pj": 10.0}, "layers": []}
>>> [row.metric for row in compare_to_baseline(now, base, 0.01).regressions]
['mul']
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adderconv.errors import AdderconvError

from .counts import KINDS
from .schema import SCHEMAS

__all__ = ["GateRow", "GateResult", "compare_to_baseline", "load_baseline", "parse_increase"]

ENERGIES = ("energy_pj", "memory_pj", "dataflow_pj")
#: Figures a report of a later schema holds: gated only when both reports have them.
ADDED = ("params",)
METRICS = (*KINDS, *ENERGIES, *ADDED, "unsupported")
#: Schemas that count accumulations as their own kind (``acc``); the ones before counted them as ``add``.
_WITH_ACC = tuple(s for s in SCHEMAS if s not in ("adderconv.energy/1", "adderconv.energy/2"))
#: What must match for two reports to be comparable, with its value in a report that does not record it.
SAME = (("model", None), ("input_shape", None), ("precision", None), ("table", None), ("memory", None),
        ("widths", None), ("engine", "arithmetic"), ("accelerator", None))
_PERCENT = re.compile(r"[0-9]+(\.[0-9]+)?%?", re.ASCII)


@dataclass(frozen=True)
class GateRow:
    scope: str            # "total" or a layer name
    metric: str
    baseline: float
    current: float

    @property
    def change(self) -> float:
        return (self.current - self.baseline) / self.baseline if self.baseline else float("inf")


@dataclass(frozen=True)
class GateResult:
    max_increase: float
    rows: list[GateRow]          # every total metric
    regressions: list[GateRow]   # totals above the limit
    grown_layers: list[GateRow]  # per-layer energy above the limit (context for the failure)

    @property
    def ok(self) -> bool:
        return not self.regressions


def parse_increase(text: str) -> float:
    """'1%' -> 0.01, '0.5' (percent) -> 0.005: plain ASCII digits, an optional fraction and one optional '%'
    (no signs, exponents, underscores, NaN or other scripts' digits)."""
    s = str(text).strip()
    if not _PERCENT.fullmatch(s):
        raise AdderconvError(f"`max_increase` must be a percentage like 1% or 0.5%, got {text!r}")
    return float(s.rstrip("%")) / 100


def _finite(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AdderconvError(f"{where} must be a finite non-negative number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:            # an integer too large for a float (hundreds of digits)
        raise AdderconvError(f"{where} is too large a number ({len(str(value))} digits)") from None
    if not math.isfinite(number) or number < 0:
        raise AdderconvError(f"{where} must be a finite non-negative number, got {value!r}")
    return number


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def load_baseline(path: str | Path) -> dict[str, Any]:
    """Read and validate a baseline report; every problem is one :class:`AdderconvError` line."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_reject_constant)
    except OSError as e:
        raise AdderconvError(f"cannot read baseline {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise AdderconvError(f"baseline {path} is not UTF-8 text") from None
    except ValueError as e:          # json.JSONDecodeError and NaN/Infinity constants
        raise AdderconvError(f"baseline {path} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("schema") not in SCHEMAS or not isinstance(data.get("totals"), dict):
        raise AdderconvError(f"baseline {path}: expected a report written by 'adderconv energy --json' "
                             f"(schema {' or '.join(map(repr, SCHEMAS))}), got schema "
                             f"{data.get('schema') if isinstance(data, dict) else None!r}")
    where = f"baseline {path}"
    for m in ("mul", "add", "energy_pj"):
        if m not in data["totals"]:
            raise AdderconvError(f"{where}: totals has no {m!r}")
    for m in (*KINDS, "energy_pj", "memory_pj"):
        if m in data["totals"]:
            _finite(data["totals"][m], f"{where}: totals.{m}")
    for m in (*ADDED, "macs"):
        if m in data:
            _finite(data[m], f"{where}: {m}")
    unsupported = data.get("unsupported", {})
    if not isinstance(unsupported, dict):
        raise AdderconvError(f"{where}: 'unsupported' must be an object of operator -> calls")
    for op, n in unsupported.items():
        _finite(n, f"{where}: unsupported[{op!r}]")
    flow = data.get("dataflow")
    if flow is not None:
        if not isinstance(flow, dict):
            raise AdderconvError(f"{where}: 'dataflow' must be an object or null")
        _finite(flow.get("total_pj"), f"{where}: dataflow.total_pj")
    layers = data.get("layers", [])
    if not isinstance(layers, list):
        raise AdderconvError(f"{where}: 'layers' must be a list, got {type(layers).__name__}")
    for i, le in enumerate(layers):
        if not isinstance(le, dict) or not isinstance(le.get("name"), str):
            raise AdderconvError(f"{where}: layers[{i}] must be an object with a string 'name'")
        _finite(le.get("energy_pj"), f"{where}: layers[{i}].energy_pj")
    if not isinstance(data.get("training", False), bool):
        raise AdderconvError(f"{where}: 'training' must be true or false")
    return data


def _grew(base: float, cur: float, limit: float) -> bool:
    return cur > base * (1 + limit) + 1e-9 * max(1.0, abs(base))


def _same(d: dict[str, Any], key: str, default: Any) -> Any:
    if key == "model":
        return Path(str(d.get("model"))).name        # the same file from another folder is the same model
    if key == "widths":                              # (operand, accumulator) pairs; before /3 they were equal
        return sorted({(le.get("precision"), le.get("accumulator", le.get("precision")))
                       for le in d.get("layers", []) if isinstance(le, dict)})
    return d.get(key, default)


def _check_comparable(current: dict[str, Any], baseline: dict[str, Any]) -> None:
    mode = {True: "a training step", False: "inference"}
    if bool(current.get("training", False)) != bool(baseline.get("training", False)):
        raise AdderconvError(f"the baseline counts {mode[bool(baseline.get('training', False))]}, this run counts "
                             f"{mode[bool(current.get('training', False))]}: use a baseline of the same kind "
                             f"(training on both or neither)")
    for key, default in SAME:
        a, b = _same(baseline, key, default), _same(current, key, default)
        if a != b:
            raise AdderconvError(f"the baseline's {key.replace('_', ' ')} is {a!r}, this run's is {b!r}: a gate "
                                 f"compares like with like; regenerate the baseline or match the setting")


def _metrics(d: dict[str, Any], legacy: bool) -> dict[str, float]:
    t = d["totals"]
    out = {k: float(t.get(k, 0)) for k in KINDS}
    if legacy:                               # an older schema's add was add + acc, all at one precision
        out["add"] += out.pop("acc")
    out["energy_pj"] = float(t.get("energy_pj", 0))
    if "memory_pj" in t:
        out["memory_pj"] = float(t["memory_pj"])
    if d.get("dataflow"):
        out["dataflow_pj"] = float(d["dataflow"]["total_pj"])
    out["unsupported"] = float(sum((d.get("unsupported") or {}).values()))
    out.update({m: float(d[m]) for m in ADDED if m in d})
    return out


def compare_to_baseline(current: dict[str, Any], baseline: dict[str, Any], max_increase: float) -> GateResult:
    """Compare two report dicts (any of :data:`SCHEMAS`); a total above ``baseline * (1 + max_increase)``
    regresses, and so does an operator type without a handle that the baseline did not have. Reports of
    another model, shape, precision, convention or engine (or training vs inference) are refused."""
    _check_comparable(current, baseline)
    legacy = not (current.get("schema") in _WITH_ACC and baseline.get("schema") in _WITH_ACC)
    base, cur = _metrics(baseline, legacy), _metrics(current, legacy)
    for m in ADDED:                          # a figure one side lacks is not compared (nor a regression)
        if m not in base or m not in cur:
            base.pop(m, None)
            cur.pop(m, None)
    rows = [GateRow("total", m, base.get(m, 0.0), cur.get(m, 0.0)) for m in METRICS
            if base.get(m) or cur.get(m) or m in ("mul", "add", "energy_pj")]
    regressions = [r for r in rows if _grew(r.baseline, r.current, max_increase)]
    known = set(baseline.get("unsupported") or {})
    regressions += [GateRow("unsupported", op, 0.0, float(n)) for op, n in (current.get("unsupported") or {}).items()
                    if op not in known]
    base_layers = {le["name"]: le for le in baseline.get("layers", [])}
    grown = []
    for le in current.get("layers", []):
        b = base_layers.get(le["name"], {}).get("energy_pj", 0.0)
        if _grew(b, le["energy_pj"], max_increase):
            grown.append(GateRow(le["name"] or "(model)", "energy_pj", b, le["energy_pj"]))
    grown.sort(key=lambda r: -(r.current - r.baseline))
    return GateResult(max_increase, rows, regressions, grown)
