"""The papers' networks, each as a CNN and as an AdderNet, by name.

>>> model = get_model("resnet20_adder")
>>> default_input_shape("resnet20_adder")
(1, 3, 32, 32)
"""
from __future__ import annotations

from .registry import ZooEntry, default_input_shape, entry, get_model, list_models, register

__all__ = ["ZooEntry", "register", "get_model", "list_models", "default_input_shape", "entry"]

from . import lenet, resnet_cifar, resnet_imagenet, sr_net, vgg_small  # noqa: E402,F401  (registration side effects)
