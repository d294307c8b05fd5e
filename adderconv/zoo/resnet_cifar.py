"""CIFAR ResNets (He et al. 2016, option B 1x1 downsample) as in the AdderNet reference code.

The stem convolution and the classifier (a 1x1 convolution followed by BatchNorm) stay multiplicative;
every other convolution, the downsampling 1x1s included, becomes an adder layer in the adder version.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..layers import AdderConv2d
from .registry import register


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, conv: type[nn.Module]) -> None:
        super().__init__()
        self.conv1 = conv(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(conv(inplanes, planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10, adder: bool = False) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        blocks = (depth - 2) // 6
        conv = AdderConv2d if adder else nn.Conv2d
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        layers, inplanes = [], 16
        for i, planes in enumerate((16, 32, 64)):
            stage = []
            for b in range(blocks):
                stage.append(BasicBlock(inplanes, planes, 2 if (i > 0 and b == 0) else 1, conv))
                inplanes = planes
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(64, num_classes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.bn2(self.fc(self.avgpool(x)))
        return x.flatten(1)


for _depth in (20, 32, 56):
    register(f"resnet{_depth}", (1, 3, 32, 32), f"ResNet-{_depth} CNN for CIFAR")(
        lambda depth=_depth, **kw: CifarResNet(depth, **kw))
    register(f"resnet{_depth}_adder", (1, 3, 32, 32), f"ResNet-{_depth} AdderNet for CIFAR")(
        lambda depth=_depth, **kw: CifarResNet(depth, adder=True, **kw))
