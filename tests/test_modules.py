"""The nn.Module wrappers: constructor forms, stored arguments, alpha as a buffer."""

import pytest
import torch

import focal_cuda
from focal_cuda import reference
from conftest import reductions


def test_focal_loss_alpha_is_a_buffer_in_state_dict():
    alpha = torch.tensor([0.5, 1.0, 2.0])
    module = focal_cuda.FocalLoss(3, alpha=alpha)
    assert "alpha" in dict(module.named_buffers())
    assert "alpha" in module.state_dict()
    assert module.state_dict()["alpha"].numel() == 3
    assert not list(module.parameters())

    restored = focal_cuda.FocalLoss(3, alpha=torch.ones(3))
    restored.load_state_dict(module.state_dict())
    input, target = torch.randn(6, 3), torch.randint(0, 3, (6,))
    torch.testing.assert_close(restored(input, target), module(input, target))


def test_focal_loss_alpha_moves_with_to(device):
    module = focal_cuda.FocalLoss(4, alpha=torch.tensor([[0.5], [1.0], [1.5], [2.0]])).to(device)
    assert module.alpha.device.type == torch.device(device).type
    input = torch.randn(5, 4, device=device)
    target = torch.randint(0, 4, (5,), device=device)
    expected = reference.softmax_focal_loss(input.double(), target, torch.tensor([0.5, 1.0, 1.5, 2.0]))
    torch.testing.assert_close(module(input, target).double(), expected, rtol=1e-5, atol=1e-6)

    # a float64 module (alpha buffer cast) still serves float32 and float64 inputs
    module = module.to(torch.float64)
    assert module.alpha.dtype == torch.float64
    torch.testing.assert_close(module(input, target).double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(module(input.double(), target), expected)


@pytest.mark.parametrize(
    "kwargs,expected_reduction",
    [
        (dict(), "mean"),
        (dict(size_average=True), "mean"),
        (dict(size_average=False), "sum"),
        (dict(size_average=False, reduction="none"), "none"),
        (dict(size_average=True, reduction="sum"), "sum"),
        (dict(reduction="mean"), "mean"),
    ],
)
def test_focal_loss_reduction_from_size_average_and_reduction(device, kwargs, expected_reduction):
    input = torch.randn(7, 5, device=device)
    target = torch.randint(0, 5, (7,), device=device)
    loss = focal_cuda.FocalLoss(5, **kwargs)(input, target)
    expected = focal_cuda.softmax_focal_loss(input, target, reduction=expected_reduction)
    assert torch.equal(loss, expected)


def test_focal_loss_passes_every_argument(device):
    input = torch.randn(6, 4, 3, device=device)
    target = torch.randint(0, 4, (6, 3), device=device)
    target[0] = 2
    alpha = [0.1, 0.2, 0.3, 0.4]
    module = focal_cuda.FocalLoss(
        4, alpha=alpha, gamma=1.5, reduction="none", ignore_index=2, label_smoothing=0.1
    ).to(device)
    expected = focal_cuda.softmax_focal_loss(
        input, target, alpha, 1.5, "none", ignore_index=2, label_smoothing=0.1
    )
    assert torch.equal(module(input, target), expected)


def test_focal_loss_without_class_num_or_alpha(device):
    input = torch.randn(6, 4, device=device)
    target = torch.randint(0, 4, (6,), device=device)
    assert torch.equal(focal_cuda.FocalLoss()(input, target), focal_cuda.softmax_focal_loss(input, target))


def test_sigmoid_focal_loss_module(device):
    input = torch.randn(6, 4, device=device)
    target = torch.randint(0, 5, (6,), device=device)
    module = focal_cuda.SigmoidFocalLoss()
    # module default reduction is "mean", unlike the function's torchvision default "none"
    assert torch.equal(module(input, target), focal_cuda.sigmoid_focal_loss(input, target, reduction="mean"))
    target[1] = -1
    module = focal_cuda.SigmoidFocalLoss(0.4, 1.0, "sum", ignore_index=-1, label_smoothing=0.2)
    expected = focal_cuda.sigmoid_focal_loss(input, target, 0.4, 1.0, "sum", ignore_index=-1, label_smoothing=0.2)
    assert torch.equal(module(input, target), expected)


@pytest.mark.parametrize("reduction", reductions)
def test_bce_focal_loss_module(device, reduction):
    prob = torch.rand(5, 3, device=device)
    target = (torch.rand(5, 3, device=device) < 0.5).float()
    module = focal_cuda.BCEFocalLoss(3, 0.7, reduction)
    assert torch.equal(module(prob, target), focal_cuda.binary_focal_loss(prob, target, 0.7, 3, reduction))


def test_modules_backpropagate_to_their_input(device):
    input = torch.randn(4, 3, device=device, requires_grad=True)
    target = torch.randint(0, 3, (4,), device=device)
    focal_cuda.FocalLoss(3, alpha=torch.ones(3, 1)).to(device)(input, target).backward()
    assert input.grad is not None and torch.isfinite(input.grad).all() and input.grad.abs().sum() > 0
