"""Extreme logits, 0 < gamma < 1, low precision and bitwise reproducibility."""

import pytest
import torch

import focal_cuda
from focal_cuda import reference
from conftest import check_against_reference, floating_dtypes

extreme_gammas = [0.0, 0.25, 0.5, 0.9, 1.0, 2.0, 2.5]


def saturated_logits(magnitude, dtype, device, num_classes=4, rows=6):
    """Rows mixing +-magnitude with ordinary values, so p_t is exactly 0 or 1 in float32."""
    signs = torch.tensor([1.0, -1.0])[torch.randint(0, 2, (rows, num_classes))]
    logits = signs * magnitude
    logits[::3, 1] = 0.5
    return logits.to(dtype=dtype, device=device)


@pytest.mark.parametrize("gamma", extreme_gammas)
@pytest.mark.parametrize("magnitude", [100.0, 1e4])
@pytest.mark.parametrize("dtype", floating_dtypes)
def test_sigmoid_extreme_logits_are_finite_and_correct(device, dtype, magnitude, gamma):
    input = saturated_logits(magnitude, dtype, device)
    for target in [
        (torch.rand(input.shape, device=device) < 0.5).to(dtype),
        torch.tensor([0, 4, 1, 3, 2, 4], device=device),
    ]:
        # "mean", not "sum": a sum of 1e4-sized losses would overflow float16 legitimately
        for reduction in ["none", "mean"]:
            leaf = input.clone().requires_grad_(True)
            loss = focal_cuda.sigmoid_focal_loss(leaf, target, 0.25, gamma, reduction, label_smoothing=0.0)
            (grad,) = torch.autograd.grad(loss.sum(), leaf)
            assert torch.isfinite(loss).all() and torch.isfinite(grad).all(), (loss, grad)
            check_against_reference(
                focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, input, target, 0.25, gamma, reduction
            )


@pytest.mark.parametrize("gamma", extreme_gammas)
@pytest.mark.parametrize("magnitude", [100.0, 1e4])
@pytest.mark.parametrize("dtype", floating_dtypes)
def test_softmax_extreme_logits_are_finite_and_correct(device, dtype, magnitude, gamma):
    input = saturated_logits(magnitude, dtype, device)
    target = torch.randint(0, 4, (6,), device=device)
    for label_smoothing in [0.0, 0.1]:
        for reduction in ["none", "mean"]:
            leaf = input.clone().requires_grad_(True)
            loss = focal_cuda.softmax_focal_loss(leaf, target, None, gamma, reduction, label_smoothing=label_smoothing)
            (grad,) = torch.autograd.grad(loss.sum(), leaf)
            assert torch.isfinite(loss).all() and torch.isfinite(grad).all(), (loss, grad)
            check_against_reference(
                focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, input, target, None, gamma, reduction,
                label_smoothing=label_smoothing,
            )


@pytest.mark.parametrize("gamma", extreme_gammas)
@pytest.mark.parametrize("dtype", floating_dtypes)
def test_softmax_confident_correct_prediction_with_small_gamma(device, dtype, gamma):
    """p_t rounds to 1: the loss is ~0 and the gradient finite, with no (1-p_t)**(gamma-1) blow-up."""
    input = torch.tensor([[30.0, 0.0, -5.0], [0.0, 60.0, 1.0]], dtype=dtype, device=device)
    target = torch.tensor([0, 1], device=device)
    check_against_reference(
        focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, input, target, None, gamma, "none"
    )


@pytest.mark.parametrize("gamma", [0.25, 0.5, 0.9])
@pytest.mark.parametrize("dtype", floating_dtypes)
def test_sigmoid_small_gamma_near_saturation(device, dtype, gamma):
    input = torch.tensor([[20.0, -20.0, 40.0, -40.0, 8.0, -90.0]], dtype=dtype, device=device)
    target = torch.tensor([[1.0, 0.0, 1.0, 0.0, 1.0, 0.0]], dtype=dtype, device=device)
    check_against_reference(
        focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, input, target, 0.25, gamma, "none"
    )


@pytest.mark.parametrize("function", ["sigmoid_dense", "sigmoid_index", "softmax", "softmax_spatial", "binary"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_two_runs_are_bitwise_equal(device, dtype, function):
    """Large enough to be split across threads/blocks; reductions must not depend on scheduling."""
    if function.startswith("sigmoid"):
        input = torch.randn(513, 40, dtype=dtype, device=device)
        if function == "sigmoid_dense":
            target = torch.rand(513, 40, dtype=dtype, device=device)
        else:
            target = torch.randint(0, 41, (513,), device=device)
        call = lambda x: focal_cuda.sigmoid_focal_loss(x, target, 0.25, 2.5, "mean")  # noqa: E731
    elif function.startswith("softmax"):
        shape = (1025, 37) if function == "softmax" else (4, 9, 33, 17)
        input = torch.randn(shape, dtype=dtype, device=device)
        target = torch.randint(0, shape[1], shape[:1] + shape[2:], device=device)
        call = lambda x: focal_cuda.softmax_focal_loss(x, target, None, 1.5, "sum", label_smoothing=0.1)  # noqa: E731
    else:
        input = torch.rand(20011, dtype=dtype, device=device)
        target = torch.rand(20011, dtype=dtype, device=device)
        call = lambda x: focal_cuda.binary_focal_loss(x, target, 0.25, 2.0, "mean")  # noqa: E731

    def run():
        leaf = input.clone().requires_grad_(True)
        loss = call(leaf)
        (grad,) = torch.autograd.grad(loss, leaf)
        return loss, grad

    first, second = run(), run()
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


@pytest.mark.parametrize("function", ["sigmoid_dense", "sigmoid_index", "softmax", "softmax_spatial", "binary"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_forward_without_grad_equals_forward_with_grad(device, function, reduction):
    """compute_grad=False skips the gradient buffer; the loss must not change (up to float32 rounding)."""
    if function.startswith("sigmoid"):
        input = torch.randn(37, 9, device=device)
        target = torch.rand(37, 9, device=device) if function == "sigmoid_dense" else torch.randint(0, 10, (37,), device=device)
        call = lambda x: focal_cuda.sigmoid_focal_loss(x, target, 0.25, 1.5, reduction)  # noqa: E731
    elif function.startswith("softmax"):
        shape = (37, 9) if function == "softmax" else (3, 9, 5, 7)
        input = torch.randn(shape, device=device)
        target = torch.randint(0, 9, shape[:1] + shape[2:], device=device)
        call = lambda x: focal_cuda.softmax_focal_loss(x, target, None, 1.5, reduction, label_smoothing=0.1)  # noqa: E731
    else:
        input = torch.rand(37, 9, device=device)
        target = torch.rand(37, 9, device=device)
        call = lambda x: focal_cuda.binary_focal_loss(x, target, 0.25, 1.5, reduction)  # noqa: E731
    with torch.no_grad():
        without_grad = call(input)
    with_grad = call(input.clone().requires_grad_(True))
    assert with_grad.requires_grad and not without_grad.requires_grad
    torch.testing.assert_close(without_grad, with_grad.detach(), rtol=1e-6, atol=1e-7)
