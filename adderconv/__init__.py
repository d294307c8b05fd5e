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

from .errors import AdderconvError  # noqa: E402  (torch-free: the CLI's error boundary needs it before parsing)

# Every other public name is imported on first use (PEP 562): name -> (submodule, attribute). `import adderconv`
# (and so `adderconv --help`) stays free of torch. This folder is the ground floor: its modules never import
# analysis/, converters/ or cli.py at import time (tests/test_floors.py), so the ops count with the vocabulary
# and registry kept here (counting, op_registry) and loading replays a conversion with recipe and blocks. A
# submodule imported here registers what it defines, e.g. adderconv.ops the custom ops torch.ops.adderconv.*
# and their counting handles.
_LAZY = {
    "AdaptiveLR": ("adaptive_lr", "AdaptiveLR"), "adaptive_scale": ("adaptive_lr", "adaptive_scale"),
    "AdderConv1d": ("layers", "AdderConv1d"), "AdderConv2d": ("layers", "AdderConv2d"),
    "AdderConv3d": ("layers", "AdderConv3d"), "AdderLinear": ("layers", "AdderLinear"),
    "adder_conv2d": ("ops", "adder_conv2d"), "adder_conv3d": ("ops", "adder_conv3d"),
    "AdderSRBlock": ("sr", "AdderSRBlock"), "PowerActivation": ("sr", "PowerActivation"),
    "default_input_shape": ("zoo", "default_input_shape"), "get_model": ("zoo", "get_model"),
    "list_models": ("zoo", "list_models"), "convert": ("converters", "convert"), "quantize": ("quant", "quantize"),
    "load_model": ("loading", "load_model"), "load": ("loading", "load_model"),   # load: the short name
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("adderconv")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+unknown"


def _is_submodule(name: str) -> bool:
    import importlib.util

    return name.isidentifier() and not name.startswith("__") \
        and importlib.util.find_spec(f"{__name__}.{name}") is not None


def __getattr__(name: str):
    import importlib

    if name == "__version__":
        value = _version()
    elif name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
    elif _is_submodule(name):   # `import adderconv; adderconv.layers.X` worked when this file imported them eagerly
        return importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "convert",
    "AdaptiveLR", "adaptive_scale", "AdderconvError", "load", "load_model", "AdderConv1d", "AdderConv2d",
    "AdderConv3d", "AdderLinear", "adder_conv2d", "adder_conv3d", "AdderSRBlock", "PowerActivation",
    "default_input_shape", "get_model", "list_models", "__version__",
]
