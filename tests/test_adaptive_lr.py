"""Adaptive learning rate: the formula, its placement, and correctness under accumulation and AMP."""
import math

import pytest
import torch
from torch import nn

from adderconv import AdaptiveLR, AdderConv2d, adaptive_scale


def _model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), AdderConv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6),
                         nn.Flatten(), nn.Linear(6 * 36, 2))


def _loss(model, x):
    return model(x).pow(2).mean()


def test_apply_rescales_only_adder_weights_to_eta_sqrt_k():
    model, x = _model(), torch.randn(4, 3, 6, 6)
    _loss(model, x).backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    AdaptiveLR(model, eta=0.2).apply()
    for name, p in model.named_parameters():
        if name == "1.weight":
            assert math.isclose(p.grad.norm().item(), 0.2 * math.sqrt(p.numel()), rel_tol=1e-5)
            cos = torch.nn.functional.cosine_similarity(p.grad.flatten(), before[name].flatten(), dim=0)
            assert cos.item() > 0.9999
        else:
            assert torch.equal(p.grad, before[name])


def test_gradient_accumulation_normalises_the_sum():
    """Two micro-batches accumulated then rescaled == one big batch rescaled (the default placement)."""
    x = torch.randn(8, 3, 6, 6)
    big = _model()
    big.train()
    (_loss(big, x[:4]) + _loss(big, x[4:])).backward()
    AdaptiveLR(big).apply()
    acc = _model()
    for chunk in (x[:4], x[4:]):
        _loss(acc, chunk).backward()
    AdaptiveLR(acc).apply()
    torch.testing.assert_close(acc[1].weight.grad, big[1].weight.grad, rtol=1e-5, atol=1e-6)


def test_backward_placement_reproduces_the_reference_per_call_normalisation():
    x = torch.randn(8, 3, 6, 6)
    model = _model()
    alr = AdaptiveLR(model, placement="backward")
    _loss(model, x[:4]).backward()
    _loss(model, x[4:]).backward()
    expected = torch.zeros_like(model[1].weight)
    ref = _model()
    for chunk in (x[:4], x[4:]):
        ref.zero_grad()
        _loss(ref, chunk).backward()
        expected += adaptive_scale(ref[1].weight.grad, 0.2)
    torch.testing.assert_close(model[1].weight.grad, expected, rtol=1e-5, atol=1e-6)
    alr.remove()


def test_step_with_grad_scaler_equals_plain_step():
    """With AMP's GradScaler the transform must see unscaled gradients: same update as without scaling."""
    x = torch.randn(4, 3, 6, 6)
    plain, scaled = _model(), _model()
    opt_a = torch.optim.SGD(plain.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(scaled.parameters(), lr=0.1)
    _loss(plain, x).backward()
    AdaptiveLR(plain).step(opt_a)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(_loss(scaled, x)).backward()
    AdaptiveLR(scaled).step(opt_b, scaler)
    scaler.update()
    for pa, pb in zip(plain.parameters(), scaled.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_shared_layer_counted_once_and_bad_arguments():
    shared = AdderConv2d(2, 2, 1)
    model = nn.Sequential(shared, shared)
    assert len(AdaptiveLR(model).params) == 1
    with pytest.raises(ValueError):
        AdaptiveLR(model, eta=0)
    with pytest.raises(ValueError):
        AdaptiveLR(model, placement="optimizer")


def test_zero_gradient_stays_zero():
    assert torch.equal(adaptive_scale(torch.zeros(3, 3), 0.2), torch.zeros(3, 3))
