"""Building adder layers: :mod:`adderconv.blocks` (the ground floor, beside the layers), re-exported.

The same objects (``AdderBlock is adderconv.blocks.AdderBlock``): loading a saved conversion rebuilds its layers
with them without importing the converter.

>>> import torch
>>> from adderconv import blocks
>>> build_adder is blocks.build_adder and default_mapping()[torch.nn.Conv2d] is blocks.AdderConv2d
True
"""
from __future__ import annotations

from adderconv.blocks import (AdderBlock, build_adder, copy_hooks, default_mapping, mapped_target,
                              shape_preserving)

__all__ = ["AdderBlock", "default_mapping", "mapped_target", "build_adder", "shape_preserving", "copy_hooks"]
