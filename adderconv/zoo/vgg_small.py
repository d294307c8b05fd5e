"""VGG-small for CIFAR (the network of LQ-Nets and the AdderNet CIFAR table)."""
from __future__ import annotations

from torch import nn

from ..layers import AdderConv2d
from .registry import register


def vgg_small(num_classes: int = 10, adder: bool = False) -> nn.Sequential:
    """Six 3x3 conv-BN-ReLU layers (128,128,256,256,512,512) with a max-pool after every second, then fc.

    The first convolution and the classifier stay multiplicative in the adder version.
    """
    conv = AdderConv2d if adder else nn.Conv2d
    layers: list[nn.Module] = []
    inplanes = 3
    for i, planes in enumerate((128, 128, 256, 256, 512, 512)):
        layer = nn.Conv2d if i == 0 else conv
        layers += [layer(inplanes, planes, 3, padding=1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(inplace=True)]
        if i % 2:
            layers.append(nn.MaxPool2d(2))
        inplanes = planes
    layers += [nn.Flatten(), nn.Linear(512 * 4 * 4, num_classes)]
    return nn.Sequential(*layers)


register("vgg_small", (1, 3, 32, 32), "VGG-small CNN for CIFAR")(lambda **kw: vgg_small(**kw))
register("vgg_small_adder", (1, 3, 32, 32), "VGG-small AdderNet for CIFAR")(lambda **kw: vgg_small(adder=True, **kw))
