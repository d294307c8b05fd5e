"""Data sources for fine-tuning: scikit-learn digits, ImageFolder, CIFAR-10 (python format), SR patches.

A source is a string: ``digits`` (the default, offline), ``cifar10:DIR``, ``imagefolder:DIR``, ``sr:DIR`` or
``sr:skimage`` (scikit-image's bundled sample images); a bare directory is CIFAR-10 if it holds
``data_batch_1`` (directly or in ``cifar-10-batches-py/``), else an ImageFolder. Images are resized to the
model's input (C, H, W). The split is fixed by ``split_seed`` alone, so the same seed gives the same split.

>>> data = load_data("digits", (1, 32, 32))
>>> data.description
'digits (scikit-learn, 8x8 -> 1x32x32): 1294 train / 144 val / 359 test, split seed 0'
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import AdderconvError

__all__ = ["DataSplit", "TensorPairs", "load_data", "default_shape", "safe_unpickle", "degrade_bicubic",
           "augment_batch", "SKIMAGE_SPLIT"]

_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_RGB_MEAN, _RGB_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)   # ImageNet: what torchvision weights expect


class TensorPairs(Dataset):
    """(input, target) pairs held in two tensors; ``__getitems__`` slices a whole batch at once."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        if len(x) != len(y):
            raise ValueError(f"inputs ({len(x)}) and targets ({len(y)}) differ in length")
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.x[i], self.y[i]

    def __getitems__(self, idx: list[int]) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(idx, dtype=torch.long)
        return self.x[index], self.y[index]


@dataclass
class DataSplit:
    """Train/val/test datasets of one task. ``task`` is ``"classify"`` or ``"sr"``."""

    train: Dataset
    val: Dataset
    test: Dataset
    task: str
    num_classes: int | None
    input_shape: tuple[int, ...]          # (C, H, W) of one sample
    description: str
    augment: str = "none"                 # "none" | "crop_flip" (CIFAR-style) | "flip" (SR)
    scale: int = 1                        # SR upscaling factor


# ----------------------------------------------------------------------------------------------- helpers

