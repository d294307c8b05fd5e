"""What a conversion did: each multiplicative layer's fate, and the recipe that replays it.

Pure data on the ground floor: :mod:`adderconv.recipe` attaches a :class:`ConversionReport` to a model it rebuilds
from a file, without importing the converter; :mod:`adderconv.converters.report` re-exports these names and adds
the hint views. The recipe is JSON stored in a saved file's metadata ("adderconv.recipe").

>>> r = ConversionReport([LayerRecord("conv1", "Conv2d", False, "kept: first multiplicative layer (keep_first)")])
>>> r.kept[0].name
'conv1'
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .errors import AdderconvError

__all__ = ["LayerRecord", "ConversionReport", "RECIPE_FORMAT", "REPORT_ATTR", "conversion_report"]

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


def conversion_report(model: object) -> ConversionReport:
    """The report of a module returned by :func:`~adderconv.converters.convert` or
    :func:`~adderconv.converters.convert_exported` (one result shape for both strategies)."""
    report = getattr(model, REPORT_ATTR, None)
    if not isinstance(report, ConversionReport):
        raise AdderconvError(f"{type(model).__name__} was not converted by adderconv (it carries no report)")
    return report
