"""softmax_focal_loss: value and gradient against the float64 reference."""

import itertools
import random

import pytest
import torch

import focal_cuda
from focal_cuda import reference
from conftest import check_against_reference, floating_dtypes, gammas, reductions

alpha_forms = ["none", "float", "list", "tensor_c", "tensor_c1"]


def make_alpha(form, num_classes, device):
    """Every accepted alpha form; tensors are float32 so the float64 truth sees the same values."""
    weights = 0.2 + 0.8 * torch.rand(num_classes)
    if form == "none":
        return None
    if form == "float":
        return 0.75
    if form == "list":
        return [float(w) for w in weights.to(torch.float32)]
    if form == "tensor_c":
        return weights.to(device)
    return weights.reshape(num_classes, 1).to(device)


def make_target(input_shape, device, ignore_index=-100, ignore_fraction=0.2):
    """Class indices of shape (N, d1..dk) (or () for an unbatched (C,) input), some ignored."""
    if len(input_shape) == 1:
        return torch.randint(0, input_shape[0], ()).to(device)
    num_classes = input_shape[1]
    target_shape = input_shape[:1] + input_shape[2:]
    target = torch.randint(0, num_classes, target_shape)
    target[torch.rand(target_shape) < ignore_fraction] = ignore_index
    return target.to(device)


# dtype x reduction x gamma x alpha form crossed; label smoothing, ignore_index and layout sampled.
_sampler = random.Random(3)
main_cases = [
    pytest.param(
        dtype,
        reduction,
        gamma,
        alpha_form,
        _sampler.choice([0.0, 0.0, 0.1, 1.0]),
        _sampler.choice([-100, 0, 2]),
        _sampler.choice([(7, 5), (3, 5, 4), (2, 5, 2, 3), (5,)]),
        id=f"{str(dtype)[6:]}-{reduction}-g{gamma}-alpha_{alpha_form}",
    )
    for dtype, reduction, gamma, alpha_form in itertools.product(
        floating_dtypes, reductions, gammas, alpha_forms
    )
]


@pytest.mark.parametrize("dtype,reduction,gamma,alpha_form,label_smoothing,ignore_index,shape", main_cases)
def test_matches_reference(device, dtype, reduction, gamma, alpha_form, label_smoothing, ignore_index, shape):
    input = (3 * torch.randn(shape)).to(dtype=dtype, device=device)
    num_classes = shape[0] if len(shape) == 1 else shape[1]
    target = make_target(shape, device, ignore_index)
    alpha = make_alpha(alpha_form, num_classes, device)
    loss = check_against_reference(
        focal_cuda.softmax_focal_loss,
        reference.softmax_focal_loss,
        input,
        target,
        alpha,
        gamma,
        reduction,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
    )
    assert loss.shape == (target.shape if reduction == "none" else ())


@pytest.mark.parametrize(
    "shape",
    [(4, 1), (5, 2), (9, 7), (3, 129), (2, 1000), (2, 32000), (2, 7, 3, 5), (2, 3, 2, 3, 4), (129,), (1, 3, 33)],
    ids=str,
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes(device, dtype, shape):
    input = torch.randn(shape, dtype=dtype, device=device)
    target = make_target(shape, device)
    num_classes = shape[0] if len(shape) == 1 else shape[1]
    alpha = make_alpha("tensor_c", num_classes, device)
    for reduction in reductions:
        check_against_reference(
            focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, input, target, alpha, 2.0, reduction,
            label_smoothing=0.05,
        )


@pytest.mark.parametrize("layout", ["transposed", "sliced_classes", "sliced_rows", "channels_last", "permuted_5d"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_non_contiguous(device, dtype, layout):
    if layout == "transposed":
        input = torch.randn(6, 9, dtype=dtype, device=device).t()
    elif layout == "sliced_classes":
        input = torch.randn(7, 12, dtype=dtype, device=device)[:, ::2]
    elif layout == "sliced_rows":
        input = torch.randn(12, 5, dtype=dtype, device=device)[::3]
    elif layout == "channels_last":
        input = torch.randn(2, 5, 3, 4, dtype=dtype, device=device).to(memory_format=torch.channels_last)
    else:
        input = torch.randn(2, 3, 4, 2, 5, dtype=dtype, device=device).permute(0, 4, 2, 3, 1)
    assert not input.is_contiguous()
    target = make_target(input.shape, device)
    if target.dim() >= 2:
        target = target.transpose(0, -1).contiguous().transpose(0, -1)
    for reduction in reductions:
        check_against_reference(
            focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, input, target, None, 2.0, reduction,
            ignore_index=-100,
        )


@pytest.mark.parametrize("shape", [(0, 5), (0, 5, 3), (2, 5, 0)], ids=str)
def test_empty_input(device, shape):
    input = torch.randn(shape, device=device, requires_grad=True)
    target = make_target(shape, device)
    for reduction in reductions:
        loss = focal_cuda.softmax_focal_loss(input, target, reduction=reduction)
        assert loss.shape == (target.shape if reduction == "none" else ())
        assert loss.sum().item() == 0.0
        (grad,) = torch.autograd.grad(loss.sum(), input)
        assert grad.shape == shape


@pytest.mark.parametrize("dtype", floating_dtypes)
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5)], ids=str)
def test_mean_over_all_ignored_is_zero_with_zero_gradient(device, dtype, shape):
    input = torch.randn(shape, dtype=dtype, device=device, requires_grad=True)
    target = torch.full(shape[:1] + shape[2:], 7, device=device)
    loss = focal_cuda.softmax_focal_loss(input, target, reduction="mean", ignore_index=7, label_smoothing=0.1)
    (grad,) = torch.autograd.grad(loss, input)
    assert loss.item() == 0.0
    assert torch.equal(grad, torch.zeros_like(grad))


