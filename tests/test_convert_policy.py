"""The conversion policy: one pure decision per layer, the same for every front end."""
import pytest

from adderconv.converters.policy import LayerInfo, Policy, decide, decide_all
from adderconv.errors import AdderconvError


def _layers():
    return [
        LayerInfo("stem", "conv", 3, 16, 1, (3, 3), 0, is_first=True, type_name="Conv2d"),
        LayerInfo("layer1.conv", "conv", 16, 32, 1, (3, 3), 1, type_name="Conv2d"),
        LayerInfo("layer1.dw", "conv", 32, 32, 32, (3, 3), 2, type_name="Conv2d"),
        LayerInfo("layer2.seq", "conv", 32, 4, 1, (5,), 3, type_name="Conv1d"),
        LayerInfo("head.hidden", "linear", 64, 64, index=4, type_name="Linear"),
        LayerInfo("head.fc", "linear", 64, 10, index=5, is_last=True, type_name="Linear"),
    ]


def _converted(policy):
    return sorted(n for n, d in decide_all(_layers(), policy).items() if d.convert)


def test_defaults_keep_stem_classifier_and_linear():
    assert _converted(Policy()) == ["layer1.conv", "layer1.dw", "layer2.seq"]
    assert decide(_layers()[0], Policy()).reason.startswith("kept: first")


def test_each_option_changes_exactly_what_it_says():
    assert _converted(Policy(keep_first=False)) == ["layer1.conv", "layer1.dw", "layer2.seq", "stem"]
    assert _converted(Policy(convert_linear=True)) == ["head.hidden", "layer1.conv", "layer1.dw", "layer2.seq"]
    assert _converted(Policy(convert_linear=True, keep_last=False))[0] == "head.fc"
    assert _converted(Policy(include=("layer1.*",))) == ["layer1.conv", "layer1.dw"]
    assert _converted(Policy(exclude="layer1.*")) == ["layer2.seq"]
    assert _converted(Policy(include=("layer*",), exclude=("*.dw",))) == ["layer1.conv", "layer2.seq"]
    assert _converted(Policy(types=("Conv1d",))) == ["layer2.seq"]
    assert _converted(Policy(min_channels=8)) == ["layer1.conv", "layer1.dw"]
    assert _converted(Policy(skip_depthwise=True)) == ["layer1.conv", "layer2.seq"]


def test_grouped_is_not_depthwise():
    grouped = LayerInfo("g", "conv", 32, 32, groups=4)
    assert not grouped.depthwise and LayerInfo("d", "conv", 32, 64, groups=32).depthwise
    assert decide(grouped, Policy(skip_depthwise=True)).convert


def test_policy_matching_nothing_and_empty_model_raise():
    with pytest.raises(AdderconvError, match="converts none"):
        decide_all(_layers(), Policy(include=("nope*",)))
    with pytest.raises(AdderconvError, match="no convolutions"):
        decide_all([], Policy())


def test_policy_round_trips_through_json_and_validates():
    p = Policy.addersr(min_channels=4, include=("body.*",))
    assert Policy.from_json(p.to_json()) == p and p.shortcut and p.power
    with pytest.raises(AdderconvError):
        Policy(weight_init="zeros")
    with pytest.raises(AdderconvError):
        Policy(min_channels=-1)
