"""The fine-tuning loop: it learns, resumes bit-for-bit, stops on NaN, refuses changed settings; KD loss."""
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adderconv import AdderConv2d
from adderconv.data import load_data
from adderconv.training import TrainingDiverged, finetune, kd_loss, load_checkpoint
from adderconv.errors import AdderconvError


def tiny(adder: bool = True, seed: int = 0) -> nn.Module:
    """A small digits net at 16x16: conv, adder (or conv), BN after each, linear head. Runs in milliseconds."""
    torch.manual_seed(seed)
    mid = AdderConv2d(8, 16, 3, stride=2, padding=1) if adder else nn.Conv2d(8, 16, 3, stride=2, padding=1)
    return nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         mid, nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(64, 10))


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", (1, 16, 16), limit=512)


def test_a_short_run_learns(digits):
    res = finetune(tiny(), digits, epochs=4, batch_size=32, lr=0.1, energy=False)
    h = res.history
    assert len(h) == 4 and h[-1]["train_loss"] < 0.5 * h[0]["train_loss"], h
    assert res.test["acc"] > 0.6, res.test          # chance is 0.1
    assert res.test["n"] == len(digits.test)


def test_kd_loss_matches_its_definition():
    s, t, y = torch.randn(5, 10), torch.randn(5, 10), torch.randint(0, 10, (5,))
    T, a = 3.0, 0.7
    p_t = F.softmax(t / T, 1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / T, 1))).sum(1).mean() * T * T
    torch.testing.assert_close(kd_loss(s, t, y, alpha=a, temperature=T), (1 - a) * F.cross_entropy(s, y) + a * kl)


class Killed(Exception):
    pass


def _kill_in_epoch(model, epoch, steps_per_epoch):
    """Make ``model`` die a few training steps into ``epoch`` (1-based), as a killed process would."""
    count = {"n": 0}

    def hook(module, inputs):
        if module.training:
            count["n"] += 1
            if count["n"] > (epoch - 1) * steps_per_epoch + 2:
                raise Killed

    model[0].register_forward_pre_hook(hook)
    return model


def test_resume_is_bit_for_bit(tmp_path, digits):
    teacher = tiny(adder=False, seed=1).eval()
    kw = dict(teacher=teacher, epochs=3, batch_size=64, lr=0.05, energy=False, seed=3)
    straight = finetune(tiny(), digits, out=tmp_path / "a", **kw)
    with pytest.raises(Killed):     # killed during epoch 2: the epoch-1 checkpoint survives
        finetune(_kill_in_epoch(tiny(), 2, len(digits.train) // 64), digits, out=tmp_path / "b", **kw)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["epoch"] == 1
    torch.manual_seed(12345)        # a new process: different global RNG, fresh model object
    resumed = finetune(tiny(seed=7), digits, out=tmp_path / "b", resume=True, **kw)
    for (k, v), (k2, v2) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    assert [h["train_loss"] for h in straight.history] == [h["train_loss"] for h in resumed.history]
    assert straight.test == resumed.test


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, digits):
    model = tiny()
    steps = {"n": 0}

    def poison(module, inputs, output):
        if module.training:
            steps["n"] += 1
            if steps["n"] > 10:      # epoch 2 (8 steps per epoch)
                return output * float("nan")
        return output

    model[3].register_forward_hook(poison)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 2.*Last good checkpoint: .*after epoch 1"):
        finetune(model, digits, epochs=3, batch_size=64, out=tmp_path, energy=False)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert len(json.loads((tmp_path / "metrics.json").read_text())["epochs"]) == 1
    assert not (tmp_path / "model.safetensors").exists()


def test_resume_refuses_changed_settings(tmp_path, digits):
    finetune(tiny(), digits, epochs=1, batch_size=64, out=tmp_path, energy=False)
    with pytest.raises(AdderconvError, match="settings differ"):
        finetune(tiny(), digits, epochs=2, batch_size=64, out=tmp_path, resume=True, energy=False)
    with pytest.raises(AdderconvError, match="no checkpoint"):
        finetune(tiny(), digits, epochs=1, out=tmp_path / "none", resume=True, energy=False)


def test_outputs_on_disk(tmp_path, digits):
    res = finetune(tiny(), digits, epochs=1, batch_size=128, out=tmp_path, energy=False, arch=None)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["split"] == digits.description and metrics["epochs"][0]["epoch"] == 1
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["test"]["acc"] == res.test["acc"]
    from safetensors.torch import load_file
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in res.model.state_dict().items())
