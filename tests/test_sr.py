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


def test_power_activation_gradients_match_float64_autograd_of_the_formula():
    # The training path has a hand-written backward; gradcheck compares it with finite differences, and the
    # plain formula's autograd (what inference and export use) must agree with it in value and gradient.
    torch.manual_seed(0)
    for per, channels in (("channel", 3), ("layer", 1)):
        act = PowerActivation(channels, per=per).double()
        act.alpha.data.uniform_(0.5, 2.0)
        x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
        x = (x + 0.2 * x.sign()).requires_grad_()       # keep |x| away from the eps clamp's kink
        torch.autograd.gradcheck(act, (x,))
        y = act(x)
        g = torch.randn_like(y)
        gx, ga = torch.autograd.grad(y, (x, act.alpha), g)
        alpha = act.alpha.view(1, -1, 1, 1) if per == "channel" else act.alpha
        ref = torch.sign(x) * x.abs().pow(alpha)
        rx, ra = torch.autograd.grad(ref, (x, act.alpha), g)
        torch.testing.assert_close(y, ref)
        torch.testing.assert_close(gx, rx)
        torch.testing.assert_close(ga, ra)
    with torch.no_grad():
        torch.testing.assert_close(act(x), y)                # the inference path: the same values


def test_power_activation_gradient_is_zero_where_the_clamp_holds():
    act = PowerActivation(1, init=0.5, per="layer")
    x = torch.tensor([0.0, 1e-9, -1e-9, 0.25], requires_grad=True)
    act(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([0.0, 0.0, 0.0, 0.5 * 0.25 ** -0.5]))
