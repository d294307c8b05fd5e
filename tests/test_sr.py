"""AdderSR parts: the power activation and the self-shortcut block."""
import torch

from adderconv import AdderSRBlock, PowerActivation


def test_power_activation_values_and_learnable_alpha():
    act = PowerActivation(3, init=2.0)
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0]).view(1, 1, 5).expand(2, 3, 5).clone()
    expected = torch.sign(x) * x.abs() ** 2
    torch.testing.assert_close(act(x), expected)
    act(x).sum().backward()
    assert act.alpha.grad is not None and act.alpha.grad.shape == (3,)


def test_power_activation_gradients_finite_near_zero():
    act = PowerActivation(1, init=0.5, per="layer")
    x = torch.tensor([0.0, 1e-12, -1e-12, 1e-3], requires_grad=True)
    act(x).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(act.alpha.grad).all()


def test_block_order_adder_bn_shortcut_relu_power():
    block = AdderSRBlock(4).eval()
    x = torch.randn(2, 4, 6, 6)
    expected = block.power(torch.relu(block.bn(block.body(x)) + x))
    torch.testing.assert_close(block(x), expected)
    no_shortcut = AdderSRBlock(4, shortcut=False, power=False).eval()
    torch.testing.assert_close(no_shortcut(x), torch.relu(no_shortcut.bn(no_shortcut.body(x))))
