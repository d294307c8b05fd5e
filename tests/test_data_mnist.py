"""The MNIST-format (idx) sources: Debian's Fashion-MNIST files when installed (CI installs them), small idx files
written here otherwise, damaged files refused in one line, the split, and the source registry."""
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from adderconv.data import load_data, register_source, sources
from adderconv.data.idx import read_idx
from adderconv.data.mnist import FASHION_MNIST_DIR
from adderconv.data.registry import _unregister
from adderconv.errors import AdderconvError


def _idx(path: Path, array: np.ndarray, *, magic: int | None = None, dims=None, gz: bool = False,
         extra: bytes = b"", cut: int = 0) -> Path:
    """Write ``array`` (uint8) as an idx file; ``magic``/``dims`` override the header, ``extra`` appends bytes,
    ``cut`` drops that many from the end."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    magic = magic if magic is not None else (0x0800 | a.ndim)
    dims = dims if dims is not None else a.shape
    blob = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + a.tobytes() + extra
    blob = blob[:len(blob) - cut]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(blob) if gz else blob)
    return path


def _images(n: int, offset: int = 0) -> np.ndarray:
    """n images of 6x5 (rows x cols: not square, so a transposition shows), each a constant value that names
    it (5 * (i + offset)), with one bright pixel at row 0, column 4."""
    a = np.repeat((5 * (np.arange(n) + offset) % 250).astype(np.uint8)[:, None, None], 6, 1).repeat(5, 2)
    a[:, 0, 4] = 255
    return a


def _set(root: Path, n_train=40, n_test=12, classes=4, gz=False, prefix="", test="t10k") -> Path:
    ext = ".gz" if gz else ""
    _idx(root / f"{prefix}train-images-idx3-ubyte{ext}", _images(n_train), gz=gz)
    _idx(root / f"{prefix}train-labels-idx1-ubyte{ext}", np.arange(n_train) % classes, gz=gz)
    _idx(root / f"{prefix}{test}-images-idx3-ubyte{ext}", _images(n_test, offset=1), gz=gz)
    _idx(root / f"{prefix}{test}-labels-idx1-ubyte{ext}", np.arange(n_test) % classes, gz=gz)
    return root


def _ids(split) -> list[float]:
    """One value per image that tells images apart (their constant region, an affine map of their id)."""
    x = split.x[:, 0, 1:, :4]        # the constant region, away from the bright pixel
    return x.flatten(1).mean(1).tolist()


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_round_trips_pixels_labels_and_the_official_test_set(tmp_path, gz):
    _set(tmp_path, gz=gz)
    data = load_data(f"mnist:{tmp_path}", (1, 6, 5), val_fraction=0.25)
    assert (len(data.train), len(data.val), len(data.test)) == (30, 10, 12)
    assert data.num_classes == 4 and data.task == "classify" and data.input_shape == (1, 6, 5)
    assert "30 train / 10 val (from 40 training images) / 12 test (official test set)" in data.description
    # The test split is t10k in file order, each pixel an affine map (the training part's mean/std) of its byte.
    expected_test = torch.from_numpy(_images(12, offset=1)).float().unsqueeze(1) / 255
    pair = torch.stack([data.test.x.flatten(), expected_test.flatten()])
    assert torch.corrcoef(pair)[0, 1] > 0.99999
    assert torch.equal(data.test.y, torch.arange(12) % 4)
    # Normalised with the training part's statistics: that part is mean 0 / std 1, the other parts are not.
    assert abs(data.train.x.mean().item()) < 1e-5 and abs(data.train.x.std().item() - 1) < 1e-4
    assert abs(data.test.x.mean().item()) > 0.01


def test_images_are_fitted_like_the_digits_source(tmp_path):
    _set(tmp_path)
    data = load_data(f"mnist:{tmp_path}", (3, 12, 10))
    assert data.train.x.shape[1:] == (3, 12, 10) and data.test.x.shape[1:] == (3, 12, 10)
    assert torch.equal(data.train.x[:, 0], data.train.x[:, 2])      # one channel copied to three
    # The bright pixel of every image stays top-right (rows x columns kept, not transposed).
    assert (data.test.x[:, 0, :2, -2:].mean() > data.test.x[:, 0, -2:, :2].mean())
    default = load_data(f"mnist:{tmp_path}")
    assert default.input_shape == (1, 28, 28)


def test_emnist_sets_are_named_by_prefix_and_turned_upright(tmp_path):
    _set(tmp_path, prefix="emnist-letters-", test="test")
    _set(tmp_path, prefix="emnist-digits-", test="test", classes=3)
    with pytest.raises(AdderconvError, match="holds 2 sets of idx files; name one: 'mnist:.*emnist-digits'"):
        load_data(f"mnist:{tmp_path}", (1, 6, 5))
    data = load_data(f"mnist:{tmp_path}/emnist-digits", (1, 5, 6))
    assert data.num_classes == 3 and "emnist-digits" in data.description
    # EMNIST stores images transposed: the bright pixel at (row 0, column 4) comes back at (row 4, column 0).
    img = data.test.x[0, 0]
    assert img.shape == (5, 6) and img.argmax().item() == 4 * 6 + 0


def test_a_bare_folder_of_idx_files_is_recognised(tmp_path):
    _set(tmp_path, gz=True)
    assert "MNIST-format idx" in load_data(str(tmp_path), (1, 6, 5)).description


def test_split_is_reproducible_disjoint_and_complete(tmp_path):
    _set(tmp_path, n_train=50)
    a, b, c = (load_data(f"mnist:{tmp_path}", (1, 6, 5), split_seed=s, val_fraction=0.2) for s in (3, 3, 4))
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y, b.val.y)
    assert not torch.equal(a.val.x, c.val.x)
    # Images are constants 0, 5, 10, ... (one per id): train and val together are each training image once.
    ids = _ids(a.train) + _ids(a.val)
    assert len(ids) == 50 and len({round(v, 4) for v in ids}) == 50
    limited = load_data(f"mnist:{tmp_path}", (1, 6, 5), split_seed=3, val_fraction=0.2, limit=7)
    assert (len(limited.train), len(limited.val), len(limited.test)) == (7, 7, 7)
    assert torch.equal(limited.test.y, a.test.y[:7])


@pytest.mark.parametrize("damage, match", [
    ("magic", "not idx images .*magic number 2049"),
    ("dtype", "magic number 2307"),
    ("truncated", "truncated: the header promises 40 x 6 x 5 = 1,200 bytes of data, the file holds 1,197"),
    ("oversized", "longer than its header says"),
    ("short header", "shorter than the header"),
    ("count", "39 labels for the 40 images"),
    ("label range", r"label 9 is out of range: the training labels run 0\.\.3"),
    ("gz garbage", "not a readable idx file"),
    ("gz cut", "not a readable idx file"),
    ("hostile header", "over the budget"),
])
def test_damaged_files_are_one_line_errors(tmp_path, damage, match):
    _set(tmp_path)
    images, labels = tmp_path / "train-images-idx3-ubyte", tmp_path / "train-labels-idx1-ubyte"
    if damage == "magic":
        _idx(images, _images(40), magic=2049)
    elif damage == "dtype":
        _idx(images, _images(40), magic=0x0903)          # signed bytes: not what we read
    elif damage == "truncated":
        _idx(images, _images(40), cut=3)
    elif damage == "oversized":
        _idx(images, _images(40), extra=b"\0")
    elif damage == "short header":
        images.write_bytes(struct.pack(">II", 2051, 40))
    elif damage == "count":
        _idx(labels, np.arange(39) % 4)
    elif damage == "label range":
        _idx(tmp_path / "t10k-labels-idx1-ubyte", np.full(12, 9))
    elif damage == "gz garbage":
        images.unlink()
        (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b" + b"not a gzip stream" * 10)
    elif damage == "gz cut":
        images.write_bytes(gzip.compress(images.read_bytes())[:-20])
    elif damage == "hostile header":                   # 2^32-1 images of 65535 x 65535: refused before allocating
        _idx(images, _images(1), dims=(2**32 - 1, 65535, 65535))
    with pytest.raises(AdderconvError, match=match) as err:
        load_data(f"mnist:{tmp_path}", (1, 6, 5))
    assert len(str(err.value).splitlines()) == 1


def test_read_idx_budget_and_missing_files(tmp_path):
    path = _idx(tmp_path / "x-idx1-ubyte", np.arange(100))
    assert read_idx(path, 1).tolist() == list(range(100))
    with pytest.raises(AdderconvError, match="over the budget of 99 bytes"):
        read_idx(path, 1, max_bytes=99)
    _idx(tmp_path / "train-images-idx3-ubyte", _images(3))
    with pytest.raises(AdderconvError, match="no MNIST-format idx files.*'train_labels'"):
        load_data(f"mnist:{tmp_path}", (1, 6, 5))
    with pytest.raises(AdderconvError, match="not a directory of idx files"):
        load_data(f"mnist:{tmp_path}/nowhere/deeper", (1, 6, 5))


def test_a_damaged_file_is_one_line_and_exit_2_in_the_cli(tmp_path, run_cli):
    _set(tmp_path)
    _idx(tmp_path / "t10k-images-idx3-ubyte", _images(12), cut=1)
    code, _, err = run_cli("finetune", "lenet5_bn_adder", "--data", f"mnist:{tmp_path}", "-o", tmp_path / "o")
    assert code == 2 and "truncated" in err and len(err.strip().splitlines()) == 1, err


def test_fashion_mnist_missing_names_the_package(monkeypatch, tmp_path):
    import adderconv.data.mnist as mnist

    monkeypatch.setattr(mnist, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(AdderconvError, match="apt-get install dataset-fashion-mnist.*'mnist:DIR'"):
        load_data("fashion-mnist")


@pytest.mark.slow
def test_real_fashion_mnist():
    """Debian's dataset-fashion-mnist (CI installs it): 60,000 / 10,000 images, 6,000 / 1,000 per class."""
    if not FASHION_MNIST_DIR.is_dir():
        pytest.fail(f"{FASHION_MNIST_DIR} is missing: this test needs the real files; "
                    f"install them with: apt-get install dataset-fashion-mnist")
    data = load_data("fashion-mnist", split_seed=0)
    assert data.num_classes == 10 and data.input_shape == (1, 28, 28)
    assert (len(data.train), len(data.val), len(data.test)) == (54000, 6000, 10000)
    labels = torch.cat([data.train.y, data.val.y])
    assert torch.bincount(labels).tolist() == [6000] * 10
    assert torch.bincount(data.test.y).tolist() == [1000] * 10
    # Pixel statistics: the raw images average about 0.286 of full scale (std 0.353), the published figures;
    # normalised with the training part's own, the training part is mean 0 / std 1 and the test set close to it.
    raw = read_idx(FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz", 3)
    assert raw.shape == (60000, 28, 28)
    assert abs(raw.mean() / 255 - 0.2860) < 0.001 and abs(raw.std() / 255 - 0.3530) < 0.001
    assert abs(data.train.x.mean().item()) < 1e-4 and abs(data.train.x.std().item() - 1) < 1e-3
    assert abs(data.test.x.mean().item()) < 0.05 and abs(data.test.x.std().item() - 1) < 0.05
    # A known fact of the official test set: its first label is 9 (ankle boot), its second 2 (pullover).
    assert data.test.y[:2].tolist() == [9, 2]


def test_registry_refuses_duplicates_and_lists_sources():
    names = [s.name for s in sources()]
    assert names[0] == "digits" and {"cifar10", "imagefolder", "sr", "mnist", "fashion-mnist"} <= set(names)
    with pytest.raises(ValueError, match="'mnist' is already registered"):
        register_source("mnist", usage=("mnist:DIR",))(lambda req: None)
    try:
        register_source("toy", usage=("toy",), shape=(1, 4, 4))(lambda req: req.shape)
        assert load_data("toy") == (1, 4, 4) and load_data("toy:x", (2, 3, 3)) == (2, 3, 3)
    finally:
        _unregister("toy")
    with pytest.raises(AdderconvError, match="unknown source kind 'toy'.*'mnist:DIR'.*'fashion-mnist'"):
        load_data("toy:x")
    with pytest.raises(AdderconvError, match="not 'digits', .*'mnist:DIR', 'fashion-mnist'.*nor an existing"):
        load_data("nope")
