"""LeNet-5 with BatchNorm (AdderNet's MNIST network) for 1x32x32 inputs."""
from __future__ import annotations

from torch import nn

from ..layers import AdderConv2d, AdderLinear
from .registry import register


def lenet5_bn(num_classes: int = 10, in_channels: int = 1, adder: bool = False) -> nn.Sequential:
    """conv5-BN-ReLU-pool, conv5-BN-ReLU-pool, fc120-BN-ReLU, fc84-BN-ReLU, fc(num_classes).

    The adder version keeps the first convolution and the classifier multiplicative, as AdderNet does.
    """
    conv = AdderConv2d if adder else nn.Conv2d
    linear = AdderLinear if adder else nn.Linear
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, bias=False), nn.BatchNorm2d(6), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        conv(6, 16, 5, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Flatten(),
        linear(16 * 5 * 5, 120, bias=False), nn.BatchNorm1d(120), nn.ReLU(inplace=True),
        linear(120, 84, bias=False), nn.BatchNorm1d(84), nn.ReLU(inplace=True),
        nn.Linear(84, num_classes),
    )


register("lenet5_bn", (1, 1, 32, 32), "LeNet-5-BN CNN (MNIST/digits at 32x32)")(lambda **kw: lenet5_bn(**kw))
register("lenet5_bn_adder", (1, 1, 32, 32), "LeNet-5-BN AdderNet")(lambda **kw: lenet5_bn(adder=True, **kw))
