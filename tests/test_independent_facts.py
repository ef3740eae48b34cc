"""Facts that do not depend on focal_cuda.reference: PyTorch's own losses and the classic formulas.

Each fact is checked for focal_cuda and for the reference, so the ground truth is itself tested.
"""

import pytest
import torch
import torch.nn.functional as F

import focal_cuda
from focal_cuda import reference
from conftest import reductions
from naive_formulas import naive

implementations = [pytest.param(focal_cuda, id="focal_cuda"), pytest.param(reference, id="reference")]


def value_and_grad(function, input, *args, **kwargs):
    leaf = input.detach().clone().requires_grad_(True)
    loss = function(leaf, *args, **kwargs)
    grad_output = torch.linspace(-1.0, 2.0, loss.numel(), dtype=loss.dtype, device=loss.device).reshape(loss.shape)
    (grad,) = torch.autograd.grad(loss, leaf, grad_output)
    return loss, grad


@pytest.mark.parametrize("impl", implementations)
@pytest.mark.parametrize("reduction", reductions)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("shape", [(9, 6), (3, 6, 2, 4)], ids=str)
def test_softmax_gamma_0_equals_cross_entropy(device, impl, reduction, label_smoothing, shape):
    input = torch.randn(shape, dtype=torch.float64, device=device)
    target = torch.randint(0, shape[1], shape[:1] + shape[2:], device=device)
    target.view(-1)[::4] = 3  # class 3 is also the ignore_index
    kwargs = dict(ignore_index=3, label_smoothing=label_smoothing, reduction=reduction)
    ours = value_and_grad(impl.softmax_focal_loss, input, target, gamma=0.0, **kwargs)
    expected = value_and_grad(F.cross_entropy, input, target, **kwargs)
    torch.testing.assert_close(ours[0], expected[0])
    torch.testing.assert_close(ours[1], expected[1])


@pytest.mark.parametrize("impl", implementations)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_softmax_gamma_0_equals_cross_entropy_unbatched(device, impl, dtype):
    input = torch.randn(17, dtype=dtype, device=device)
    target = torch.tensor(5, device=device)
    for reduction in reductions:
        ours = value_and_grad(impl.softmax_focal_loss, input, target, gamma=0.0, reduction=reduction)
        expected = value_and_grad(F.cross_entropy, input, target, reduction=reduction)
        torch.testing.assert_close(ours[0], expected[0])
        torch.testing.assert_close(ours[1], expected[1])


@pytest.mark.parametrize("impl", implementations)
@pytest.mark.parametrize("reduction", reductions)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sigmoid_gamma_0_equals_bce_with_logits(device, impl, reduction, dtype):
    input = 4 * torch.randn(10, 7, dtype=dtype, device=device)
    target = torch.rand(10, 7, dtype=dtype, device=device)
    ours = value_and_grad(impl.sigmoid_focal_loss, input, target, None, 0.0, reduction)
    expected = value_and_grad(F.binary_cross_entropy_with_logits, input, target, reduction=reduction)
    torch.testing.assert_close(ours[0], expected[0])
    torch.testing.assert_close(ours[1], expected[1])


@pytest.mark.parametrize("impl", implementations)
def test_sigmoid_label_smoothing_is_a_target_transform(device, impl):
    input = torch.randn(8, 5, dtype=torch.float64, device=device)
    target = (torch.rand(8, 5, device=device) < 0.3).double()
    smoothed = target * (1 - 0.2) + 0.5 * 0.2
    for reduction in reductions:
        ours = value_and_grad(impl.sigmoid_focal_loss, input, target, 0.25, 2.0, reduction, label_smoothing=0.2)
        expected = value_and_grad(impl.sigmoid_focal_loss, input, smoothed, 0.25, 2.0, reduction)
        torch.testing.assert_close(ours[0], expected[0])
        torch.testing.assert_close(ours[1], expected[1])


torchvision_sigmoid_focal_loss = naive.sigmoid_focal_loss  # torchvision.ops.sigmoid_focal_loss's formula


@pytest.mark.parametrize("impl", implementations)
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.6, 1.0), (-1.0, 3.0), (0.25, 0.5)])
def test_sigmoid_matches_torchvision_with_positional_arguments(device, impl, alpha, gamma):
    inputs = 3 * torch.randn(12, 4, dtype=torch.float64, device=device)
    targets = torch.rand(12, 4, dtype=torch.float64, device=device)
    for reduction in reductions:
        ours = value_and_grad(impl.sigmoid_focal_loss, inputs, targets, alpha, gamma, reduction)
        expected = value_and_grad(torchvision_sigmoid_focal_loss, inputs, targets, alpha, gamma, reduction)
        torch.testing.assert_close(ours[0], expected[0])
        torch.testing.assert_close(ours[1], expected[1])
    # torchvision's defaults: alpha=0.25, gamma=2, reduction="none"
    torch.testing.assert_close(
        impl.sigmoid_focal_loss(inputs, targets), torchvision_sigmoid_focal_loss(inputs, targets)
    )


