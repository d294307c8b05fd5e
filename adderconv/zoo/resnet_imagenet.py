"""ImageNet ResNet-50 as the AdderNet paper trains it (its official ``resnet50.py``), as a CNN and an AdderNet.

It is torchvision's ResNet-50 (bottleneck blocks, stride on the 3x3) except for the classifier, which is a 1x1
convolution with bias followed by BatchNorm, as in the official code, so the official ImageNet checkpoint
loads into ``resnet50_adder`` (see :mod:`adderconv.official`). The stem convolution and the classifier stay
multiplicative; every other convolution, the downsampling 1x1s included, is an adder layer.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..layers import AdderConv2d
from .registry import register


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, conv: type[nn.Module]) -> None:
        super().__init__()
        width = planes * self.expansion
        self.conv1 = conv(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv(planes, width, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != width:
            self.downsample = nn.Sequential(conv(inplanes, width, 1, stride=stride, bias=False), nn.BatchNorm2d(width))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ImageNetResNet(nn.Module):
    def __init__(self, layers: tuple[int, ...] = (3, 4, 6, 3), num_classes: int = 1000, adder: bool = False) -> None:
        super().__init__()
        conv = AdderConv2d if adder else nn.Conv2d
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes, stages = 64, []
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stage = []
            for b in range(blocks):
                stage.append(Bottleneck(inplanes, planes, 2 if (i > 0 and b == 0) else 1, conv))
                inplanes = planes * Bottleneck.expansion
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(inplanes, num_classes, 1)
        self.bn2 = nn.BatchNorm2d(num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.bn2(self.fc(self.avgpool(x))).flatten(1)


register("resnet50", (1, 3, 224, 224), "ResNet-50 CNN for ImageNet (AdderNet code: 1x1 conv + BN classifier)")(
    lambda **kw: ImageNetResNet(**kw))
register("resnet50_adder", (1, 3, 224, 224), "ResNet-50 AdderNet for ImageNet (loads the official checkpoint)")(
    lambda **kw: ImageNetResNet(adder=True, **kw))
