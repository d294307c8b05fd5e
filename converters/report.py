"""The conversion report: what was converted, what was kept and why, and the recipe that replays it.

The recipe is JSON stored in a saved file's metadata ("adderconv.recipe"); :func:`apply_recipe` rebuilds the
converted structure on a fresh original architecture so the saved state dict loads into it.

>>> r = ConversionReport([LayerRecord("conv1", "Conv2d", False, "kept: first multiplicative layer (keep_first)")])
>>> r.kept[0].name
'conv1'
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

__all__ = ["LayerRecord", "ConversionReport", "RECIPE_FORMAT", "REPORT_ATTR", "conversion_report", "kept_energy_hint"]

RECIPE_FORMAT = "adderconv.recipe/1"
#: Both conversion strategies return the converted module with its report under this attribute.
REPORT_ATTR = "adderconv_report"


@dataclass
class LayerRecord:
    """One multiplicative layer and its fate. ``aliases``: other names of a shared module."""

    name: str
    type_name: str
    converted: bool
    reason: str
    new_type: str = ""
    bn_inserted: bool = False
    shortcut: bool = False
    power: bool = False
    index: int = -1
    aliases: tuple[str, ...] = ()
    calls: int = 0                       # times it ran in the trace (a shared module runs more than once)


@dataclass
class ConversionReport:
    """Facts about one conversion; renderers (the CLI's rich table) format it."""

    layers: list[LayerRecord] = field(default_factory=list)
    functional: list[str] = field(default_factory=list)    # multiplicative ops no module swap can reach
    traced: bool = False
    policy_json: str = "{}"
    warnings: list[str] = field(default_factory=list)
    previous: list[dict] = field(default_factory=list)     # recipe entries of an earlier conversion of the model

    @property
    def converted(self) -> list[LayerRecord]:
        return [r for r in self.layers if r.converted]

    @property
    def kept(self) -> list[LayerRecord]:
        return [r for r in self.layers if not r.converted]

    def recipe_layers(self) -> list[dict]:
        """Recipe entries, earlier conversions first (converting a converted model again adds to them)."""
        return self.previous + [{"name": r.name, "from": r.type_name, "to": r.new_type, "bn": r.bn_inserted,
                                 "shortcut": r.shortcut, "power": r.power} for r in self.converted]

    def recipe(self) -> str:
        """JSON replayed by :func:`adderconv.converters.apply_recipe`."""
        return json.dumps({"format": RECIPE_FORMAT, "policy": json.loads(self.policy_json),
                           "layers": self.recipe_layers()}, sort_keys=True)

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        lines = [f"converted {len(self.converted)} of {len(self.layers)} layers"
                 f" ({'traced' if self.traced else 'not traced'})"]
        lines += [f"  {r.name:40s} {r.type_name:>8s} -> {r.new_type or '-':12s} {r.reason}" for r in self.layers]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


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


def conversion_report(model: object) -> ConversionReport:
    """The report of a module returned by :func:`~adderconv.converters.convert` or
    :func:`~adderconv.converters.convert_exported` (one result shape for both strategies)."""
    report = getattr(model, REPORT_ATTR, None)
    if not isinstance(report, ConversionReport):
        from adderconv.errors import AdderconvError
        raise AdderconvError(f"{type(model).__name__} was not converted by adderconv (it carries no report)")
    return report
