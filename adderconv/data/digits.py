"""``digits``: scikit-learn's 1,797 8x8 handwritten digits (bundled, offline), upsampled to the model's input.

>>> data = load_digits_source(Request(arg="", shape=(1, 16, 16), limit=8))
>>> data.train.x.shape, data.num_classes
(torch.Size([8, 1, 16, 16]), 10)
"""
from __future__ import annotations

import torch

from .images import fit, normalise
from .registry import Request, register_source
from .splits import DataSplit, TensorPairs, cap, split_indices

__all__ = ["load_digits_source"]


@register_source("digits", usage=("digits",), shape=(1, 32, 32))
def load_digits_source(req: Request) -> DataSplit:
    from sklearn.datasets import load_digits

    shape = req.shape
    d = load_digits()
    x = fit(torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0, shape)
    y = torch.tensor(d.target, dtype=torch.long)
    tr, va, te = split_indices(len(y), req.split_seed, req.val_fraction, req.test_fraction)
    mean, std = x[tr].mean(dim=(0, 2, 3)), x[tr].std(dim=(0, 2, 3))   # statistics of the training part only
    x = normalise(x, mean, std)
    tr, va, te = (cap(i, req.limit) for i in (tr, va, te))
    desc = (f"digits (scikit-learn, 8x8 -> {'x'.join(map(str, shape))}): {len(tr)} train / {len(va)} val / "
            f"{len(te)} test, split seed {req.split_seed}")
    return DataSplit(TensorPairs(x[tr], y[tr]), TensorPairs(x[va], y[va]), TensorPairs(x[te], y[te]),
                     "classify", 10, tuple(shape), desc)
