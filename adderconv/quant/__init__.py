"""int8 adder inference: quantised adder layers on a shared uint8 grid, SAD kernels, calibration, files.

>>> import torch, adderconv
>>> q = adderconv.quantize(adderconv.get_model("resnet20_adder").eval(), torch.randn(4, 3, 32, 32))
>>> type(q.layer1[0].conv1).__name__
'QuantAdderConv2d'
"""
from .api import QuantReport, quantize
from .layers import QuantAdderConv2d, QuantAdderLinear
from .op import adder_conv2d_int8, kernel_name
from .recipe import apply_quant_recipe, is_quantized, recipe_json, save_quantized
from .scheme import METHODS, Grid

__all__ = ["quantize", "QuantReport", "QuantAdderConv2d", "QuantAdderLinear", "adder_conv2d_int8", "kernel_name",
           "apply_quant_recipe",
           "is_quantized", "recipe_json", "save_quantized", "METHODS", "Grid"]
