"""Shape arithmetic shared by the op, its fake implementation, the layers and the counters."""
from __future__ import annotations

from collections.abc import Sequence

__all__ = ["pair", "conv_output_size", "same_padding"]


def pair(value: int | Sequence[int], name: str = "value") -> tuple[int, int]:
    """Return ``value`` as a 2-tuple of ints (an int is repeated)."""
    if isinstance(value, int):
        return (value, value)
    items = tuple(int(v) for v in value)
    if len(items) == 1:
        return (items[0], items[0])
    if len(items) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return items  # type: ignore[return-value]


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Spatial output size of a convolution along one axis (torch's formula)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def same_padding(kernel: int, dilation: int) -> tuple[int, int]:
    """(before, after) zero padding that keeps the size at stride 1; torch puts the odd pixel after."""
    total = dilation * (kernel - 1)
    return total // 2, total - total // 2
