"""The conversion report's views for the converter: which option would convert the layers that were kept.

The report itself (:class:`ConversionReport`, :class:`LayerRecord`, the recipe) is ground-floor data in
:mod:`adderconv.conversion`, re-exported here under its old names.
"""
from __future__ import annotations

from collections.abc import Mapping

from adderconv.conversion import (RECIPE_FORMAT, REPORT_ATTR, ConversionReport, LayerRecord,
                                  conversion_report)

__all__ = ["LayerRecord", "ConversionReport", "RECIPE_FORMAT", "REPORT_ATTR", "conversion_report", "kept_energy_hint"]

# What converts a layer kept for each reason: the policy field and the convert command's flag.
_OPTIONS = (("Linear", "convert_linear=True (--linear)"), ("keep_first", "keep_first=False (--convert-first)"),
            ("keep_last", "keep_last=False (--convert-last)"), ("channels", "min_channels=0 (--min-channels 0)"),
            ("depthwise", "skip_depthwise=False (no --skip-depthwise)"), ("type", "types (--type)"),
            ("include", "include (--include)"), ("exclude", "exclude (--exclude)"))


def kept_energy_hint(report: ConversionReport, energy_by_layer: Mapping[str, float],
                     threshold: float = 0.5) -> str | None:
    """A note when the kept multiplicative layers hold more than ``threshold`` of the converted model's energy,
    suggesting the option that would convert them too (None otherwise): a suggestion, not the settings in use.

    >>> r = ConversionReport([LayerRecord("fc", "Linear", False, "kept: Linear (convert_linear is off)"),
    ...                       LayerRecord("conv", "Conv2d", True, "converted")])
    >>> for part in kept_energy_hint(r, {"fc": 90.0, "conv": 10.0}).split("; "):
    ...     print(part)
    kept layers hold 90% of the energy after conversion
    to convert them too: 1 Linear (convert_linear=True (--linear))
    """
    total = sum(energy_by_layer.values())
    groups: dict[str, list[LayerRecord]] = {}
    for r in report.kept:
        option = next((opt for key, opt in _OPTIONS if key in r.reason), None)
        if option is not None and energy_by_layer.get(r.name, 0.0) > 0:
            groups.setdefault(option, []).append(r)
    kept = sum(energy_by_layer.get(r.name, 0.0) for rs in groups.values() for r in rs)
    if total <= 0 or kept / total <= threshold:
        return None
    parts = [f"{len(rs)} {'/'.join(sorted({r.type_name for r in rs}))} ({option})"
             for option, rs in sorted(groups.items(), key=lambda kv: -sum(energy_by_layer[r.name] for r in kv[1]))]
    return (f"kept layers hold {kept / total:.0%} of the energy after conversion; to convert them too: "
            + ", ".join(parts))