def _split(n: int, seed: int, val_fraction: float, test_fraction: float) -> tuple[Tensor, Tensor, Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test, n_val = round(n * test_fraction), round(n * (1 - test_fraction) * val_fraction)
    return perm[n_test + n_val:], perm[n_test:n_test + n_val], perm[:n_test]


def _fit(x: Tensor, shape: tuple[int, ...]) -> Tensor:
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


def _normalise(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def _limit(idx: Tensor, limit: int | None) -> Tensor:
    return idx if limit is None else idx[:limit]


# ----------------------------------------------------------------------------------------------- digits

def _digits(shape, split_seed, val_fraction, test_fraction, limit) -> DataSplit:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = _fit(torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0, shape)
    y = torch.tensor(d.target, dtype=torch.long)
    tr, va, te = _split(len(y), split_seed, val_fraction, test_fraction)
    mean, std = x[tr].mean(dim=(0, 2, 3)), x[tr].std(dim=(0, 2, 3))   # statistics of the training part only
    x = _normalise(x, mean, std)
    tr, va, te = (_limit(i, limit) for i in (tr, va, te))
    desc = (f"digits (scikit-learn, 8x8 -> {'x'.join(map(str, shape))}): {len(tr)} train / {len(va)} val / "
            f"{len(te)} test, split seed {split_seed}")
    return DataSplit(TensorPairs(x[tr], y[tr]), TensorPairs(x[va], y[va]), TensorPairs(x[te], y[te]),
                     "classify", 10, tuple(shape), desc)


# ----------------------------------------------------------------------------------------------- CIFAR-10

class _SafeUnpickler(pickle.Unpickler):
    """Only what CIFAR's python batches need: numpy arrays/dtypes and bytes decoding. Anything else is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),                         # how protocol-2 pickles spell a bytes object
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed here")


def safe_unpickle(path: str | os.PathLike) -> object:
    """Unpickle ``path`` allowing only builtin containers, bytes and numpy arrays (CIFAR's python format)."""
    try:
        with open(path, "rb") as f:
            return _SafeUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise AdderconvError(f"{path}: not a CIFAR python batch ({e})") from None


def _cifar_dir(path: Path) -> Path | None:
    for d in (path, path / "cifar-10-batches-py"):
        if (d / "data_batch_1").is_file():
            return d
    return None


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise AdderconvError(f"{path}: expected a CIFAR python batch file, found a directory or nothing")
    obj = safe_unpickle(path)
    if not isinstance(obj, dict):
        raise AdderconvError(f"{path}: expected a dict, found {type(obj).__name__}")
    obj = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
    data, labels = obj.get("data"), obj.get("labels")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise AdderconvError(f"{path}: expected 'data' as an N x 3072 uint8 array")
    try:
        y = np.asarray(labels)
    except (ValueError, TypeError):
        y = np.asarray([], dtype=object)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_) or len(y) != len(data):
        raise AdderconvError(f"{path}: expected 'labels' as {len(data)} integers (one per image), got "
                             f"{len(y) if y.ndim == 1 else 'shape ' + str(y.shape)} of {y.dtype}")
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise AdderconvError(f"{path}: CIFAR-10 labels must be 0-9, found {int(y.min())}..{int(y.max())}")
    return data.reshape(-1, 3, 32, 32), y.astype(np.int64)


def _cifar10(root: Path, shape, split_seed, val_fraction, limit) -> DataSplit:
    d = _cifar_dir(root)
    if d is None:
        raise AdderconvError(f"{root}: no CIFAR-10 python batches (data_batch_1 ... test_batch) found")
    batches = sorted(d.glob("data_batch_*"))
    train = [_cifar_batch(p) for p in batches]
    if not (d / "test_batch").is_file():
        raise AdderconvError(f"{d}: test_batch is missing")
    xt, yt = _cifar_batch(d / "test_batch")
    x = torch.from_numpy(np.concatenate([b[0] for b in train])).float() / 255
    y = torch.from_numpy(np.concatenate([b[1] for b in train]))
    x, xt = _fit(x, shape), _fit(torch.from_numpy(xt).float() / 255, shape)
    tr, va, _ = _split(len(y), split_seed, val_fraction, 0.0)
    mean, std = x[tr].mean(dim=(0, 2, 3)), x[tr].std(dim=(0, 2, 3))
    x, xt = _normalise(x, mean, std), _normalise(xt, mean, std)
    te = _limit(torch.arange(len(xt)), limit)
    tr, va = _limit(tr, limit), _limit(va, limit)
    desc = (f"CIFAR-10 ({d}): {len(tr)} train / {len(va)} val (from {len(batches)} training batches) / "
            f"{len(te)} test (test_batch), split seed {split_seed}")
    yt_t = torch.from_numpy(yt)
    return DataSplit(TensorPairs(x[tr], y[tr]), TensorPairs(x[va], y[va]), TensorPairs(xt[te], yt_t[te]),
                     "classify", 10, tuple(shape), desc, augment="crop_flip")


# ----------------------------------------------------------------------------------------------- ImageFolder

class _Files(Dataset):
    """Lazily read images (path, label) -> normalised (C, H, W) tensor; scales to folders of any size."""

    def __init__(self, items: list[tuple[str, int]], shape: tuple[int, ...]) -> None:
        self.items, self.shape = items, shape
        c = shape[0]
        self.mean = torch.tensor(_RGB_MEAN if c == 3 else [0.449] * c)
        self.std = torch.tensor(_RGB_STD if c == 3 else [0.226] * c)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        from PIL import Image

        path, label = self.items[i]
        with Image.open(path) as im:
            im = im.convert("RGB" if self.shape[0] == 3 else "L").resize(self.shape[:0:-1], Image.BILINEAR)
            a = torch.from_numpy(np.asarray(im, dtype=np.float32).copy()) / 255
        a = a.permute(2, 0, 1) if a.dim() == 3 else a.unsqueeze(0)
        return _normalise(a.unsqueeze(0), self.mean, self.std)[0], torch.tensor(label)


def _check_image(path: Path) -> None:
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
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AdderconvError(f"{path}: not a readable image ({first})") from None


def _scan(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    items = [(str(f), k) for k, c in enumerate(classes) for f in sorted((root / c).rglob("*"))
             if f.suffix.lower() in _IMAGE_EXT and f.is_file()]
    for f, _ in items:
        _check_image(Path(f))
    return classes, items


def _image_folder(root: Path, shape, split_seed, val_fraction, test_fraction, limit) -> DataSplit:
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
    tr, va, te = _split(len(train), split_seed, 0.0 if "val" in sets else val_fraction,
                        0.0 if "test" in sets else test_fraction)
    pick = lambda idx: [train[i] for i in idx.tolist()]  # noqa: E731
    val = sets.get("val") or pick(va)
    test = sets.get("test") or pick(te)
    train = pick(tr)
    train, val, test = (s if limit is None else s[:limit] for s in (train, val, test))
    desc = (f"ImageFolder ({root}, {len(classes)} classes, {how}): {len(train)} train / {len(val)} val / "
            f"{len(test)} test, split seed {split_seed}")
    return DataSplit(_Files(train, shape), _Files(val, shape), _Files(test, shape), "classify", len(classes),
                     tuple(shape), desc, augment="flip")


# ----------------------------------------------------------------------------------------------- SR

SKIMAGE_SPLIT = {   # scikit-image's bundled samples (no download); held-out images for val and test
    "train": ["camera", "astronaut", "coffee", "chelsea", "rocket", "brick", "grass", "gravel", "page",
              "immunohistochemistry"],
    "val": ["text"],
    "test": ["coins", "clock", "moon"],
}


def _luminance(a: np.ndarray) -> Tensor:
    """An image array -> (1, H, W) float luminance in [0, 1] (ITU-R BT.601 weights)."""
    a = np.asarray(a)
    a = a.astype(np.float32) / (255.0 if a.dtype == np.uint8 else (65535.0 if a.dtype == np.uint16 else 1.0))
    if a.ndim == 3:
        a = a[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(a)).unsqueeze(0)


def degrade_bicubic(hr: Tensor, scale: int) -> Tensor:
    """(N, C, H, W) -> bicubic x``scale`` down (antialiased) then bicubic up to the same size (VDSR input)."""
    h, w = hr.shape[-2:]
    lr = F.interpolate(hr, size=(h // scale, w // scale), mode="bicubic", align_corners=False, antialias=True)
    return F.interpolate(lr, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


def _tiles(images: list[Tensor], size: int, stride: int) -> Tensor:
    out = [im.unfold(1, size, stride).unfold(2, size, stride).permute(1, 2, 0, 3, 4).reshape(-1, 1, size, size)
           for im in images if min(im.shape[1:]) >= size]
    return torch.cat(out) if out else torch.empty(0, 1, size, size)


def _sr(source: str, shape, split_seed, val_fraction, test_fraction, limit, scale) -> DataSplit:
    if shape[0] != 1:
        raise AdderconvError(f"SR mode trains on luminance: the model must take 1 input channel, not {shape[0]}")
    size = shape[1]
    if source == "skimage":
        import skimage.data as skd

        sets = {k: [_luminance(getattr(skd, n)()) for n in v] for k, v in SKIMAGE_SPLIT.items()}
        how = (f"scikit-image samples; val {', '.join(SKIMAGE_SPLIT['val'])}; "
               f"test {', '.join(SKIMAGE_SPLIT['test'])}")
    else:
        root = Path(source)
        files = sorted(f for f in root.rglob("*") if f.suffix.lower() in _IMAGE_EXT) if root.is_dir() else []
        if len(files) < 3:
            raise AdderconvError(f"{source}: SR mode needs a directory with at least 3 images")
        for f in files:
            _check_image(f)
        from PIL import Image

        # Whole images are held out (never patches of a training image); at least one for val and one for test.
        perm = torch.randperm(len(files), generator=torch.Generator().manual_seed(split_seed)).tolist()
        n_test = max(1, round(len(files) * test_fraction))
        n_val = max(1, round((len(files) - n_test) * val_fraction))
        parts = {"test": perm[:n_test], "val": perm[n_test:n_test + n_val], "train": perm[n_test + n_val:]}

        def load(idx: list[int]) -> list[Tensor]:
            return [_luminance(np.asarray(Image.open(files[i]).convert("RGB"))) for i in idx]

        sets = {k: load(v) for k, v in parts.items()}
        how = f"{root}, images split by seed {split_seed}"
    # Training patches overlap by half; val/test are non-overlapping tiles of the held-out images.
    hr = {"train": _tiles(sets["train"], size, size // 2), "val": _tiles(sets["val"], size, size),
          "test": _tiles(sets["test"], size, size)}
    if limit is not None:   # a seeded random subset of the training patches (they are stored image by image)
        pick = torch.randperm(len(hr["train"]), generator=torch.Generator().manual_seed(split_seed))
        hr["train"] = hr["train"][pick]
        hr = {k: v[:limit] for k, v in hr.items()}
    if not len(hr["train"]) or not len(hr["test"]):
        raise AdderconvError(f"{source}: no {size}x{size} patches (images smaller than the model input?)")
    ds = {k: TensorPairs(degrade_bicubic(v, scale), v) for k, v in hr.items()}
    desc = (f"SR x{scale} ({how}): {len(hr['train'])} train patches / {len(hr['val'])} val tiles / "
            f"{len(hr['test'])} test tiles of {size}x{size}, luminance, bicubic degradation")
    return DataSplit(ds["train"], ds["val"], ds["test"], "sr", None, tuple(shape), desc, augment="flip",
                     scale=scale)


# ----------------------------------------------------------------------------------------------- entry

def default_shape(source: str) -> tuple[int, int, int]:
    """The natural (C, H, W) of a source, used when neither the model nor the user gives one."""
    kind = source.split(":", 1)[0]
    return {"digits": (1, 32, 32), "cifar10": (3, 32, 32), "sr": (1, 48, 48)}.get(kind, (3, 224, 224))


def load_data(source: str = "digits", input_shape: tuple[int, ...] | None = None, *, split_seed: int = 0,
              val_fraction: float = 0.1, test_fraction: float = 0.2, limit: int | None = None,
              scale: int = 2) -> DataSplit:
    """Load ``source`` resized to ``input_shape`` ((C, H, W) or (N, C, H, W)); see the module docstring.

    ``limit`` caps each part (for smoke runs); fractions apply where the source has no fixed split.
    """
    if limit is not None and limit < 1:
        raise AdderconvError(f"the sample limit must be at least 1, got {limit}")
    shape = tuple(input_shape[-3:]) if input_shape is not None else default_shape(source)
    if len(shape) != 3:
        raise AdderconvError(f"fine-tuning needs an image input shape (C, H, W), got {input_shape}")
    kind, sep, arg = source.partition(":")
    if not sep:
        kind, arg = ("digits", "") if source == "digits" else ("", source)
    if not kind:   # a bare directory: CIFAR-10 if it looks like it, else ImageFolder
        path = Path(arg)
        if not path.is_dir():
            raise AdderconvError(f"`data` {source!r}: not 'digits', 'cifar10:DIR', 'imagefolder:DIR', 'sr:DIR', "
                                 f"'sr:skimage', nor an existing directory")
        kind = "cifar10" if _cifar_dir(path) else "imagefolder"
    if kind == "digits":
        return _digits(shape, split_seed, val_fraction, test_fraction, limit)
    if kind == "cifar10":
        return _cifar10(Path(arg), shape, split_seed, val_fraction, limit)
    if kind == "imagefolder":
        return _image_folder(Path(arg), shape, split_seed, val_fraction, test_fraction, limit)
    if kind == "sr":
        return _sr(arg or "skimage", shape, split_seed, val_fraction, test_fraction, limit, scale)
    raise AdderconvError(f"`data`: unknown source kind {kind!r} (digits, cifar10:DIR, imagefolder:DIR, sr:DIR)")


def augment_batch(kind: str, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random augmentation of one training batch, drawn from ``generator`` (seeded per epoch: resumable).

    ``crop_flip``: CIFAR's 4-pixel zero-padded random crop + horizontal flip; ``flip``: horizontal flip
    (applied to the SR target too).
    """
    if kind == "none":
        return x, y
    n = len(x)
    flip = torch.rand(n, generator=generator) < 0.5
    if kind == "crop_flip":
        h, w = x.shape[-2:]
        pad = F.pad(x, (4, 4, 4, 4))
        dy, dx = torch.randint(0, 9, (2, n), generator=generator).tolist()
        x = torch.stack([pad[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    m = flip.view(-1, *([1] * (x.dim() - 1))).to(x.device)
    x = torch.where(m, x.flip(-1), x)
    if y.dim() == x.dim():   # an image target (SR) flips with its input
        y = torch.where(m, y.flip(-1), y)
    return x, y
