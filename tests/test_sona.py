"""SONA against a slow, explicit implementation of equations 1 to 3."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from model import SONA


def reference_sona(module: SONA, x: torch.Tensor) -> torch.Tensor:
    """Equations 1-3 written out: explicit Ibar, explicit covariance, softmax, loops over batch."""
    b, _, h, w = x.shape
    m = module.inner
    theta = module.theta(x).reshape(b, m, h * w).transpose(1, 2)  # hw x m
    g = module.g(x).reshape(b, m, h * w).transpose(1, 2)  # hw x m
    ones = torch.ones(m, m, dtype=x.dtype)
    ibar = (torch.eye(m, dtype=x.dtype) - ones / m) / m
    out = []
    for i in range(b):
        phi = torch.einsum("pa,ab,qb->pq", theta[i], ibar, theta[i])  # eq. 1
        attention = torch.softmax(phi / math.sqrt(m), dim=-1)  # eq. 2
        z = attention @ g[i]
        out.append(z.transpose(0, 1).reshape(m, h, w))
    return x + module.p(torch.stack(out))  # eq. 3


def randomised(channels: int, reduction: int = 2) -> SONA:
    """A SONA block with every weight and BatchNorm statistic random (none at zero)."""
    module = SONA(channels, reduction).double()
    for bn in (m for m in module.modules() if isinstance(m, nn.BatchNorm2d)):
        nn.init.uniform_(bn.weight, 0.5, 1.5)
        nn.init.uniform_(bn.bias, -0.2, 0.2)
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
    return module


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize(("channels", "reduction", "size"), [(16, 2, (6, 4)), (24, 4, (5, 3))])
def test_matches_explicit_equations(mode: str, channels: int, reduction: int, size: tuple) -> None:
    module = randomised(channels, reduction).train(mode == "train")
    x = torch.randn(3, channels, *size, dtype=torch.float64)
    expected = reference_sona(module, x)
    actual = module(x)
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9)
    assert not torch.allclose(actual, x), "the attention branch must contribute"


def test_attention_map_is_row_stochastic_and_matches_reference() -> None:
    module = randomised(16).eval()
    x = torch.randn(2, 16, 6, 4, dtype=torch.float64)
    attention = module.attention(x)
    assert attention.shape == (2, 24, 24)
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 24, dtype=torch.float64))
    theta = module.theta(x).flatten(2).transpose(1, 2)
    m = module.inner
    ibar = (torch.eye(m, dtype=x.dtype) - torch.full((m, m), 1.0 / m, dtype=x.dtype)) / m
    phi = theta @ ibar @ theta.transpose(1, 2)
    torch.testing.assert_close(attention, torch.softmax(phi / math.sqrt(m), -1))


def test_covariance_is_invariant_to_a_constant_channel_shift() -> None:
    # Ibar centres over channels: adding a constant to every channel of theta(x) at a
    # position leaves the covariance, hence the attention, unchanged.
    module = randomised(16).eval()
    theta = torch.randn(2, 24, module.inner, dtype=torch.float64)
    shifted = theta + torch.randn(2, 24, 1, dtype=torch.float64)
    centred = [t - t.mean(-1, keepdim=True) for t in (theta, shifted)]
    torch.testing.assert_close(centred[0] @ centred[0].mT, centred[1] @ centred[1].mT)


def test_starts_as_identity_when_zero_initialised() -> None:
    module = SONA(32).eval()
    x = torch.randn(2, 32, 8, 4)
    torch.testing.assert_close(module(x), x)


def test_gradients_reach_theta_g_and_p() -> None:
    module = randomised(16).train()
    x = torch.randn(4, 16, 6, 4, dtype=torch.float64, requires_grad=True)
    module(x).square().sum().backward()
    for name in ("theta", "g", "p"):
        grads = [p.grad for p in getattr(module, name).parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), name
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_zero_init_still_trains_p_first() -> None:
    # With p's BatchNorm scale at zero only that scale receives gradient at first; one
    # optimiser step moves it off zero, after which theta and g learn too.
    module = SONA(16).train()
    x = torch.randn(4, 16, 6, 4)
    module(x).square().sum().backward()
    assert module.p[1].weight.grad.abs().sum() > 0


def test_submodule_names_and_shapes() -> None:
    module = SONA(64, reduction=2)
    assert isinstance(module.theta[0], nn.Conv2d) and module.theta[0].out_channels == 32
    assert isinstance(module.theta[1], nn.BatchNorm2d)
    assert isinstance(module.theta[2], nn.LeakyReLU)
    assert isinstance(module.g, nn.Conv2d) and module.g.out_channels == 32
    assert module.p[0].out_channels == 64
    with pytest.raises(ValueError, match="divisible"):
        SONA(15, reduction=2)
