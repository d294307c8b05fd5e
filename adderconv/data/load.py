"""``load_data``: a source string -> a :class:`DataSplit` resized to the model's input, through the registry.

>>> data = load_data("digits", (1, 32, 32))
>>> data.description
'digits (scikit-learn, 8x8 -> 1x32x32): 1294 train / 144 val / 359 test, split seed 0'
"""
from __future__ import annotations

from pathlib import Path

from ..errors import AdderconvError
from .registry import Request, default_shape, source, sources
from .splits import DataSplit

__all__ = ["load_data", "source_forms"]


def source_forms() -> str:
    """Every registered form, quoted, for messages: ``'digits', 'cifar10:DIR', ...``."""
    return ", ".join(f"'{u}'" for s in sources() for u in s.usage)


def load_data(source_string: str = "digits", input_shape: tuple[int, ...] | None = None, *, split_seed: int = 0,
              val_fraction: float = 0.1, test_fraction: float = 0.2, limit: int | None = None,
              scale: int = 2) -> DataSplit:
    """Load a source (``digits``, ``cifar10:DIR``, ``mnist:DIR``, ... or a bare directory) resized to
    ``input_shape`` ((C, H, W) or (N, C, H, W); the source's natural shape when None).

    ``limit`` caps each part (for smoke runs); fractions apply where the source has no fixed split. The split is
    fixed by ``split_seed`` alone, so the same seed gives the same split.
    """
    if limit is not None and limit < 1:
        raise AdderconvError(f"the sample limit must be at least 1, got {limit}")
    shape = tuple(input_shape[-3:]) if input_shape is not None else default_shape(source_string)
    if len(shape) != 3:
        raise AdderconvError(f"fine-tuning needs an image input shape (C, H, W), got {input_shape}")
    name, sep, arg = source_string.partition(":")
    found = source(name)
    if found is not None and not sep and name not in found.usage:
        found = None            # 'cifar10' alone is a directory of that name: that source needs its argument
    if found is None:
        path = Path(source_string)
        claim = next((s for s in sources() if s.detect is not None and s.detect(path)), None) \
            if path.is_dir() else None
        if claim is None:
            if sep:
                raise AdderconvError(f"`data`: unknown source kind {name!r} (the sources: {source_forms()})")
            raise AdderconvError(f"`data` {source_string!r}: not {source_forms()}, nor an existing directory")
        found, arg = claim, source_string
    request = Request(arg=arg, shape=shape, split_seed=split_seed, val_fraction=val_fraction,
                      test_fraction=test_fraction, limit=limit, scale=scale)
    return found.load(request)
