"""Conversion of CNNs into AdderNets and ONNX export (installed as adderconv.converters).

Names are imported on first use, so a module of this package (the conversion report, say) imports without the
rest of the converter (networkx, the ATen rewrite, every counting handle).

>>> import torch, adderconv
>>> net = adderconv.convert(adderconv.get_model("resnet20"), example_inputs=(torch.randn(1, 3, 32, 32),))
>>> print(net.adderconv_report.converted[0].new_type)
AdderConv2d
"""
from __future__ import annotations

if __name__ != "adderconv.converters":   # a checkout's top level is on sys.path: refuse to become a second copy
    raise ImportError(f"import adderconv.converters, not {__name__}: a second copy would have its own registries "
                      f"(isinstance and handle look-ups fail across copies)")

from adderconv.lazy import lazy_getattr

# name -> submodule defining it (or re-exporting it from the ground floor: blocks, swap's apply_recipe)
_LAZY = {
    "convert": "swap", "convert_exported": "aten_rewrite", "conversion_report": "report", "apply_recipe": "swap",
    "recalibrate_bn": "calibrate", "Policy": "policy", "LayerInfo": "policy", "Decision": "policy",
    "decide": "policy", "decide_all": "policy", "ConversionReport": "report", "LayerRecord": "report",
    "AdderBlock": "blocks", "build_adder": "blocks", "default_mapping": "blocks", "model_graph": "graph",
    "write_graphml": "graph", "save_converted": "save",
}


__getattr__ = lazy_getattr(globals(), _LAZY)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = list(_LAZY)