def test_mean_divides_by_non_ignored_rows_even_with_alpha(device):
    input = torch.randn(6, 4, dtype=torch.float64, device=device)
    target = torch.tensor([0, 1, -100, 3, -100, 2], device=device)
    alpha = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=torch.float64, device=device)
    per_row = focal_cuda.softmax_focal_loss(input, target, alpha, reduction="none")
    assert per_row[2].item() == 0.0 and per_row[4].item() == 0.0
    mean = focal_cuda.softmax_focal_loss(input, target, alpha, reduction="mean")
    torch.testing.assert_close(mean, per_row.sum() / 4)


@pytest.mark.parametrize("normalizer_kind", ["float", "tensor"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_normalizer_divides_the_sum(device, dtype, normalizer_kind):
    input = torch.randn(8, 5, 3, dtype=dtype, device=device)
    target = make_target(input.shape, device)
    normalizer = 5.0 if normalizer_kind == "float" else torch.tensor(5.0, device=device)
    check_against_reference(
        focal_cuda.softmax_focal_loss,
        reference.softmax_focal_loss,
        input,
        target,
        None,
        2.0,
        "mean",
        normalizer=normalizer,
    )


def test_unbatched_equals_batch_of_one(device):
    input = torch.randn(11, dtype=torch.float64, device=device)
    target = torch.tensor(4, device=device)
    for reduction in reductions:
        unbatched = focal_cuda.softmax_focal_loss(input, target, reduction=reduction)
        batched = focal_cuda.softmax_focal_loss(input[None], target[None], reduction=reduction)
        assert unbatched.shape == ()
        torch.testing.assert_close(unbatched, batched.reshape(()))


def test_input_and_target_are_not_modified(device):
    input = torch.randn(5, 4, 3, device=device, requires_grad=True)
    target = make_target(input.shape, device)
    alpha = torch.rand(4, device=device)
    before = [input.detach().clone(), target.clone(), alpha.clone()]
    focal_cuda.softmax_focal_loss(input, target, alpha, label_smoothing=0.1).backward()
    assert torch.equal(input.detach(), before[0])
    assert torch.equal(target, before[1])
    assert torch.equal(alpha, before[2])


@pytest.mark.parametrize("shift", [-60.0, -12.0, 12.0, 1000.0])
@pytest.mark.parametrize("num_classes", [1, 2, 3, 4, 5, 8, 9, 17, 33, 65])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_shifted_logits(device, dtype, num_classes, shift):
    """Rows whose logits are all far below or above 0, for every class count around vector widths:
    softmax depends only on differences, so nothing about the row's offset may leak into the result."""
    input = (torch.randn(3, num_classes) + shift).to(dtype=dtype, device=device)
    target = torch.randint(0, num_classes, (3,), device=device)
    for gamma in [0.5, 2.0]:
        check_against_reference(
            focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, input, target, None, gamma, "none",
            label_smoothing=0.1,
        )


def test_confident_rows_keep_their_digits():
    """Row [0, -d], target 0: loss = log1p(e^-d). F.cross_entropy's float32 value is 3.5e-3 off at d = 14 (log of
    a sum that rounds near 1); ours is within 1e-5 up to d = 16, and never 0."""
    d = torch.arange(10, 17, dtype=torch.float32)
    rows = torch.stack([torch.zeros_like(d), -d], dim=1)
    loss = focal_cuda.softmax_focal_loss(rows, torch.zeros(len(d), dtype=torch.long), gamma=0.0, reduction="none")
    expected = torch.log1p(torch.exp(-d.double()))
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2)])
def test_ignored_row_with_nan_logits_has_zero_gradient(shape):
    """An ignored row gives loss 0 and gradient 0 whatever its logits hold (README: non-finite inputs)."""
    x = torch.randn(shape)
    x[1] = float("nan")
    target = torch.zeros((shape[0],) + shape[2:], dtype=torch.long)
    target[1] = -100
    x.requires_grad_(True)
    loss = focal_cuda.softmax_focal_loss(x, target, reduction="sum")
    loss.backward()
    assert torch.isfinite(loss) and (x.grad[1] == 0).all() and torch.isfinite(x.grad).all()
