"""A user mapping extends the converter: any target class with ``from_float`` (and ``norm_type`` for inserted BN)."""
import torch
from torch import nn

import adderconv
from adderconv.converters import convert
from adderconv.converters.blocks import AdderBlock, default_mapping


class HalfAdder(adderconv.AdderConv2d):
    """A user's target: an adder layer whose output is halved, with GroupNorm inserted after it."""

    norm_type = staticmethod(lambda channels, **kw: nn.GroupNorm(1, channels, **kw))

    def forward(self, x):
        return super().forward(x) / 2


def test_a_user_target_class_is_built_through_from_float_and_its_norm_type():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    mapping = {**default_mapping(), nn.Conv2d: HalfAdder}
    out = convert(net, example_inputs=(torch.zeros(1, 3, 12, 12),), mapping=mapping)
    block = out[2]
    assert isinstance(block, AdderBlock) and type(block.adder) is HalfAdder and isinstance(block.bn, nn.GroupNorm)
    x = torch.randn(2, 8, 10, 10)
    ref = adderconv.AdderConv2d.from_conv(net[2])
    torch.testing.assert_close(block.adder(x), ref(x) / 2)
