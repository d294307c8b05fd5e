"""The CI gate: compare a report with a baseline JSON and say what grew beyond the allowed increase.

The gate never passes bad input: the limit and the baseline are validated before any work (a finite,
non-negative limit; a baseline of schema ``adderconv.energy/1`` or ``/2`` whose totals and layers hold finite
numbers), and a baseline of a training step is never compared with an inference count (or back).

>>> base = {"schema": "adderconv.energy/1", "totals": {"mul": 100, "add": 100, "energy_pj": 10.0}, "layers": []}
>>> now = {"schema": "adderconv.energy/1", "totals": {"mul": 102, "add": 100, "energy_pj": 10.0}, "layers": []}
>>> [row.metric for row in compare_to_baseline(now, base, 0.01).regressions]
['mul']
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adderconv.errors import AdderconvError

from .export import SCHEMAS

__all__ = ["GateRow", "GateResult", "compare_to_baseline", "load_baseline", "parse_increase"]

METRICS = ("mul", "add", "energy_pj", "memory_pj")


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
    """'1%' -> 0.01, '0.5' (percent) -> 0.005; NaN, infinity and negative limits are refused."""
    s = str(text).strip().rstrip("%").strip()
    try:
        value = float(s) / 100
    except ValueError:
        raise AdderconvError(f"--max-increase must be a percentage like 1% or 0.5%, got {text!r}") from None
    if not math.isfinite(value):
        raise AdderconvError(f"--max-increase must be a finite percentage, got {text!r}")
    if value < 0:
        raise AdderconvError(f"--max-increase must not be negative, got {text!r}")
    return value


def _finite(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise AdderconvError(f"{where} must be a finite non-negative number, got {value!r}")
    return float(value)


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
    for m in METRICS:
        if m in data["totals"]:
            _finite(data["totals"][m], f"{where}: totals.{m}")
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


def compare_to_baseline(current: dict[str, Any], baseline: dict[str, Any], max_increase: float) -> GateResult:
    """Compare two report dicts (``adderconv.energy/1`` or ``/2``); a total above ``baseline * (1 +
    max_increase)`` regresses. A training-step report and an inference report are not comparable."""
    mode = {True: "a training step", False: "inference"}
    if bool(current.get("training", False)) != bool(baseline.get("training", False)):
        raise AdderconvError(f"the baseline counts {mode[bool(baseline.get('training', False))]}, this run counts "
                             f"{mode[bool(current.get('training', False))]}: use a baseline of the same kind "
                             f"(--training on both or neither)")
    rows = [GateRow("total", m, float(baseline["totals"].get(m, 0)), float(current["totals"].get(m, 0)))
            for m in METRICS if m in baseline["totals"] or m in current["totals"]]
    regressions = [r for r in rows if _grew(r.baseline, r.current, max_increase)]
    base_layers = {le["name"]: le for le in baseline.get("layers", [])}
    grown = []
    for le in current.get("layers", []):
        b = base_layers.get(le["name"], {}).get("energy_pj", 0.0)
        if _grew(b, le["energy_pj"], max_increase):
            grown.append(GateRow(le["name"] or "(model)", "energy_pj", b, le["energy_pj"]))
    grown.sort(key=lambda r: -(r.current - r.baseline))
    return GateResult(max_increase, rows, regressions, grown)
