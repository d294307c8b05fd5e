"""Conversion of CNNs into AdderNets and ONNX export (installed as adderconv.converters).

>>> import torch, adderconv
>>> net = adderconv.convert(adderconv.get_model("resnet20"), example_inputs=(torch.randn(1, 3, 32, 32),))
>>> print(net.adderconv_report.converted[0].new_type)
AdderConv2d
"""
if __name__ != "adderconv.converters":   # a checkout's top level is on sys.path: refuse to become a second copy
    raise ImportError(f"import adderconv.converters, not {__name__}: a second copy would have its own registries "
                      f"(isinstance and handle look-ups fail across copies)")

from .aten_rewrite import convert_exported
from .blocks import AdderBlock, build_adder, default_mapping
from .calibrate import recalibrate_bn
from .graph import model_graph, write_graphml
from .policy import Decision, LayerInfo, Policy, decide, decide_all
from .report import ConversionReport, LayerRecord, conversion_report
from .save import save_converted
from .swap import apply_recipe, convert

__all__ = ["convert", "convert_exported", "conversion_report", "apply_recipe", "recalibrate_bn", "Policy",
           "LayerInfo", "Decision", "decide", "decide_all", "ConversionReport", "LayerRecord", "AdderBlock",
           "build_adder", "default_mapping", "model_graph", "write_graphml", "save_converted"]
