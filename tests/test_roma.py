"""RoMa's path-specific smoothness: the perturbation points to the pre-trained weights, and one
optimiser step uses g = (1 - alpha) grad L(theta) + alpha grad L(theta + r d / ||d||)."""
from __future__ import annotations

import pytest
import torch

from bench.errors import ConfigError
from methods.roma import RoMa, perturbation


def test_perturbation_points_to_the_pretrained_weights():
    gen = torch.Generator().manual_seed(0)
    theta0 = [torch.randn(5, 3, generator=gen), torch.randn(7, generator=gen)]
    theta = [t + torch.randn(t.shape, generator=gen) for t in theta0]
    delta = perturbation(theta, theta0, 0.05, "global")
    flat = torch.cat([d.flatten() for d in delta])
    towards = torch.cat([(a - b).flatten() for a, b in zip(theta0, theta)])
    assert flat.norm() == pytest.approx(0.05, rel=1e-5) and flat.abs().sum() > 0
    assert torch.nn.functional.cosine_similarity(flat, towards, dim=0) == pytest.approx(1.0, abs=1e-6)
    # a step of length r from theta along the perturbation lands closer to theta0
    assert sum(float((t + d - t0).norm() ** 2) for t, d, t0 in zip(theta, delta, theta0)) < \
        sum(float((t - t0).norm() ** 2) for t, t0 in zip(theta, theta0))
    per_tensor = perturbation(theta, theta0, 0.05, "per_tensor")
    assert all(float(d.norm()) == pytest.approx(0.05, rel=1e-5) for d in per_tensor)


def test_no_perturbation_before_the_weights_move():
    theta0 = [torch.ones(3)]
    assert torch.equal(perturbation([torch.ones(3)], theta0, 0.05, "global")[0], torch.zeros(3))


@pytest.mark.parametrize("direction", ["pretrained", "none"])
def test_one_step_mixes_the_two_gradients(direction):
    """On L(theta) = sum(theta^3), grad = 3 theta^2, so the update's gradient is known in closed form."""
    method = RoMa(r=0.5, alpha=0.4, direction=direction, same_batch=direction == "pretrained", grad_clip=1e9)
    theta0 = torch.tensor([1.0, -2.0, 0.5])
    param = torch.nn.Parameter(torch.tensor([1.5, -1.0, 0.0]))
    step = method._step_fn(None, [theta0], lambda: None, lambda _batch: (param ** 3).sum())
    opt = torch.optim.SGD([param], lr=0.0)  # lr 0: the step leaves theta in place; inspect the gradient
    step(1, [param], opt)
    theta = param.detach()
    d = theta0 - theta
    tilde = theta + 0.5 * d / d.norm() if direction == "pretrained" else theta
    expected = 0.6 * 3 * theta ** 2 + 0.4 * 3 * tilde ** 2
    assert torch.allclose(param.grad, expected, atol=1e-6)
    assert torch.equal(param.detach(), torch.tensor([1.5, -1.0, 0.0]))  # restored exactly after the probe


def test_roma_is_watermarkdm_without_l1():
    assert RoMa().l1 == 0.0 and RoMa(l1=1e-7).l1 == 1e-7


@pytest.mark.parametrize("kwargs,message", [
    ({"alpha": 1.5}, r"method.alpha must be in \[0, 1\] \(got 1.5\)"),
    ({"direction": "none"}, "method.direction=none with method.same_batch=true"),  # g2 = g1: plain trigger training
])
def test_bad_parameters_are_refused(kwargs, message):
    """Values beyond the generic checks of tests/test_contract.py: an upper bound, and a combination."""
    with pytest.raises(ConfigError, match=message):
        RoMa(**kwargs)
    assert RoMa(direction="none", same_batch=False).direction == "none"  # the released code's behaviour
