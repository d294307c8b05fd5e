"""The zoo's registry: a model file registers its factories here by decorator (a duplicate name is an error).

Its own module so that the model files import it and the package imports them, one way (no cycle).

>>> entry("resnet20").input_shape
(1, 3, 32, 32)
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

__all__ = ["ZooEntry", "register", "get_model", "list_models", "default_input_shape", "entry"]


@dataclass(frozen=True)
class ZooEntry:
    name: str
    factory: Callable[..., nn.Module]
    input_shape: tuple[int, ...]          # (batch, channels, height, width) used by default
    description: str


_ZOO: dict[str, ZooEntry] = {}


def register(name: str, input_shape: tuple[int, ...], description: str):
    """Decorator: add a factory to the zoo under ``name`` (a duplicate name is an error)."""
    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _ZOO:
            raise ValueError(f"zoo model {name!r} is already registered")
        _ZOO[name] = ZooEntry(name, factory, input_shape, description)
        return factory
    return wrap


def list_models() -> list[str]:
    return sorted(_ZOO)


def entry(name: str) -> ZooEntry:
    if name not in _ZOO:
        raise KeyError(f"unknown zoo model {name!r}; available: {', '.join(list_models())}")
    return _ZOO[name]


def get_model(name: str, **kwargs) -> nn.Module:
    """Build zoo model ``name`` (randomly initialised; the zoo ships no weights)."""
    return entry(name).factory(**kwargs)


def default_input_shape(name: str) -> tuple[int, ...]:
    return entry(name).input_shape