@pytest.mark.parametrize("impl", implementations)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("shape", [(10, 6), (2, 3, 5), (6,)], ids=str)
def test_sigmoid_index_target_equals_its_one_hot(device, impl, label_smoothing, shape):
    num_classes = shape[-1]
    input = torch.randn(shape, dtype=torch.float64, device=device)
    # background (== C) included; no row ignored, so the dense form is equivalent
    index = torch.randint(0, num_classes + 1, shape[:-1], device=device)
    one_hot = F.one_hot(index, num_classes + 1)[..., :num_classes].double()
    for reduction in reductions:
        ours = value_and_grad(impl.sigmoid_focal_loss, input, index, 0.25, 2.0, reduction, label_smoothing=label_smoothing)
        expected = value_and_grad(impl.sigmoid_focal_loss, input, one_hot, 0.25, 2.0, reduction, label_smoothing=label_smoothing)
        torch.testing.assert_close(ours[0], expected[0])
        torch.testing.assert_close(ours[1], expected[1])


@pytest.mark.parametrize("impl", implementations)
def test_sigmoid_ignored_index_rows_equal_dropping_them(device, impl):
    input = torch.randn(9, 5, dtype=torch.float64, device=device)
    index = torch.tensor([0, -1, 5, 4, -1, 2, 2, 5, 1], device=device)
    kept = index != -1
    for reduction in ["sum", "mean"]:
        ours = impl.sigmoid_focal_loss(input, index, reduction=reduction, ignore_index=-1)
        expected = impl.sigmoid_focal_loss(input[kept], index[kept], reduction=reduction, ignore_index=-1)
        torch.testing.assert_close(ours, expected)


def classic_focal_loss(inputs, targets, alpha, gamma=2.0, size_average=True):
    """The classic FocalLoss(class_num, alpha, gamma, size_average).forward (benchmarks/naive.py)."""
    return naive.FocalLoss(inputs.shape[1], alpha=alpha, gamma=gamma, size_average=size_average)(inputs, targets)


def classic_bce_focal_loss(prob, target, gamma=2, alpha=0.25):
    """The classic BCEFocalLoss(gamma, alpha) on probabilities, its default mean (benchmarks/naive.py)."""
    return naive.BCEFocalLoss(gamma, alpha)(prob, target)


def classic_value_and_grad(module, classic, input, target):
    """(loss, gradient, classic loss, classic gradient) under the same grad_output (a 0-dim loss: a scalar)."""
    loss, grad = value_and_grad(module, input, target)
    expected, expected_grad = value_and_grad(classic, input.double(), target)
    return loss, grad, expected, expected_grad


@pytest.mark.parametrize("gamma", [2, 3])
def test_classic_focal_loss_usage(device, gamma):
    inputs = torch.rand(64, 10, device=device)
    targets = torch.randint(0, 10, (64,), device=device)
    module = focal_cuda.FocalLoss(10, gamma=gamma).to(device)
    ones = torch.ones(10, 1, dtype=torch.float64, device=device)
    loss, grad, expected, expected_grad = classic_value_and_grad(
        module, lambda x, t: classic_focal_loss(x, t, ones, gamma=gamma), inputs, targets)
    assert loss.dtype == torch.float32 and loss.shape == ()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("num_classes", [2, 7])
def test_classic_focal_loss_with_alpha_column_and_sum(device, num_classes):
    inputs = torch.randn(33, num_classes, device=device, requires_grad=True)
    targets = torch.randint(0, num_classes, (33,), device=device)
    alpha = torch.ones(num_classes, 1)
    module = focal_cuda.FocalLoss(num_classes, alpha=alpha, size_average=False).to(device)
    loss = module(inputs, targets)
    expected = classic_focal_loss(inputs.double(), targets, alpha.double().to(device), size_average=False)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-5)
    # non-uniform class weights in the classic (C, 1) shape
    weights = torch.rand(num_classes, 1) + 0.5
    module = focal_cuda.FocalLoss(num_classes, alpha=weights, gamma=1.5, size_average=True).to(device)
    (grad,) = torch.autograd.grad(module(inputs, targets), inputs)
    leaf = inputs.detach().double().requires_grad_(True)
    expected = classic_focal_loss(leaf, targets, weights.double().to(device), gamma=1.5)
    (expected_grad,) = torch.autograd.grad(expected, leaf)
    torch.testing.assert_close(module(inputs, targets).double(), expected.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("gamma,alpha", [(2, 0.25), (3, 0.6), (0, 0.5), (2.5, 0.1)])
def test_classic_bce_focal_loss_on_probabilities(device, gamma, alpha):
    prob = 0.01 + 0.98 * torch.rand(50, 3, dtype=torch.float64, device=device)
    target = (torch.rand(50, 3, device=device) < 0.3).double()
    module = focal_cuda.BCEFocalLoss(gamma, alpha)  # the classic argument order
    loss, grad, expected, expected_grad = classic_value_and_grad(
        module, lambda p, t: classic_bce_focal_loss(p, t, gamma=gamma, alpha=alpha), prob, target)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grad, expected_grad)
