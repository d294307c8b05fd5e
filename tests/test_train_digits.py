"""A short real training run: adder LeNet-5-BN on scikit-learn's digits learns with AdderNet's rules."""
import pytest
import torch
import torch.nn.functional as F

from adderconv import AdaptiveLR, get_model


@pytest.mark.slow
def test_adder_lenet_learns_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=32, mode="bilinear", align_corners=False)    # 8x8 -> LeNet's 32x32
    y = torch.tensor(digits.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, test = perm[:1400], perm[1400:]
    model = get_model("lenet5_bn_adder")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    alr = AdaptiveLR(model, eta=0.2)
    losses = []
    for _ in range(6):
        model.train()
        for idx in train[torch.randperm(len(train))].split(64):
            opt.zero_grad()
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            alr.step(opt)
            losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        acc = (model(x[test]).argmax(1) == y[test]).float().mean().item()
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, f"loss did not fall: {first:.3f} -> {last:.3f}"
    assert acc > 0.85, f"test accuracy {acc:.3f} (chance is 0.1)"
