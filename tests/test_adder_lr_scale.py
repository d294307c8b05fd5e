"""finetune(adder_lr_scale=s): the adder weights' learning rate is s * lr; every other parameter's is lr."""
import copy

import pytest
import torch
from torch import nn

from adderconv import AdderConv2d
from adderconv.errors import AdderconvError
from adderconv.training import finetune, load_data


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         AdderConv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, 10))


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", (1, 16, 16), limit=256)


def _one_step(model, data, optimizer, scale):
    """The parameter changes of one training step (the whole training split is one batch)."""
    before = copy.deepcopy(model.state_dict())
    finetune(model, data, epochs=1, batch_size=10_000, optimizer=optimizer, lr=0.01, weight_decay=0.0,
             energy=False, adder_lr_scale=scale)
    return {k: model.state_dict()[k] - before[k] for k, p in model.named_parameters()}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_adder_weights_move_scale_times_as_far(digits, optimizer):
    # On the first step neither optimizer has history: SGD moves -lr * g, Adam -lr * g / (|g| + eps). The
    # gradients of the two runs are the same (same weights, same batch), so the adder layer's step is exactly
    # `scale` times the unscaled one and every other parameter's step is unchanged.
    base = _one_step(tiny(), digits, optimizer, 1.0)
    scaled = _one_step(tiny(), digits, optimizer, 4.0)
    assert base["3.weight"].abs().max() > 0
    for name in base:
        want = 4.0 * base[name] if name == "3.weight" else base[name]
        # atol: the steps (~1e-3) are differences of float32 weights of order 1, rounded to ~1e-7 each
        torch.testing.assert_close(scaled[name], want, rtol=1e-3, atol=2e-6, msg=name)


def test_resume_refuses_a_changed_adder_lr_scale(tmp_path, digits):
    finetune(tiny(), digits, epochs=2, batch_size=64, energy=False, out=tmp_path, adder_lr_scale=1.0)
    with pytest.raises(AdderconvError, match="adder_lr_scale"):
        finetune(tiny(), digits, epochs=2, batch_size=64, energy=False, out=tmp_path, resume=True,
                 adder_lr_scale=3.0)


def test_a_checkpoint_without_the_setting_resumes_as_scale_one(tmp_path, digits):
    finetune(tiny(), digits, epochs=2, batch_size=64, energy=False, out=tmp_path)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    del state["settings"]["adder_lr_scale"]       # as written before the option existed
    state["epoch"], state["history"] = 1, state["history"][:1]   # as if stopped after epoch 1
    torch.save(state, tmp_path / "checkpoint.pt")
    res = finetune(tiny(), digits, epochs=2, batch_size=64, energy=False, out=tmp_path, resume=True)
    assert len(res.history) == 2
    with pytest.raises(AdderconvError, match="adder_lr_scale"):
        finetune(tiny(), digits, epochs=2, batch_size=64, energy=False, out=tmp_path, resume=True,
                 adder_lr_scale=2.0)
