"""Which multiplicative layers become adder layers: a policy and one pure decision function.

The decision sees only a framework-neutral :class:`LayerInfo` (name, kind, channels, groups, kernel,
execution index, first/last flags), so the PyTorch module swap, the ATen graph rewrite and the ONNX rewriter
all decide the same way.

>>> p = Policy(min_channels=8)
>>> decide(LayerInfo("layer1.0.conv1", "conv", 16, 16, kernel_size=(3, 3), index=1), p)
Decision(convert=True, reason='converted')
>>> decide(LayerInfo("conv1", "conv", 3, 16, kernel_size=(3, 3), index=0, is_first=True), p)
Decision(convert=False, reason='kept: first multiplicative layer (keep_first)')
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal, NamedTuple

from adderconv.errors import AdderconvError

__all__ = ["LayerInfo", "Policy", "Decision", "decide", "decide_all", "WEIGHT_INITS"]

Kind = Literal["conv", "linear"]
#: How a converted layer's weights start: the conv's weights as they are, the same weights scaled to unit
#: standard deviation per layer (the scale of AdderNet's N(0, 1) init), or a fresh N(0, 1) draw.
from adderconv.choices import WEIGHT_INITS  # noqa: E402  (said once, for the CLI too)


@dataclass(frozen=True)
class LayerInfo:
    """One multiplicative layer as every front end (module tree, ATen graph, ONNX graph) describes it.

    ``type_name`` is the layer's type as the user wrote it: a module class name (``"Conv2d"``,
    ``"Linear"``), ``"functional"`` for an ``F.conv2d`` call, or an ONNX op type. ``index`` is the order of
    first execution among multiplicative layers (-1: never executed in the trace). ``is_first``/``is_last``:
    no multiplicative layer before / after it on any path of the traced graph.
    """

    name: str
    kind: Kind
    in_channels: int
    out_channels: int
    groups: int = 1
    kernel_size: tuple[int, ...] = ()
    index: int = -1
    is_first: bool = False
    is_last: bool = False
    type_name: str = ""

    @property
    def depthwise(self) -> bool:
        return self.kind == "conv" and self.groups > 1 and self.groups == self.in_channels


class Decision(NamedTuple):
    convert: bool
    reason: str


@dataclass(frozen=True)
class Policy:
    """What to convert. The defaults follow the AdderNet papers: every convolution becomes an adder layer
    except the first and the last multiplicative layer (stem and classifier), ``nn.Linear`` stays, and a
    BatchNorm is inserted after any adder layer whose output is not normalised.

    - ``include`` / ``exclude``: fnmatch globs over layer names (``"layer3.*"``); an empty include means all.
      Exclude wins over include.
    - ``types``: restrict to these type names (``("Conv2d",)``); empty means every conv (and Linear when
      ``convert_linear``).
    - ``min_channels``: keep layers with fewer input or output channels (per the whole layer, not per group).
    - ``skip_depthwise``: keep depthwise convolutions (groups == in_channels > 1); their cost is small.
    - ``insert_bn``: add BatchNorm after converted layers that lack it (training stalls without it).
    - ``shortcut`` / ``power``: the AdderSR preset (:meth:`addersr`): ``Y = adder(X) + X`` where the shapes
      match, followed by a learnable power activation.
    - ``weight_init``: one of :data:`WEIGHT_INITS` (default ``"copy"``: the conv's weights are copied).

    >>> Policy.addersr().shortcut
    True
    """

    keep_first: bool = True
    keep_last: bool = True
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    min_channels: int = 0
    convert_linear: bool = False
    skip_depthwise: bool = False
    insert_bn: bool = True
    shortcut: bool = False
    power: bool = False
    weight_init: str = "copy"

    def __post_init__(self) -> None:
        for name in ("include", "exclude", "types"):
            value = getattr(self, name)
            if isinstance(value, str):   # a single glob given as a string: accept it, keep the field a tuple
                object.__setattr__(self, name, (value,))
            else:
                object.__setattr__(self, name, tuple(value))
        if self.min_channels < 0:
            raise AdderconvError(f"min_channels must be >= 0, got {self.min_channels}")
        if self.weight_init not in WEIGHT_INITS:
            raise AdderconvError(f"weight_init must be one of {WEIGHT_INITS}, got {self.weight_init!r}")

    @classmethod
    def addersr(cls, **overrides) -> "Policy":
        """AdderSR (CVPR 2021): self-shortcut where shapes match, power activation after, BN inserted."""
        return cls(**{"shortcut": True, "power": True, "insert_bn": True, **overrides})

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Policy":
        from adderconv.untrusted import json_loads

        d = json_loads(text, "a conversion policy")
        if not isinstance(d, dict):
            raise AdderconvError(f"a conversion policy must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def decide(layer: LayerInfo, policy: Policy) -> Decision:
    """(convert?, reason) for one layer; pure: the same inputs always give the same answer."""
    if layer.kind == "linear" and not policy.convert_linear:
        return Decision(False, "kept: Linear (convert_linear is off)")
    if policy.types and layer.type_name not in policy.types:
        return Decision(False, f"kept: type {layer.type_name or layer.kind} not in types {list(policy.types)}")
    if policy.exclude and any(fnmatchcase(layer.name, g) for g in policy.exclude):
        return Decision(False, "kept: matches exclude")
    if policy.include and not any(fnmatchcase(layer.name, g) for g in policy.include):
        return Decision(False, "kept: matches no include")
    if policy.keep_first and layer.is_first:
        return Decision(False, "kept: first multiplicative layer (keep_first)")
    if policy.keep_last and layer.is_last:
        return Decision(False, "kept: last multiplicative layer (keep_last)")
    if min(layer.in_channels, layer.out_channels) < policy.min_channels:
        return Decision(False, f"kept: fewer than {policy.min_channels} channels")
    if policy.skip_depthwise and layer.depthwise:
        return Decision(False, "kept: depthwise (skip_depthwise)")
    return Decision(True, "converted")


def decide_all(layers: list[LayerInfo], policy: Policy) -> dict[str, Decision]:
    """Decisions by layer name. Raises if there is nothing to convert, or the policy matches nothing."""
    if not layers:
        raise AdderconvError("the model has no convolutions (or Linear layers) to convert")
    decisions = {layer.name: decide(layer, policy) for layer in layers}
    if not any(d.convert for d in decisions.values()):
        reasons = sorted({d.reason for d in decisions.values()})
        raise AdderconvError(f"the policy converts none of the model's {len(layers)} multiplicative layers "
                             f"({'; '.join(reasons)})")
    return decisions
