"""The nn.Module wrappers: constructor forms, stored arguments, alpha as a buffer."""

import pytest
import torch

import focal_cuda
from focal_cuda import reference
from conftest import check_against_reference, floating_dtypes, reductions


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


def module_matches_reference(module, reference_function, input, target, **reference_kwargs):
    """module(input, target): value and gradient (random grad_output) equal the float64 reference called with
    the arguments the module was constructed with (never the module's own function)."""
    return check_against_reference(lambda x, t: module(x, t),
                                   lambda x, t: reference_function(x, t, **reference_kwargs), input, target)


@pytest.mark.parametrize(
    "kwargs,expected_reduction",
    [
        (dict(), "mean"),
        (dict(size_average=True), "mean"),
        (dict(size_average=False), "sum"),
        (dict(size_average=None), "mean"),  # as torch.nn's legacy size_average=None: the default
        (dict(size_average=False, reduction="none"), "none"),
        (dict(size_average=True, reduction="sum"), "sum"),
        (dict(reduction="mean"), "mean"),
    ],
)
def test_focal_loss_reduction_from_size_average_and_reduction(device, kwargs, expected_reduction):
    input = torch.randn(7, 5, device=device)
    target = torch.randint(0, 5, (7,), device=device)
    module_matches_reference(focal_cuda.FocalLoss(5, **kwargs), reference.softmax_focal_loss, input, target,
                             reduction=expected_reduction)


@pytest.mark.parametrize("dtype", floating_dtypes)
def test_focal_loss_passes_every_argument(device, dtype):
    input = torch.randn(6, 4, 3, device=device).to(dtype)
    target = torch.randint(0, 4, (6, 3), device=device)
    target[0] = 2
    alpha = [0.125, 0.25, 0.5, 1.0]
    module = focal_cuda.FocalLoss(
        4, alpha=alpha, gamma=1.5, reduction="none", ignore_index=2, label_smoothing=0.1
    ).to(device)
    module_matches_reference(module, reference.softmax_focal_loss, input, target, alpha=torch.tensor(alpha),
                             gamma=1.5, reduction="none", ignore_index=2, label_smoothing=0.1)


@pytest.mark.parametrize("gamma", [0.0, 2.0, 3.0])
@pytest.mark.parametrize("alpha_form", ["column tensor", "float", "list"])
def test_focal_loss_classic_constructor(device, alpha_form, gamma):
    """FocalLoss(class_num, alpha=torch.ones(C, 1) / a float / a list, gamma, size_average=False)."""
    weights = torch.tensor([0.5, 1.0, 1.5, 2.0, 0.25])
    alpha = {"column tensor": weights.reshape(5, 1), "float": 0.25, "list": weights.tolist()}[alpha_form]
    expected_alpha = 0.25 if alpha_form == "float" else weights
    module = focal_cuda.FocalLoss(5, alpha, gamma, False).to(device)
    input = 3 * torch.randn(9, 5, device=device)
    target = torch.randint(0, 5, (9,), device=device)
    module_matches_reference(module, reference.softmax_focal_loss, input, target, alpha=expected_alpha, gamma=gamma,
                             reduction="sum")


def test_focal_loss_without_class_num_or_alpha(device):
    input = torch.randn(6, 4, device=device)
    target = torch.randint(0, 4, (6,), device=device)
    module_matches_reference(focal_cuda.FocalLoss(), reference.softmax_focal_loss, input, target)


def test_focal_loss_float_alpha_without_class_num_weights_every_class(device):
    input = torch.randn(6, 4, 3, device=device)
    target = torch.randint(0, 4, (6, 3), device=device)
    module_matches_reference(focal_cuda.FocalLoss(alpha=0.4, gamma=3.0), reference.softmax_focal_loss, input, target,
                             alpha=0.4, gamma=3.0)


def test_sigmoid_focal_loss_module_default_reduction_is_mean(device):
    input = torch.randn(6, 4, device=device)
    target = torch.randint(0, 5, (6,), device=device)
    # module default reduction is "mean", unlike the function's torchvision default "none"
    module_matches_reference(focal_cuda.SigmoidFocalLoss(), reference.sigmoid_focal_loss, input, target,
                             reduction="mean")


@pytest.mark.parametrize("form", ["dense", "index"])
@pytest.mark.parametrize("reduction", reductions)
def test_sigmoid_focal_loss_module_passes_every_argument(device, reduction, form):
    input = 3 * torch.randn(6, 4, device=device)
    if form == "dense":
        target = torch.rand(6, 4, device=device)
    else:
        target = torch.randint(0, 5, (6,), device=device)
        target[1] = 2
    module = focal_cuda.SigmoidFocalLoss(0.4, 3.0, reduction, ignore_index=2, label_smoothing=0.2)
    module_matches_reference(module, reference.sigmoid_focal_loss, input, target, alpha=0.4, gamma=3.0,
                             reduction=reduction, ignore_index=2, label_smoothing=0.2)


@pytest.mark.parametrize("gamma", [0.0, 2, 3, 2.5])
@pytest.mark.parametrize("reduction", reductions)
def test_bce_focal_loss_module(device, reduction, gamma):
    prob = 0.02 + 0.96 * torch.rand(5, 3, device=device)
    target = (torch.rand(5, 3, device=device) < 0.5).float()
    module = focal_cuda.BCEFocalLoss(gamma, 0.7, reduction)  # the classic order: gamma, then alpha
    module_matches_reference(module, reference.binary_focal_loss, prob, target, alpha=0.7, gamma=gamma,
                             reduction=reduction)


def test_bce_focal_loss_defaults_are_the_classic_ones(device):
    prob = 0.02 + 0.96 * torch.rand(5, 3, device=device)
    target = (torch.rand(5, 3, device=device) < 0.5).float()
    module_matches_reference(focal_cuda.BCEFocalLoss(), reference.binary_focal_loss, prob, target, alpha=0.25,
                             gamma=2.0, reduction="mean")


def test_bce_focal_loss_accepts_elementwise_mean_as_mean_with_a_deprecation_warning(device):
    """The classic class's default reduction="elementwise_mean" (PyTorch's pre-1.0 spelling of "mean"), warned
    about as torch.nn.functional warns about it: a UserWarning saying it is deprecated."""
    with pytest.warns(UserWarning, match=r"elementwise_mean.*deprecated.*reduction='mean'"):
        module = focal_cuda.BCEFocalLoss(2, 0.25, "elementwise_mean")
    assert module.reduction == "mean"
    prob = 0.02 + 0.96 * torch.rand(5, 3, device=device)
    target = (torch.rand(5, 3, device=device) < 0.5).float()
    module_matches_reference(module, reference.binary_focal_loss, prob, target, alpha=0.25, gamma=2.0,
                             reduction="mean")


def test_modules_backpropagate_to_their_input(device):
    input = torch.randn(4, 3, device=device, requires_grad=True)
    target = torch.randint(0, 3, (4,), device=device)
    focal_cuda.FocalLoss(3, alpha=torch.ones(3, 1)).to(device)(input, target).backward()
    assert input.grad is not None and torch.isfinite(input.grad).all() and input.grad.abs().sum() > 0
