"""Integer adder inference (4 to 8 bits): quantised adder layers on shared grids (one per layer, or one per group
of output channels), uint8 SAD kernels, calibration, quantisation-aware fine-tuning, files.

>>> import torch, adderconv
>>> q = adderconv.quantize(adderconv.get_model("resnet20_adder").eval(), torch.randn(4, 3, 32, 32))
>>> type(q.layer1[0].conv1).__name__
'QuantAdderConv2d'
"""
from .api import QuantReport, quantize
from .layers import QuantAdderConv2d, QuantAdderLinear
from .op import adder_conv2d_int8, kernel_name
from .qat import FakeQuantAdder, prepare_qat
from .recipe import apply_quant_recipe, is_quantized, recipe_json, save_quantized
from .scheme import BITS, METHODS, Grid

__all__ = ["quantize", "QuantReport", "QuantAdderConv2d", "QuantAdderLinear", "adder_conv2d_int8", "kernel_name",
           "apply_quant_recipe", "prepare_qat", "FakeQuantAdder",
           "is_quantized", "recipe_json", "save_quantized", "METHODS", "BITS", "Grid"]
