"""Names a package exports but imports on first use (PEP 562), so importing the package stays cheap and a module
anywhere can import one name without loading, or cycling through, its siblings.

>>> ns = {"__name__": "json"}
>>> getter = lazy_getattr(ns, {"JSONDecoder": "decoder"})
>>> getter("JSONDecoder").__name__, "JSONDecoder" in ns
('JSONDecoder', True)
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(namespace: dict[str, Any], table: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for the package whose globals are ``namespace``: name -> the submodule defining
    it (imported on first use, then cached in the package's globals)."""
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        if name in table:
            value = getattr(importlib.import_module(f".{table[name]}", package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
