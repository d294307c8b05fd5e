"""Pixels to model inputs, shared by the sources: channel mapping and resize (:func:`fit`), per-channel
normalisation, luminance, and a cheap header check that refuses a damaged image or a decompression bomb early.

>>> fit(torch.rand(2, 3, 8, 8), (1, 16, 16)).shape
torch.Size([2, 1, 16, 16])
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import AdderconvError, first_line

__all__ = ["IMAGE_EXT", "RGB_MEAN", "RGB_STD", "fit", "normalise", "luminance", "check_image"]

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
RGB_MEAN, RGB_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)   # ImageNet: what torchvision weights expect


def fit(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    """(N, c, h, w) float in [0, 1] -> (N, C, H, W): luminance or channel copies, then bilinear resize."""
    c = shape[0]
    if x.shape[1] != c:
        if c == 1 and x.shape[1] == 3:
            x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        elif x.shape[1] == 1:
            x = x.expand(-1, c, -1, -1)
        else:
            raise AdderconvError(f"cannot map {x.shape[1]}-channel images to the model's {c} input channels")
    if tuple(x.shape[2:]) != tuple(shape[1:]):
        x = F.interpolate(x, size=tuple(shape[1:]), mode="bilinear", align_corners=False, antialias=True)
    return x.contiguous()


def normalise(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Per-channel ``(x - mean) / std`` of an (N, C, H, W) batch."""
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def luminance(a: np.ndarray) -> Tensor:
    """An image array -> (1, H, W) float luminance in [0, 1] (ITU-R BT.601 weights)."""
    a = np.asarray(a)
    a = a.astype(np.float32) / (255.0 if a.dtype == np.uint8 else (65535.0 if a.dtype == np.uint16 else 1.0))
    if a.ndim == 3:
        a = a[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(a)).unsqueeze(0)


def check_image(path: Path) -> None:
    """Read the header (cheap) so a non-image or a decompression bomb fails now, in one line, not mid-epoch."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.size  # noqa: B018  (the header is parsed on open; size is what the bomb check reads)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise AdderconvError(f"{path}: refusing an image this large ({e})") from None
    except Exception as e:  # UnidentifiedImageError, OSError, SyntaxError... from a damaged header
        raise AdderconvError(f"{path}: not a readable image ({first_line(e)})") from None
