"""The ``adderconv zoo`` command's body: the built-in models, one line each.

>>> import io
>>> from rich.console import Console
>>> run_zoo(ZooOptions(), Console(file=io.StringIO()))
0
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..output import Output

__all__ = ["ZooOptions", "run_zoo"]


@dataclass(kw_only=True)
class ZooOptions:
    """``adderconv zoo`` takes no options today; the dataclass keeps the one command pattern."""


def run_zoo(opts: ZooOptions, out: Output | Any) -> int:
    """Name, default input shape and description of every zoo model."""
    from .registry import entry, list_models

    out = Output.of(out)
    for name in list_models():
        e = entry(name)
        out.line(f"{name:18s} {'x'.join(map(str, e.input_shape)):12s} {e.description}")
    return 0
