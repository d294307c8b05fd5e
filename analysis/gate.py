"""The CI gate: compare a report with a baseline JSON and say what grew beyond the allowed increase.

>>> base = {"schema": "adderconv.energy/1", "totals": {"mul": 100, "add": 100, "energy_pj": 10.0}, "layers": []}
>>> now = {"schema": "adderconv.energy/1", "totals": {"mul": 102, "add": 100, "energy_pj": 10.0}, "layers": []}
>>> [row.metric for row in compare_to_baseline(now, base, 0.01).regressions]
['mul']
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adderconv.errors import AdderconvError

from .export import SCHEMA

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
    """'1%' -> 0.01, '0.5' (percent) -> 0.005."""
    s = text.strip().rstrip("%").strip()
    try:
        value = float(s) / 100
    except ValueError:
        raise AdderconvError(f"--max-increase must be a percentage like 1% or 0.5%, got {text!r}") from None
    if value < 0:
        raise AdderconvError(f"--max-increase must not be negative, got {text!r}")
    return value


def load_baseline(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise AdderconvError(f"cannot read baseline {path}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise AdderconvError(f"baseline {path} is not JSON ({e})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("totals"), dict):
        raise AdderconvError(f"baseline {path}: expected a report written by 'adderconv energy --json' "
                             f"(schema {SCHEMA!r}), got schema {data.get('schema') if isinstance(data, dict) else None!r}")
    return data


def _grew(base: float, cur: float, limit: float) -> bool:
    return cur > base * (1 + limit) + 1e-9 * max(1.0, abs(base))


def compare_to_baseline(current: dict[str, Any], baseline: dict[str, Any], max_increase: float) -> GateResult:
    """Compare two ``adderconv.energy/1`` dicts; a total above ``baseline * (1 + max_increase)`` regresses."""
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
