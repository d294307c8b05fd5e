"""The handle registry as the analysis names it: :mod:`adderconv.op_registry` (the ground floor), re-exported.

One registry: these are the same objects (``HANDLES is adderconv.op_registry.HANDLES``), so a handle registered
through either name counts in every capture.

>>> from adderconv import op_registry
>>> HANDLES is op_registry.HANDLES and register is op_registry.register
True
"""
from __future__ import annotations

from adderconv.op_registry import (HANDLES, IGNORED, Handle, HandleFn, OpKey, apply_handle, ignore, lookup,
                                   make_handle, numel, op_name, overrides_from, register, resolve)

__all__ = ["Handle", "HANDLES", "IGNORED", "OpKey", "register", "ignore", "resolve", "make_handle",
           "lookup", "apply_handle", "op_name", "overrides_from", "numel", "HandleFn"]
