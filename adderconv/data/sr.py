"""``sr:DIR`` / ``sr:skimage``: super-resolution patches (luminance, bicubic degradation) from a folder of
images or scikit-image's bundled samples; whole images are held out for val and test.

>>> sorted(SKIMAGE_SPLIT)
['test', 'train', 'val']
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import AdderconvError
from .images import IMAGE_EXT, check_image, luminance
from .registry import Request, register_source
from .splits import DataSplit, TensorPairs
from .transforms import degrade_bicubic

__all__ = ["SKIMAGE_SPLIT", "load_sr"]

SKIMAGE_SPLIT = {   # scikit-image's bundled samples (no download); held-out images for val and test
    "train": ["camera", "astronaut", "coffee", "chelsea", "rocket", "brick", "grass", "gravel", "page",
              "immunohistochemistry"],
    "val": ["text"],
    "test": ["coins", "clock", "moon"],
}


def _tiles(images: list[Tensor], size: int, stride: int) -> Tensor:
    out = [im.unfold(1, size, stride).unfold(2, size, stride).permute(1, 2, 0, 3, 4).reshape(-1, 1, size, size)
           for im in images if min(im.shape[1:]) >= size]
    return torch.cat(out) if out else torch.empty(0, 1, size, size)


def _folder(source: str, split_seed: int, val_fraction: float, test_fraction: float) -> dict[str, list[Tensor]]:
    root = Path(source)
    files = sorted(f for f in root.rglob("*") if f.suffix.lower() in IMAGE_EXT) if root.is_dir() else []
    if len(files) < 3:
        raise AdderconvError(f"{source}: SR mode needs a directory with at least 3 images")
    for f in files:
        check_image(f)
    from PIL import Image

    # Whole images are held out (never patches of a training image); at least one for val and one for test.
    perm = torch.randperm(len(files), generator=torch.Generator().manual_seed(split_seed)).tolist()
    n_test = max(1, round(len(files) * test_fraction))
    n_val = max(1, round((len(files) - n_test) * val_fraction))
    parts = {"test": perm[:n_test], "val": perm[n_test:n_test + n_val], "train": perm[n_test + n_val:]}
    return {k: [luminance(np.asarray(Image.open(files[i]).convert("RGB"))) for i in v] for k, v in parts.items()}


@register_source("sr", usage=("sr:DIR", "sr:skimage"), shape=(1, 48, 48))
def load_sr(req: Request) -> DataSplit:
    source, shape, limit, scale = req.arg or "skimage", req.shape, req.limit, req.scale
    if shape[0] != 1:
        raise AdderconvError(f"SR mode trains on luminance: the model must take 1 input channel, not {shape[0]}")
    size = shape[1]
    if source == "skimage":
        import skimage.data as skd

        sets = {k: [luminance(getattr(skd, n)()) for n in v] for k, v in SKIMAGE_SPLIT.items()}
        how = (f"scikit-image samples; val {', '.join(SKIMAGE_SPLIT['val'])}; "
               f"test {', '.join(SKIMAGE_SPLIT['test'])}")
    else:
        sets = _folder(source, req.split_seed, req.val_fraction, req.test_fraction)
        how = f"{Path(source)}, images split by seed {req.split_seed}"
    # Training patches overlap by half; val/test are non-overlapping tiles of the held-out images.
    hr = {"train": _tiles(sets["train"], size, size // 2), "val": _tiles(sets["val"], size, size),
          "test": _tiles(sets["test"], size, size)}
    if limit is not None:   # a seeded random subset of the training patches (they are stored image by image)
        pick = torch.randperm(len(hr["train"]), generator=torch.Generator().manual_seed(req.split_seed))
        hr["train"] = hr["train"][pick]
        hr = {k: v[:limit] for k, v in hr.items()}
    if not len(hr["train"]) or not len(hr["test"]):
        raise AdderconvError(f"{source}: no {size}x{size} patches (images smaller than the model input?)")
    ds = {k: TensorPairs(degrade_bicubic(v, scale), v) for k, v in hr.items()}
    desc = (f"SR x{scale} ({how}): {len(hr['train'])} train patches / {len(hr['val'])} val tiles / "
            f"{len(hr['test'])} test tiles of {size}x{size}, luminance, bicubic degradation")
    return DataSplit(ds["train"], ds["val"], ds["test"], "sr", None, tuple(shape), desc, augment="flip",
                     scale=scale)
