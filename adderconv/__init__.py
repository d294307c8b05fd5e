"""adderconv: turn CNNs into multiplication-free AdderNets, fine-tune them, and measure what that saves.

>>> import torch, adderconv
>>> layer = adderconv.AdderConv2d(3, 8, 3, padding=1)
>>> layer(torch.randn(1, 3, 8, 8)).shape
torch.Size([1, 8, 8, 8])
"""
from __future__ import annotations

import importlib.abc as _abc
import importlib.machinery as _machinery
import sys as _sys
from pathlib import Path as _Path

# In a source checkout the design card keeps analysis/, converters/ and cli.py beside this folder; the wheel
# places them inside it. Either way they import as adderconv.analysis, adderconv.converters, adderconv.cli, and
# only those three: nothing else at the checkout's top level (tests/, hatch_build.py) is reachable as adderconv.*.
_SIBLINGS = ("analysis", "converters", "cli")
_root = _Path(__file__).resolve().parent.parent


class _CheckoutSiblings(_abc.MetaPathFinder):
    """Finds ``adderconv.{analysis,converters,cli}`` at the top of a source checkout."""

    def find_spec(self, fullname, path=None, target=None):
        parent, _, name = fullname.rpartition(".")
        if parent != __name__ or name not in _SIBLINGS:
            return None
        return _machinery.PathFinder.find_spec(fullname, [str(_root)])


_in_checkout = (_root / "cli.py").is_file() and (_root / "pyproject.toml").is_file() \
    and not (_Path(__file__).parent / "cli.py").exists()
if _in_checkout:
    if not any(isinstance(f, _CheckoutSiblings) for f in _sys.meta_path):
        _sys.meta_path.append(_CheckoutSiblings())

from .adaptive_lr import AdaptiveLR, adaptive_scale  # noqa: E402
from .errors import AdderconvError  # noqa: E402
from .layers import AdderConv1d, AdderConv2d, AdderConv3d, AdderLinear  # noqa: E402
from .ops import adder_conv2d, adder_conv3d  # noqa: E402
from .sr import AdderSRBlock, PowerActivation  # noqa: E402
from .zoo import default_input_shape, get_model, list_models  # noqa: E402

try:
    from importlib.metadata import PackageNotFoundError, version as _version

    __version__ = _version("adderconv")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

# Names imported on first use: name -> (submodule, attribute). `import adderconv` stays light, and the layers
# above the op (conversion, loading, quantisation) can import the op's modules without a cycle.
_LAZY = {"convert": ("converters", "convert"), "quantize": ("quant", "quantize"),
         "load_model": ("loading", "load_model"), "load": ("loading", "load_model")}   # load: the short name


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'adderconv' has no attribute {name!r}")


__all__ = [
    "convert",
    "AdaptiveLR", "adaptive_scale", "AdderconvError", "load", "load_model", "AdderConv1d", "AdderConv2d",
    "AdderConv3d", "AdderLinear", "adder_conv2d", "adder_conv3d", "AdderSRBlock", "PowerActivation",
    "default_input_shape", "get_model", "list_models", "__version__",
]
