"""The data sources by name: a source registers its prefix next to its definition, and :func:`load_data`
(``load.py``) dispatches through this table, so adding a source touches one new file and the import list in
``adderconv/data/__init__.py``.

A source string is ``NAME`` or ``NAME:ARG`` (``digits``, ``cifar10:DIR``, ``sr:skimage``); a bare directory
goes to the first source whose ``detect`` claims it.

>>> @register_source("example", usage=("example",), shape=(1, 8, 8))
... def _example(req: Request) -> DataSplit: ...
>>> source("example").shape
(1, 8, 8)
>>> register_source("example", usage=("example",))(_example)
Traceback (most recent call last):
...
ValueError: data source 'example' is already registered
>>> _unregister("example")
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .splits import DataSplit

__all__ = ["Request", "Source", "register_source", "source", "sources", "default_shape", "FALLBACK_SHAPE"]

FALLBACK_SHAPE = (3, 224, 224)    # a source with no natural size (folders of photos): ImageNet's


@dataclass(frozen=True, kw_only=True)
class Request:
    """What :func:`load_data` asks a source for: its argument (after ``NAME:``), the (C, H, W) to fit images to,
    and the split settings (a source with a fixed split ignores the fractions it does not need)."""

    arg: str
    shape: tuple[int, int, int]
    split_seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    limit: int | None = None
    scale: int = 2


@dataclass(frozen=True, kw_only=True)
class Source:
    """A registered source: ``load(request) -> DataSplit``; ``usage`` spells its forms for messages; ``shape``
    is its natural (C, H, W); ``detect(path)`` claims a bare directory."""

    name: str
    load: Callable[[Request], DataSplit]
    usage: tuple[str, ...]
    shape: tuple[int, int, int] | None = None
    detect: Callable[[Path], bool] | None = None


_SOURCES: dict[str, Source] = {}


def register_source(name: str, *, usage: tuple[str, ...], shape: tuple[int, int, int] | None = None,
                    detect: Callable[[Path], bool] | None = None):
    """Decorator: register ``load`` as the source ``name`` (a duplicate name is an error)."""
    if not name or ":" in name:
        raise ValueError(f"a source name is a non-empty prefix without ':', got {name!r}")

    def deco(load: Callable[[Request], DataSplit]) -> Callable[[Request], DataSplit]:
        if name in _SOURCES:
            raise ValueError(f"data source {name!r} is already registered")
        _SOURCES[name] = Source(name=name, load=load, usage=usage, shape=shape, detect=detect)
        return load
    return deco


def _unregister(name: str) -> None:
    """Tests only: drop a source they registered."""
    _SOURCES.pop(name, None)


def sources() -> tuple[Source, ...]:
    """Every registered source, in registration order (the order messages list them and bare directories are
    offered to their ``detect``)."""
    return tuple(_SOURCES.values())


def source(name: str) -> Source | None:
    return _SOURCES.get(name)


def default_shape(source_string: str) -> tuple[int, int, int]:
    """The natural (C, H, W) of a source, used when neither the model nor the user gives one."""
    found = _SOURCES.get(source_string.split(":", 1)[0])
    return found.shape if found is not None and found.shape is not None else FALLBACK_SHAPE
