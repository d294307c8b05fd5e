"""Data sources of the fine-tuning: digits split, CIFAR-10 python batches (safe unpickling), ImageFolder, SR."""
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adderconv.errors import AdderconvError
from adderconv.data import augment_batch, degrade_bicubic, load_data, safe_unpickle


def test_digits_split_is_a_function_of_the_seed():
    a, b, c = (load_data("digits", (1, 16, 16), split_seed=s) for s in (0, 0, 1))
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.train.y, b.train.y)
    assert not torch.equal(a.test.x, c.test.x)
    assert a.train.x.shape[1:] == (1, 16, 16) and a.num_classes == 10
    assert f"{len(a.train)} train / {len(a.val)} val / {len(a.test)} test" in a.description
    from adderconv.data import split_indices as _split
    parts = _split(1797, 0, 0.1, 0.2)
    assert sorted(torch.cat(parts).tolist()) == list(range(1797))     # disjoint and complete


def _cifar_batch(path, data, labels, protocol=2):
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"synthetic", b"labels": list(labels), b"data": data,
                     b"filenames": [b"x.png"] * len(labels)}, f, protocol=protocol)


def test_cifar10_directory_round_trips_pixels_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    batches = [(rng.integers(0, 256, (20, 3072), dtype=np.uint8), rng.integers(0, 10, 20)) for _ in range(3)]
    for i, (d, y) in enumerate(batches[:2], 1):
        _cifar_batch(root / f"data_batch_{i}", d, y, protocol=2 if i == 1 else 4)
    _cifar_batch(root / "test_batch", *batches[2])
    data = load_data(str(tmp_path), (3, 32, 32), val_fraction=0.25)
    assert len(data.train) == 30 and len(data.val) == 10 and len(data.test) == 20
    assert data.augment == "crop_flip" and "CIFAR-10" in data.description
    # The test set is test_batch in order, each channel an affine map (train mean/std) of the raw bytes.
    expected = torch.from_numpy(batches[2][0]).float().view(-1, 3, 32, 32) / 255
    assert torch.equal(data.test.y, torch.from_numpy(batches[2][1]))
    for c in range(3):
        pair = torch.stack([data.test.x[:, c].flatten(), expected[:, c].flatten()])
        assert torch.corrcoef(pair)[0, 1] > 0.99999


def test_cifar_loader_refuses_code_in_the_pickle(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    root = tmp_path / "c"
    root.mkdir()
    with open(root / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": [0]}, f)
    with pytest.raises(AdderconvError, match="refusing"):
        safe_unpickle(root / "data_batch_1")
    assert not (tmp_path / "pwned").exists()


def _png(path, array):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_labels_follow_class_folders(tmp_path):
    for k, cls in enumerate(("ants", "bees", "cats")):
        for i in range(6):
            _png(tmp_path / cls / f"{i}.png", np.full((10, 12, 3), 40 * k + i, dtype=np.uint8))
    data = load_data(f"imagefolder:{tmp_path}", (3, 8, 8), val_fraction=0.2, test_fraction=0.2)
    assert data.num_classes == 3 and len(data.train) + len(data.val) + len(data.test) == 18
    # An image's class is its folder, and its pixels come back (constant image -> constant tensor).
    for i, (path, _) in enumerate(data.train.items):
        x, y = data.train[i]
        assert x.shape == (3, 8, 8)
        assert int(y) == ("ants", "bees", "cats").index(os.path.basename(os.path.dirname(path)))
        assert torch.allclose(x, x[:, :1, :1].expand_as(x))


def test_image_folder_with_explicit_train_val_test(tmp_path):
    for part, n in (("train", 4), ("val", 2), ("test", 3)):
        for cls in ("a", "b"):
            for i in range(n):
                _png(tmp_path / part / cls / f"{i}.png", np.zeros((6, 6), dtype=np.uint8))
    data = load_data(str(tmp_path), (1, 6, 6))
    assert (len(data.train), len(data.val), len(data.test)) == (8, 4, 6)
    assert "folders train/, val/, test/" in data.description


def test_sr_patches_and_bicubic_degradation(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(5):
        _png(tmp_path / f"im{i}.png", rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    data = load_data(f"sr:{tmp_path}", (1, 16, 16), val_fraction=0.25, test_fraction=0.25)
    assert data.task == "sr" and data.scale == 2
    x, y = data.train.x, data.train.y
    assert x.shape == y.shape and x.shape[1:] == (1, 16, 16) and len(x) > 0 and len(data.test) > 0
    # The input is the target downscaled x2 and upscaled back (independent recomputation with antialias).
    lr = F.interpolate(y, scale_factor=0.5, mode="bicubic", antialias=True, align_corners=False)
    up = F.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 1)
    torch.testing.assert_close(x, up)
    assert not torch.allclose(x, y)
    flat = torch.full((1, 1, 8, 8), 0.3)
    torch.testing.assert_close(degrade_bicubic(flat, 2), flat)


def test_sr_skimage_samples_hold_out_test_images():
    data = load_data("sr:skimage", (1, 32, 32), limit=8)
    assert len(data.train) == 8 and "test coins, clock, moon" in data.description


def test_augmentation_is_reproducible_and_label_preserving():
    x, y = torch.randn(6, 3, 8, 8), torch.arange(6)
    a = augment_batch("crop_flip", x, y, torch.Generator().manual_seed(3))
    b = augment_batch("crop_flip", x, y, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], y)
    hr = torch.randn(4, 1, 5, 5)
    xs, ys = augment_batch("flip", hr.clone(), hr.clone(), torch.Generator().manual_seed(0))
    assert torch.equal(xs, ys)   # SR: input and target flip together


def test_unknown_sources_are_clear_errors(tmp_path):
    with pytest.raises(AdderconvError, match="not 'digits'"):
        load_data("nope")
    with pytest.raises(AdderconvError, match="no CIFAR-10"):
        load_data(f"cifar10:{tmp_path}")
