"""What a new user does with `adderconv finetune`: train on their own 2-class images, reload, convert, export.

The images are scikit-learn's digits (zeros and ones) written as an ImageFolder of PNG files.
"""
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, safe_open

import adderconv
from adderconv import AdderconvError
from adderconv.io import write_json
from adderconv.data import load_data

FAST = ["--epochs", "1", "--limit", "48", "--batch-size", "16", "--quiet"]


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """An ImageFolder with two classes (digits 0 and 1 as 32x32 PNGs)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("faces")
    d = load_digits()
    for label, name in ((0, "zero"), (1, "one")):
        (root / name).mkdir()
        for i, img in enumerate(d.images[d.target == label][:30]):
            Image.fromarray((img * 255 / 16).astype(np.uint8)).resize((32, 32)).save(root / name / f"{i}.png")
    return root


@pytest.mark.slow
def test_two_class_round_trip_finetune_finetune_energy_export_verify(tmp_path, faces, run_cli):
    cnn, conv = tmp_path / "cnn", tmp_path / "conv"
    data = f"imagefolder:{faces}"
    code, out, err = run_cli("finetune", "lenet5_bn", "--no-convert", "--data", data, "-o", cnn, *FAST)
    assert code == 0, err
    with safe_open(str(cnn / "model.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert meta["adderconv.arch"] == "lenet5_bn" and '"num_classes": 2' in meta["adderconv.arch_kwargs"]
    assert adderconv.load_model(cnn / "model.safetensors")[-1].out_features == 2
    # The natural next step: convert the CNN just trained and distil from it.
    code, out, err = run_cli("finetune", cnn / "model.safetensors", "--data", f"imagefolder:{faces}", "-o", conv, *FAST)
    assert code == 0, err
    assert "teacher: the original CNN" in out
    student = conv / "model.safetensors"
    net = adderconv.load_model(student)
    assert net[-1].out_features == 2 and any(isinstance(m, adderconv.AdderConv2d) for m in net.modules())
    code, out, err = run_cli("energy", student)
    assert code == 0 and "Totals" in out, err
    onnx_path = tmp_path / "student.onnx"
    code, out, err = run_cli("export", student, "-o", onnx_path)
    assert code == 0, err
    code, out, err = run_cli("verify", onnx_path, "--against", student)
    assert code == 0 and "OK" in out, out + err


def test_same_seed_same_run_including_the_initial_weights(tmp_path, run_cli):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        code, _, err = run_cli("finetune", "lenet5_bn_adder", "--seed", seed, "-o", tmp_path / name, *FAST)
        assert code == 0, err
        runs[name] = load_file(str(tmp_path / name / "model.safetensors"))
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not all(torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


def test_resume_refuses_other_data_or_an_added_teacher(tmp_path, run_cli):
    out = tmp_path / "run"
    assert run_cli("finetune", "lenet5_bn_adder", "-o", out, *FAST)[0] == 0
    for extra, what in ((["--limit", "32"], "data"), (["--split-seed", "3"], "data"),
                        (["--teacher", "lenet5_bn"], "teacher")):
        args = [a for a in FAST if a not in ("--limit", "48")] if extra[0] == "--limit" else FAST
        code, _, err = run_cli("finetune", "lenet5_bn_adder", "-o", out, "--resume", *args, *extra)
        assert code == 2 and "settings differ" in err and what in err, err
    assert run_cli("finetune", "lenet5_bn_adder", "-o", out, "--resume", *FAST)[0] == 0


def test_a_finished_run_is_not_overwritten_by_accident(tmp_path, run_cli):
    out = tmp_path / "run"
    assert run_cli("finetune", "lenet5_bn_adder", "-o", out, *FAST)[0] == 0
    before = (out / "result.json").read_bytes()
    code, _, err = run_cli("finetune", "lenet5_bn_adder", "-o", out, *FAST)
    assert code == 2 and "finished run" in err and (out / "result.json").read_bytes() == before
    assert run_cli("finetune", "lenet5_bn_adder", "-o", out, "--overwrite", *FAST)[0] == 0


def test_stale_temporary_files_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "m.json"
    dead = tmp_path / ".m.json.999999999.abc.tmp"            # a writer that was killed (no such process)
    alive = tmp_path / f".m.json.{__import__('os').getpid()}.xyz.tmp"   # one still writing
    dead.write_text("partial")
    alive.write_text("partial")
    write_json(target, {"a": 1})
    assert target.exists() and not dead.exists() and alive.exists()
    with pytest.raises(AdderconvError, match="non-finite"):
        write_json(target, {"a": float("nan")})


def _batch(path, data, labels):
    with open(path, "wb") as f:
        pickle.dump({b"labels": labels, b"data": data}, f, protocol=2)


@pytest.mark.parametrize("case, msg", [
    ("out_of_range", "labels must be 0-9"), ("float_labels", "integers"), ("object_data", "uint8"),
    ("too_few_labels", "64 integers"), ("directory", "directory"),
])
def test_bad_cifar_batches_are_refused(tmp_path, case, msg):
    root = tmp_path / "cifar"
    root.mkdir()
    data = np.zeros((64, 3072), np.uint8)
    labels = list(range(10)) * 6 + [0, 1, 2, 3]
    _batch(root / "test_batch", data, labels)
    if case == "directory":                                   # a folder where a batch file should be
        _batch(root / "data_batch_1", data, labels)
        (root / "data_batch_2").mkdir()
    else:
        bad = {"out_of_range": (data, [12] + labels[1:]), "float_labels": (data, [0.5] * 64),
               "object_data": (np.array([[None] * 3072] * 64, dtype=object), labels),
               "too_few_labels": (data, labels[:10])}[case]   # 64 images, 10 labels
        _batch(root / "data_batch_1", *bad)
    with pytest.raises(AdderconvError, match=msg):
        load_data(f"cifar10:{root}", (3, 32, 32))


def test_image_folders_with_a_non_image_or_a_decompression_bomb_are_refused(tmp_path, faces):
    import shutil
    import struct
    import zlib

    root = tmp_path / "imgs"
    shutil.copytree(faces, root)
    (root / "one" / "notes.png").write_text("not an image")
    with pytest.raises(AdderconvError, match="notes.png: not a readable image"):
        load_data(f"imagefolder:{root}", (1, 32, 32))
    (root / "one" / "notes.png").unlink()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)          # 3.6 gigapixels, a 60-byte file
    (root / "one" / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                                            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    with pytest.raises(AdderconvError, match="bomb.png: refusing an image this large"):
        load_data(f"imagefolder:{root}", (1, 32, 32))


def test_sample_limit_must_be_positive():
    with pytest.raises(AdderconvError, match="at least 1"):
        load_data("digits", (1, 32, 32), limit=-1)


def test_a_quantised_model_is_evaluated_by_finetune_and_saved_quantised(tmp_path, run_cli):
    """`finetune --epochs 0` tests a model as it is (the int8 one included) and writes a file that loads back
    quantised; training an int8 model is refused."""
    import json

    from adderconv.quant import is_quantized

    q = tmp_path / "q.safetensors"
    code, _, err = run_cli("quantize", "lenet5_bn_adder", "--data", "digits", "--limit", "64", "-o", q,
                           "--json", tmp_path / "q.json")
    assert code == 0, err
    ev = tmp_path / "ev"
    code, _, err = run_cli("finetune", q, "--no-convert", "--epochs", "0", "--data", "digits", "--limit", "64",
                           "-o", ev, "--quiet")
    assert code == 0, err
    quantised = json.loads((tmp_path / "q.json").read_text())
    assert json.loads((ev / "result.json").read_text())["test"]["acc"] == quantised["quant_test"]
    again = adderconv.load_model(ev / "model.safetensors")
    x = torch.randn(4, 1, 32, 32)
    assert is_quantized(again) and torch.equal(again(x), adderconv.load_model(q)(x))
    code, _, err = run_cli("finetune", q, "--no-convert", "--epochs", "1", "--data", "digits", "-o", tmp_path / "t")
    assert code == 2 and "quantised model is for inference" in err
    # as the README says, without --no-convert too: a quantised model is converted already, so nothing converts it
    plain = tmp_path / "plain"
    code, out, err = run_cli("finetune", q, "--epochs", "0", "--data", "digits", "--limit", "64", "-o", plain,
                             "--quiet")
    assert code == 0, err
    assert "converted" not in out + err
    assert json.loads((plain / "result.json").read_text())["test"]["acc"] == quantised["quant_test"]
    assert torch.equal(adderconv.load_model(plain / "model.safetensors")(x), adderconv.load_model(q)(x))
    code, _, err = run_cli("finetune", q, "--epochs", "1", "--data", "digits", "-o", tmp_path / "t2")
    assert code == 2 and "quantised model is for inference" in err
