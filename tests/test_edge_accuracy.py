"""Accuracy to the last digits at the edges (docs/design.md §2), on the CPU kernels and the emulated CUDA kernels.

Every element of loss and gradient is compared, relatively, with float64 math on the same (upcast) inputs:
within 1e-5 for float32 and 1e-12 for float64 wherever the float64 value is a normal number of the tested dtype.
The emulated CUDA kernels run with the device's approx math (ex2 / lg2 / rcp) at its documented worst-case error,
moved in a direction hashed from each input ("hashed") or all in one direction ("up", "down": correlated errors,
which do not cancel in a sum). Easy examples at |x| up to 30, p within 2**-24 of 1 and confident softmax rows up
to a margin of 16 (30 in float64) are included; a loss is never negative.
"""
import functools
import math

import pytest
import torch
import torch.nn.functional as F

import focal_cuda
from focal_cuda import reference


# Relative error allowed per element, and the smallest magnitude at which it applies (the dtype's normal range).
RELATIVE = {torch.float32: 1e-5, torch.float64: 1e-12}
SMALLEST_NORMAL = {torch.float32: torch.finfo(torch.float32).tiny, torch.float64: torch.finfo(torch.float64).tiny}


def assert_relative(actual, expected, dtype, what):
    """|actual - expected| <= RELATIVE * |expected| per element where expected is a normal number of `dtype` (the
    contract's claim: a true value of 0 or a subnormal is not checked here). Non-finite values must match."""
    actual = actual.detach().to(torch.float64)
    expected = expected.detach().to(torch.float64)
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    finite = torch.isfinite(expected)
    assert torch.equal(torch.isfinite(actual), finite), f"{what}: non-finite where the truth is finite (or not)"
    tiny = SMALLEST_NORMAL[dtype]
    error = (actual - expected).abs()[finite]
    magnitude = expected.abs()[finite]
    bad = (error > RELATIVE[dtype] * magnitude) & (magnitude >= tiny)
    if bad.any():
        worst = (error / magnitude.clamp_min(tiny)).argmax()
        raise AssertionError(f"{what} ({dtype}): {int(bad.sum())} of {bad.numel()} elements off by more than "
                             f"{RELATIVE[dtype]:g} relative; worst: {actual[finite][worst].item()!r} vs "
                             f"{expected[finite][worst].item()!r}")


def loss_and_grad(function, input, *args, **kwargs):
    """Per-element ('none') loss and d(sum of loss)/d(input) of `function`."""
    leaf = input.detach().clone().requires_grad_(True)
    loss = function(leaf, *args, reduction="none", **kwargs)
    (grad,) = torch.autograd.grad(loss.sum(), leaf)
    return loss.detach(), grad


def check_elementwise(function, reference_function, input, target, dtype, **kwargs):
    loss, grad = loss_and_grad(function, input.to(dtype), target.to(dtype) if target.is_floating_point() else target,
                               **kwargs)
    truth_loss, truth_grad = loss_and_grad(reference_function, input.to(dtype).double(),
                                           target.to(dtype).double() if target.is_floating_point() else target,
                                           **kwargs)
    assert (loss >= 0).all(), f"negative loss: {loss[loss < 0][:4].tolist()}"
    assert_relative(loss, truth_loss, dtype, "loss")
    assert_relative(grad, truth_grad, dtype, "gradient")


# Logits from -30 to 30, dense near 0 and at the integers where the float32 sigmoid rounds to 1.
LOGITS = torch.cat([torch.linspace(-30, 30, 241), torch.tensor([-17.0, -15.0, -12.0, 12.0, 15.0, 17.0])])
DTYPES = [torch.float32, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 3.5])
@pytest.mark.parametrize("t", [0.0, 1.0, 0.999, 0.3])
def test_sigmoid_focal_easy_and_hard_examples(kernels, dtype, gamma, t):
    keep = away_from_gradient_roots(reference.sigmoid_focal_loss, t, alpha=0.25, gamma=gamma)
    target = torch.full_like(LOGITS[keep], t)
    check_elementwise(focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, LOGITS[keep], target, dtype,
                      alpha=0.25, gamma=gamma)


def away_from_gradient_roots(reference_function, t, **kwargs):
    """LOGITS further than 0.5 from every root of the float64 gradient. A soft target's gradient crosses 0 (near
    p = t): two terms cancel there in any float format (an unbounded condition number), so no relative claim holds
    at the root; hard targets have none and keep every logit."""
    return _away_from_roots(reference_function, t, tuple(sorted(kwargs.items()))).clone()


