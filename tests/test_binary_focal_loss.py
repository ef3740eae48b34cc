"""binary_focal_loss (on probabilities): value and gradient against the float64 reference."""

import itertools
import random

import pytest
import torch

import focal_cuda
from focal_cuda import reference
from conftest import check_against_reference, floating_dtypes, gammas, reductions


def make_prob(shape, dtype, device):
    """Probabilities kept away from 0 and 1, where BCELoss's -100 clamp makes the gradient a convention."""
    return (0.02 + 0.96 * torch.rand(shape)).to(dtype=dtype, device=device)


def make_target(kind, shape, dtype, device):
    hard = (torch.rand(shape) < 0.4).to(torch.float32)
    target = hard if kind == "hard" else torch.where(torch.rand(shape) < 0.5, torch.rand(shape), hard)
    return target.to(dtype=dtype, device=device)


_sampler = random.Random(4)
main_cases = [
    pytest.param(
        dtype,
        reduction,
        gamma,
        alpha,
        _sampler.choice(["hard", "soft"]),
        _sampler.choice([(6, 5), (13,), (2, 3, 4)]),
        id=f"{str(dtype)[6:]}-{reduction}-g{gamma}-a{alpha}",
    )
    for dtype, reduction, gamma, alpha in itertools.product(
        floating_dtypes, reductions, gammas, [0.25, None, -1.0, 0.9]
    )
]


@pytest.mark.parametrize("dtype,reduction,gamma,alpha,target_kind,shape", main_cases)
def test_matches_reference(device, dtype, reduction, gamma, alpha, target_kind, shape):
    prob = make_prob(shape, dtype, device)
    target = make_target(target_kind, shape, dtype, device)
    loss = check_against_reference(
        focal_cuda.binary_focal_loss, reference.binary_focal_loss, prob, target, alpha, gamma, reduction
    )
    assert loss.shape == (shape if reduction == "none" else ())


@pytest.mark.parametrize("shape", [(1,), (2, 1000), (3, 32000 // 3), (2, 3, 4, 5), (1, 2, 3, 2, 3), (0, 4)], ids=str)
def test_shapes(device, shape):
    prob = make_prob(shape, torch.float32, device)
    target = make_target("soft", shape, torch.float32, device)
    for reduction in reductions:
        check_against_reference(
            focal_cuda.binary_focal_loss, reference.binary_focal_loss, prob, target, 0.25, 2.0, reduction
        )


@pytest.mark.parametrize("layout", ["sliced", "transposed"])
def test_non_contiguous(device, layout):
    base = make_prob((10, 8), torch.float32, device)
    prob = base[:, ::3] if layout == "sliced" else base.t()
    target = make_target("hard", prob.shape, torch.float32, device)
    for reduction in reductions:
        check_against_reference(
            focal_cuda.binary_focal_loss, reference.binary_focal_loss, prob, target, 0.25, 2.0, reduction
        )


@pytest.mark.parametrize("dtype", floating_dtypes)
def test_probabilities_of_exactly_0_and_1_are_finite(device, dtype):
    """log p is clamped at -100 like torch.nn.BCELoss, so saturated probabilities give finite losses.

    The gradient there follows BCELoss's convention (-1/max(p, 1e-12)), about 1e12: finite wherever the
    dtype can hold it; float16 cannot (BCELoss overflows there as well), so it only must not be NaN.
    """
    prob = torch.tensor([0.0, 1.0, 0.0, 1.0, 1e-30, 1 - 1e-7], dtype=dtype, device=device, requires_grad=True)
    target = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0], dtype=dtype, device=device)
    for gamma in [0.0, 0.5, 2.0]:
        loss = focal_cuda.binary_focal_loss(prob, target, gamma=gamma, alpha=None, reduction="none")
        (grad,) = torch.autograd.grad(loss.sum(), prob)
        assert torch.isfinite(loss).all(), (gamma, loss)
        assert not torch.isnan(grad).any(), (gamma, grad)
        if dtype != torch.float16:
            assert torch.isfinite(grad).all(), (gamma, grad)
        # the fully wrong confident predictions hit the clamp: loss = (1 - p_t)**gamma * 100 = 100
        assert loss[0].item() == 100.0 and loss[1].item() == 100.0
        assert loss[2].item() == 0.0 and loss[3].item() == 0.0
        # the correct confident predictions have zero gradient
        assert grad[2].item() == 0.0 and grad[3].item() == 0.0


def test_gamma_0_without_alpha_equals_bce_loss_including_the_clamp(device):
    prob = torch.tensor([0.0, 1.0, 0.3, 0.9, 1e-45], dtype=torch.float64, device=device)
    target = torch.tensor([1.0, 0.0, 0.4, 1.0, 1.0], dtype=torch.float64, device=device)
    for reduction in reductions:
        ours = focal_cuda.binary_focal_loss(prob, target, alpha=None, gamma=0.0, reduction=reduction)
        expected = torch.nn.functional.binary_cross_entropy(prob, target, reduction=reduction)
        torch.testing.assert_close(ours, expected)


def test_empty_mean_is_zero_with_zero_gradient(device):
    prob = torch.rand(0, 3, device=device, requires_grad=True)
    loss = focal_cuda.binary_focal_loss(prob, torch.rand(0, 3, device=device), reduction="mean")
    (grad,) = torch.autograd.grad(loss, prob)
    assert loss.item() == 0.0 and grad.shape == (0, 3)
