"""``fashion-mnist`` and ``mnist:DIR``: MNIST-format idx files (MNIST, Fashion-MNIST, KMNIST, EMNIST).

``mnist:DIR`` reads ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
``t10k-labels-idx1-ubyte`` (each ``.gz`` or not; ``train-images.idx3-ubyte`` spelt with a dot too) from DIR.
EMNIST's folders hold one set per split (``emnist-letters-train-images-idx3-ubyte``, ``...-test-...``): name
one as ``mnist:DIR/emnist-letters``; EMNIST images are stored transposed and are turned upright here.
``fashion-mnist`` is the folder of Debian's package (``apt-get install dataset-fashion-mnist``), or
``fashion-mnist:DIR``. The test split is the official one (t10k); validation is cut from the training set by
``split_seed`` / ``val_fraction``. Images are fitted to the model's input as the digits source does and
normalised with the training part's statistics; the number of classes is the training labels' largest + 1.

>>> _NAME.fullmatch("emnist-letters-test-images-idx3-ubyte.gz")["prefix"]
'emnist-letters-'
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ..errors import AdderconvError
from .idx import read_idx
from .images import fit, normalise
from .registry import Request, register_source
from .splits import DataSplit, TensorPairs, cap, split_indices

__all__ = ["FASHION_MNIST_DIR", "INSTALL_HINT", "idx_set", "load_idx_split"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")     # where Debian's dataset-fashion-mnist puts it
INSTALL_HINT = ("install it with: apt-get install dataset-fashion-mnist (Debian/Ubuntu), or give a folder of its "
                "idx files as 'mnist:DIR'")
_NAME = re.compile(r"(?P<prefix>.*?)(?P<part>train|t10k|test)-(?P<kind>images|labels)[-.]idx[13]-ubyte(?:\.gz)?")
_ROLES = {("train", "images"): "train_images", ("train", "labels"): "train_labels",
          ("t10k", "images"): "test_images", ("t10k", "labels"): "test_labels",
          ("test", "images"): "test_images", ("test", "labels"): "test_labels"}   # EMNIST says test, not t10k
_EXPECTED = ("train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
             "t10k-labels-idx1-ubyte[.gz]")


def idx_set(where: Path) -> tuple[str, dict[str, Path]]:
    """(prefix, {role: file}) of the one complete set of idx files at ``where``: a folder, or a folder plus a
    file-name prefix (``DIR/emnist-letters``). Raises when there is none, or several to choose from."""
    folder, want = (where, None) if where.is_dir() else (where.parent, where.name.rstrip("-") + "-")
    if not folder.is_dir():
        raise AdderconvError(f"{where}: not a directory of idx files")
    sets: dict[str, dict[str, Path]] = {}
    for f in sorted(folder.iterdir(), key=lambda p: (p.suffix == ".gz", p.name)):   # plain before .gz
        m = _NAME.fullmatch(f.name)
        if m and f.is_file() and (want is None or m["prefix"] == want):
            sets.setdefault(m["prefix"], {}).setdefault(_ROLES[m["part"], m["kind"]], f)
    complete = {p: s for p, s in sets.items() if len(s) == 4}
    if not complete:
        missing = {p: sorted(set(_ROLES.values()) - set(s)) for p, s in sets.items()}
        found = f" (found incomplete sets: {missing})" if missing else ""
        raise AdderconvError(f"{where}: no MNIST-format idx files: expected {_EXPECTED}{found}")
    if len(complete) > 1:
        names = ", ".join(f"'mnist:{folder / p.rstrip('-')}'" for p in sorted(complete))
        raise AdderconvError(f"{where}: holds {len(complete)} sets of idx files; name one: {names}")
    prefix = next(iter(complete))
    return prefix, complete[prefix]


def _read(files: dict[str, Path], part: str, transpose: bool) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(files[f"{part}_images"], 3), read_idx(files[f"{part}_labels"], 1)
    if len(images) != len(labels):
        raise AdderconvError(f"{files[f'{part}_labels']}: {len(labels)} labels for the {len(images)} images of "
                             f"{files[f'{part}_images'].name}")
    if not len(images) or 0 in images.shape[1:]:
        raise AdderconvError(f"{files[f'{part}_images']}: no images (shape {images.shape})")
    return (images.transpose(0, 2, 1) if transpose else images), labels


def load_idx_split(where: Path, req: Request, title: str) -> DataSplit:
    """The :class:`DataSplit` of the idx set at ``where`` (see :func:`idx_set`), described as ``title``."""
    prefix, files = idx_set(where)
    transpose = prefix.startswith("emnist")
    xs, ys = _read(files, "train", transpose)
    xt, yt = _read(files, "test", transpose)
    classes = int(ys.max()) + 1
    if classes < 2:
        raise AdderconvError(f"{files['train_labels']}: every label is {int(ys.max())}; a classifier needs two "
                             f"classes or more")
    if int(yt.max()) >= classes:
        raise AdderconvError(f"{files['test_labels']}: label {int(yt.max())} is out of range: the training labels "
                             f"run 0..{classes - 1}")
    shape, rows, cols = req.shape, xs.shape[1], xs.shape[2]
    if xt.shape[1:] != xs.shape[1:]:
        raise AdderconvError(f"{files['test_images']}: {xt.shape[1]}x{xt.shape[2]} images, the training images "
                             f"are {rows}x{cols}")
    x = fit(torch.from_numpy(xs).unsqueeze(1).float().div_(255), shape)
    x_test = fit(torch.from_numpy(xt).unsqueeze(1).float().div_(255), shape)
    y, y_test = torch.from_numpy(ys.astype(np.int64)), torch.from_numpy(yt.astype(np.int64))
    tr, va, _ = split_indices(len(y), req.split_seed, req.val_fraction, 0.0)
    mean, std = x[tr].mean(dim=(0, 2, 3)), x[tr].std(dim=(0, 2, 3))   # statistics of the training part only
    x, x_test = normalise(x, mean, std), normalise(x_test, mean, std)
    tr, va, te = cap(tr, req.limit), cap(va, req.limit), cap(torch.arange(len(y_test)), req.limit)
    source = f"{files['train_images'].parent}{', ' + prefix.rstrip('-') if prefix else ''}"
    desc = (f"{title} ({source}, {rows}x{cols} -> {'x'.join(map(str, shape))}, {classes} classes): {len(tr)} train / "
            f"{len(va)} val (from {len(y)} training images) / {len(te)} test (official test set), "
            f"split seed {req.split_seed}")
    return DataSplit(TensorPairs(x[tr], y[tr]), TensorPairs(x[va], y[va]), TensorPairs(x_test[te], y_test[te]),
                     "classify", classes, tuple(shape), desc)


def _is_idx_folder(path: Path) -> bool:
    return any(_NAME.fullmatch(f.name) for f in path.iterdir())


@register_source("mnist", usage=("mnist:DIR",), shape=(1, 28, 28), detect=_is_idx_folder)
def load_mnist(req: Request) -> DataSplit:
    if not req.arg:
        raise AdderconvError("`data` 'mnist:' needs the folder of the idx files: 'mnist:DIR'")
    return load_idx_split(Path(req.arg), req, "MNIST-format idx")


@register_source("fashion-mnist", usage=("fashion-mnist", "fashion-mnist:DIR"), shape=(1, 28, 28))
def load_fashion_mnist(req: Request) -> DataSplit:
    where = Path(req.arg) if req.arg else FASHION_MNIST_DIR
    if not req.arg and not where.is_dir():
        raise AdderconvError(f"`data` 'fashion-mnist': Fashion-MNIST is not installed ({where} is missing); "
                             f"{INSTALL_HINT}")
    return load_idx_split(where, req, "Fashion-MNIST")