@functools.lru_cache(maxsize=None)
def _away_from_roots(reference_function, t, kwargs):
    kwargs = dict(kwargs)
    fine = torch.linspace(-31, 31, 12401, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(reference_function(fine, torch.full_like(fine, t), reduction="none", **kwargs).sum(),
                                  fine)
    roots = fine.detach()[1:][(grad[1:] * grad[:-1]) <= 0]
    if len(roots) == 0:
        return torch.ones_like(LOGITS, dtype=torch.bool)
    return (LOGITS.double()[:, None] - roots[None, :]).abs().min(dim=1).values > 0.5


# Probabilities near 0 and within a few ulps of 1 (p = 1 - 2**-24 is the float32 below 1), and inside.
PROBS = torch.tensor([1 - 2.0**-24, 1 - 2.0**-23, 1 - 2.0**-20, 1 - 1e-6, 1 - 1e-4, 0.999, 0.9, 0.75, 0.5000001,
                      0.5, 0.4999, 0.3, 0.1, 1e-3, 1e-6, 2.0**-24], dtype=torch.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("t", [0.0, 1.0, 0.7])
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_binary_focal_probabilities_near_one(kernels, dtype, gamma, t, alpha):
    target = torch.full_like(PROBS, t)
    check_elementwise(focal_cuda.binary_focal_loss, reference.binary_focal_loss, PROBS, target, dtype, alpha=alpha,
                      gamma=gamma)


def test_binary_focal_loss_is_not_negative_at_p_next_to_one(kernels):
    p = torch.tensor([1 - 2.0**-24, 1 - 2.0**-23])
    loss = focal_cuda.binary_focal_loss(p, torch.ones(2), alpha=None, gamma=0.0, reduction="none")
    expected = -torch.log(p.double())
    assert_relative(loss, expected, torch.float32, "loss")
    # torch's BCELoss on the same values, for the README's comparison: within 3e-8 absolute there.
    bce = F.binary_cross_entropy(p, torch.ones(2), reduction="none")
    assert (bce - expected).abs().max() < 3e-8


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("t", [1.0, 0.0, 0.6])
@pytest.mark.parametrize("clip", [0.0, 0.05])
@pytest.mark.parametrize("detach", [True, False])
def test_asymmetric_easy_positives_and_negatives(kernels, dtype, t, clip, detach):
    kwargs = dict(gamma_pos=1.0, gamma_neg=4.0, clip=clip, detach_modulation=detach)
    # away from p = clip, where 1 - p_neg = p - clip cancels in any float format (ill-conditioned in x), and from
    # the roots of a soft target's gradient
    keep = away_from_gradient_roots(reference.asymmetric_loss, t, **kwargs)
    if clip > 0:
        keep &= (torch.sigmoid(LOGITS.double()) - clip).abs() > 0.03
    target = torch.full_like(LOGITS[keep], t)
    check_elementwise(focal_cuda.asymmetric_loss, reference.asymmetric_loss, LOGITS[keep], target, dtype, **kwargs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("q", [1.0, 0.999, 0.5, 0.0])
@pytest.mark.parametrize("loss_name", ["varifocal_loss", "quality_focal_loss"])
def test_iou_targets_at_large_logits(kernels, loss_name, dtype, q):
    """Varifocal and quality focal with IoU-aware targets q, up to q = 1 at |x| = 30 (quality focal's |q - p|**beta
    has its root, and the gradient's, at p = q: left out with the other gradient roots)."""
    function, reference_function = getattr(focal_cuda, loss_name), getattr(reference, loss_name)
    keep = away_from_gradient_roots(reference_function, q)
    check_elementwise(function, reference_function, LOGITS[keep], torch.full_like(LOGITS[keep], q), dtype)


def test_varifocal_gradient_at_q_one_is_minus_one_minus_p(kernels):
    x = torch.tensor([17.0, 20.0, 25.0], requires_grad=True)
    focal_cuda.varifocal_loss(x, torch.ones(3), reduction="sum").backward()
    expected = -torch.sigmoid(-x.detach().double())
    assert_relative(x.grad, expected, torch.float32, "gradient")


@pytest.mark.parametrize("loss_name", ["sigmoid_focal_loss", "varifocal_loss", "quality_focal_loss"])
def test_gamma_zero_infinite_logits_have_bce_gradients(kernels, loss_name):
    x = torch.tensor([math.inf, -math.inf, math.inf, -math.inf], requires_grad=True)
    t = torch.tensor([0.0, 1.0, 0.3, 0.3])
    kwargs = {"beta": 0.0} if loss_name == "quality_focal_loss" else {"gamma": 0.0}
    if loss_name == "sigmoid_focal_loss":
        kwargs["alpha"] = None
    loss = getattr(focal_cuda, loss_name)(x, t, reduction="none", **kwargs)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    leaf = x.detach().clone().requires_grad_(True)
    weight = t if loss_name == "varifocal_loss" else torch.ones(4)
    bce = F.binary_cross_entropy_with_logits(leaf, t, weight=torch.where(t > 0, weight, torch.ones(4)),
                                             reduction="none")
    (bce_grad,) = torch.autograd.grad(bce.sum(), leaf)
    if loss_name == "varifocal_loss":  # negatives (q = 0) weigh alpha p**0 = alpha
        bce_grad = torch.where(t > 0, bce_grad, 0.75 * bce_grad)
    assert torch.isfinite(grad).all(), f"non-finite gradient {grad.tolist()}"
    torch.testing.assert_close(grad, bce_grad)


# Confident softmax rows: [0, -d, ...] with the target at the max (loss = log1p(sum exp(-d))) or below it.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("classes", [2, 5, 80, 1000])
@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_softmax_confident_rows(kernels, dtype, classes, gamma):
    margins = torch.arange(0, 31 if dtype == torch.float64 else 17, dtype=torch.float64)
    rows = torch.zeros(len(margins), classes, dtype=torch.float64)
    rows[:, 1:] = -margins[:, None]
    rows[:, 2:] -= torch.rand(len(margins), classes - 2, dtype=torch.float64)  # other classes a bit lower
    rows = rows + 7.0 * torch.randn(len(margins), 1, dtype=torch.float64)  # the row's offset must not matter
    target = torch.zeros(len(margins), dtype=torch.long)
    target[len(margins) // 2:] = 1  # the second class, below the max
    check_elementwise(focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, rows, target, dtype, gamma=gamma)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_confident_spatial_rows(kernels, dtype):
    """(N, C, H, W): the spatial kernels take the same care as the row kernels."""
    margin = torch.arange(0, 17, dtype=torch.float64)
    logits = torch.zeros(2, 3, 17, 1, dtype=torch.float64)
    logits[:, 1, :, 0] = -margin
    logits[:, 2, :, 0] = -margin - 1
    target = torch.zeros(2, 17, 1, dtype=torch.long)
    check_elementwise(focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, logits, target, dtype)


def test_softmax_beats_cross_entropy_on_confident_rows(kernels):
    """At a margin of 14, F.cross_entropy's float32 loss is 3.5e-3 off; ours is within 1e-5."""
    d = 14.0
    row = torch.tensor([[0.0, -d]])
    target = torch.tensor([0])
    truth = math.log1p(math.exp(-d))
    ours = focal_cuda.softmax_focal_loss(row, target, gamma=0.0, reduction="sum").item()
    assert abs(ours - truth) <= 1e-5 * truth
    assert ours > 0


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("loss_name", ["sigmoid_focal_loss", "softmax_focal_loss", "binary_focal_loss",
                                       "asymmetric_loss", "varifocal_loss"])
def test_reductions_of_easy_examples(kernels, reduction, loss_name):
    """A sum of many easy examples: correlated approx errors ('up' / 'down') do not cancel there."""
    n = 2000
    if loss_name == "softmax_focal_loss":
        x = torch.zeros(n, 4, dtype=torch.float64)
        x[:, 1:] = -torch.linspace(8, 16, n, dtype=torch.float64)[:, None]
        target = torch.zeros(n, dtype=torch.long)
        args = (target,)
    elif loss_name == "binary_focal_loss":
        x = 1 - torch.logspace(-7, -3, n, dtype=torch.float64)
        args = (torch.ones(n, dtype=torch.float64),)
    else:
        x = torch.linspace(8, 20, n, dtype=torch.float64)
        args = (torch.ones(n, dtype=torch.float64),)
    function, truth_function = getattr(focal_cuda, loss_name), getattr(reference, loss_name)
    x32 = x.float()
    args32 = tuple(a.float() if a.is_floating_point() else a for a in args)
    loss = function(x32, *args32, reduction=reduction)
    truth = truth_function(x32.double(), *[a.double() if a.is_floating_point() else a for a in args32],
                           reduction=reduction)
    assert_relative(loss, truth, torch.float32, f"{reduction} loss")
