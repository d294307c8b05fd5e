"""``imagefolder:DIR``: one sub-folder per class (or ``train/ [val/] [test/]`` each holding them), images read
lazily so folders of any size fit; any bare directory no other source claims is read as one.

>>> len(ImageFiles([], (3, 8, 8)))
0
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import AdderconvError
from .images import IMAGE_EXT, RGB_MEAN, RGB_STD, check_image, normalise
from .registry import Request, register_source
from .splits import DataSplit, split_indices

__all__ = ["ImageFiles", "load_image_folder"]


class ImageFiles(Dataset):
    """Lazily read images (path, label) -> normalised (C, H, W) tensor; scales to folders of any size."""

    def __init__(self, items: list[tuple[str, int]], shape: tuple[int, ...]) -> None:
        self.items, self.shape = items, shape
        c = shape[0]
        self.mean = torch.tensor(RGB_MEAN if c == 3 else [0.449] * c)
        self.std = torch.tensor(RGB_STD if c == 3 else [0.226] * c)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        from PIL import Image

        path, label = self.items[i]
        with Image.open(path) as im:
            im = im.convert("RGB" if self.shape[0] == 3 else "L").resize(self.shape[:0:-1], Image.BILINEAR)
            a = torch.from_numpy(np.asarray(im, dtype=np.float32).copy()) / 255
        a = a.permute(2, 0, 1) if a.dim() == 3 else a.unsqueeze(0)
        return normalise(a.unsqueeze(0), self.mean, self.std)[0], torch.tensor(label)


def _scan(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    items = [(str(f), k) for k, c in enumerate(classes) for f in sorted((root / c).rglob("*"))
             if f.suffix.lower() in IMAGE_EXT and f.is_file()]
    for f, _ in items:
        check_image(Path(f))
    return classes, items


# Registered last of the directory sources: its detect claims any directory the others did not.
@register_source("imagefolder", usage=("imagefolder:DIR",), detect=Path.is_dir)
def load_image_folder(req: Request) -> DataSplit:
    root, shape, limit, split_seed = Path(req.arg), req.shape, req.limit, req.split_seed
    if not root.is_dir():
        raise AdderconvError(f"{root}: not a directory")
    parts = {n: root / n for n in ("train", "val", "test") if (root / n).is_dir()}
    if "train" in parts:   # an explicit split: train/ [val/] [test/]; missing parts are cut from train
        classes, items = _scan(parts["train"])
        sets = {"train": items}
        for name in ("val", "test"):
            if name in parts:
                cls2, sets[name] = _scan(parts[name])
                if cls2 != classes:
                    raise AdderconvError(f"{parts[name]}: classes {cls2} differ from train's {classes}")
        how = "folders train/" + "".join(f", {n}/" for n in ("val", "test") if n in parts)
    else:
        classes, items = _scan(root)
        sets, how = {"train": items}, "random split"
    if len(classes) < 2 or not items:
        raise AdderconvError(f"{root}: an ImageFolder needs one sub-folder per class (>= 2) with images in them")
    train = sets["train"]
    tr, va, te = split_indices(len(train), split_seed, 0.0 if "val" in sets else req.val_fraction,
                               0.0 if "test" in sets else req.test_fraction)
    pick = lambda idx: [train[i] for i in idx.tolist()]  # noqa: E731
    val = sets.get("val") or pick(va)
    test = sets.get("test") or pick(te)
    train = pick(tr)
    train, val, test = (s if limit is None else s[:limit] for s in (train, val, test))
    desc = (f"ImageFolder ({root}, {len(classes)} classes, {how}): {len(train)} train / {len(val)} val / "
            f"{len(test)} test, split seed {split_seed}")
    return DataSplit(ImageFiles(train, shape), ImageFiles(val, shape), ImageFiles(test, shape), "classify",
                     len(classes), tuple(shape), desc, augment="flip")
