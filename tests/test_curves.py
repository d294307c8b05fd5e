"""finetune's training curves: curves.html beside metrics.json each epoch (teacher's line where there is one),
TensorBoard scalars with --tensorboard, and clear errors or notes when the optional packages are missing."""
import json
import re
import sys

import pytest

from adderconv.cli import main
from adderconv.training.curves import EpochLog, curves_html

HISTORY = [{"epoch": 1, "lr": 0.1, "train_loss": 1.5, "val_loss": 1.4, "val_acc": 0.5, "train_acc": 0.45,
            "images_per_s": 100.0},
           {"epoch": 2, "lr": 0.05, "train_loss": 0.9, "val_loss": 1.0, "val_acc": 0.7, "train_acc": 0.72,
            "images_per_s": 110.0}]


def _no_external_refs(text: str) -> None:
    assert not re.search(r"(src|href)\s*=\s*['\"]?\s*(https?:)?//", text, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(https?:)?//", text, re.I) and "<script src" not in text
    assert "<link" not in text


def test_page_has_both_charts_the_teacher_line_and_every_epoch():
    pytest.importorskip("matplotlib")
    text = curves_html(HISTORY, metric="acc", teacher=0.8, title="net")
    _no_external_refs(text)
    assert text.count("<svg") == 1 and "teacher (val acc)" in text and "val loss" in text
    assert "epoch 2: val acc 70.00%, teacher 80.00%" in text
    assert re.findall(r"<tr><td>(\d+)</td>", text) == ["1", "2"]
    sr = curves_html([{"epoch": 1, "train_loss": 0.01, "val_loss": 0.02, "val_psnr": 30.5}], metric="psnr")
    assert "30.50 dB" in sr and "teacher" not in sr
    with pytest.raises(ValueError):
        curves_html([], metric="acc")


def test_without_matplotlib_the_run_goes_on_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    log = EpochLog(tmp_path, metric="acc")
    log.epoch(HISTORY)
    assert not (tmp_path / "curves.html").exists()
    assert log.notes and "adderconv[report]" in log.notes[0]


def test_finetune_writes_curves_and_tensorboard_and_the_teacher_line_leaves_training_alone(tmp_path):
    pytest.importorskip("matplotlib")
    tb = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    import torch

    from adderconv import get_model
    from adderconv.training import finetune
    from adderconv.data import load_data

    data = load_data("digits", (1, 32, 32), limit=96)

    def run(**kw):
        torch.manual_seed(0)
        student, teacher = get_model("lenet5_bn_adder"), get_model("lenet5_bn")
        return finetune(student, data, teacher=teacher, epochs=2, batch_size=32, energy=False, **kw)

    out = tmp_path / "run"
    logged = run(out=out, tensorboard=tmp_path / "tb")
    plain = run()                                 # no curves, no teacher evaluation on the validation split
    assert [r["train_loss"] for r in logged.history] == [r["train_loss"] for r in plain.history]
    metrics = json.loads((out / "metrics.json").read_text())
    page = (out / "curves.html").read_text()
    _no_external_refs(page)
    assert "teacher (val acc)" in page
    assert re.findall(r"<tr><td>(\d+)</td>", page) == [str(r["epoch"]) for r in metrics["epochs"]]
    acc = tb.EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert {"train_loss", "val_loss", "val_acc", "lr", "teacher_val_acc"} <= set(acc.Tags()["scalars"])
    assert [(s.step, pytest.approx(s.value)) for s in acc.Scalars("val_acc")] == \
        [(r["epoch"], r["val_acc"]) for r in metrics["epochs"]]


def test_missing_tensorboard_is_one_line_before_any_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    out = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["adderconv", "finetune", "lenet5_bn_adder", "--epochs", "1", "--limit", "64",
                                      "-o", str(out), "--tensorboard", str(tmp_path / "tb")])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "pip install 'adderconv[tensorboard]'" in err
    assert not (out / "metrics.json").exists() and not (tmp_path / "tb").exists()
