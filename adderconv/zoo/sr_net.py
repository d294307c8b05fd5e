"""A small VDSR-style super-resolution net (AdderSR's setting, scaled down).

Input: a bicubically upscaled luminance image; output: the same image sharpened (global residual).
Head and tail convolutions stay multiplicative; the body is AdderSR blocks (or their CNN twins).
"""
from __future__ import annotations

from torch import Tensor, nn

from ..layers import AdderConv2d
from ..sr import AdderSRBlock
from .registry import register


class SRNet(nn.Module):
    def __init__(self, channels: int = 32, blocks: int = 4, in_channels: int = 1, adder: bool = False,
                 shortcut: bool = True, power: bool = True) -> None:
        super().__init__()
        self.head = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        layer = AdderConv2d if adder else nn.Conv2d
        self.body = nn.Sequential(*[AdderSRBlock(channels, 3, shortcut=shortcut, power=power and adder, layer=layer)
                                    for _ in range(blocks)])
        self.tail = nn.Conv2d(channels, in_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.tail(self.body(self.relu(self.head(x))))


register("sr_vdsr", (1, 1, 48, 48), "small VDSR-style SR CNN (32 ch, 4 blocks)")(lambda **kw: SRNet(**kw))
register("sr_vdsr_adder", (1, 1, 48, 48), "small AdderSR net (self-shortcut + power activation)")(
    lambda **kw: SRNet(adder=True, **kw))
