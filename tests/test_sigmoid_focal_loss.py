"""sigmoid_focal_loss: value and gradient against the float64 reference."""

import itertools
import random

import pytest
import torch

import focal_cuda
from focal_cuda import reference
from conftest import check_against_reference, floating_dtypes, gammas, reductions

sigmoid_alphas = [0.25, None, -1.0, 0.8]


def make_target(form, input_shape, dtype, device, ignore_index=-100, ignore_fraction=0.25):
    """dense: soft and hard values in [0, 1]; index: classes 0..C (C = background), some rows ignored."""
    num_classes = input_shape[-1]
    if form == "dense":
        soft = torch.rand(input_shape)
        hard = (torch.rand(input_shape) < 0.3).to(soft.dtype)
        target = torch.where(torch.rand(input_shape) < 0.5, soft, hard)
        return target.to(dtype=dtype, device=device)
    target = torch.randint(0, num_classes + 1, input_shape[:-1])
    target[torch.rand(target.shape) < ignore_fraction] = ignore_index
    return target.to(device)


# dtype x reduction x gamma x alpha x target form crossed; label smoothing, ignore_index and the
# leading shape sampled per case with a fixed seed.
_sampler = random.Random(2)
main_cases = [
    pytest.param(
        dtype,
        reduction,
        gamma,
        alpha,
        form,
        _sampler.choice([0.0, 0.0, 0.1, 1.0]),
        _sampler.choice([-100, -1]),
        _sampler.choice([(5, 7), (3, 2, 7), (9, 1)]),
        id=f"{str(dtype)[6:]}-{reduction}-g{gamma}-a{alpha}-{form}",
    )
    for dtype, reduction, gamma, alpha, form in itertools.product(
        floating_dtypes, reductions, gammas, sigmoid_alphas, ["dense", "index"]
    )
]


@pytest.mark.parametrize("dtype,reduction,gamma,alpha,form,label_smoothing,ignore_index,shape", main_cases)
def test_matches_reference(device, dtype, reduction, gamma, alpha, form, label_smoothing, ignore_index, shape):
    input = (3 * torch.randn(shape)).to(dtype=dtype, device=device)
    target = make_target(form, shape, dtype, device, ignore_index)
    loss = check_against_reference(
        focal_cuda.sigmoid_focal_loss,
        reference.sigmoid_focal_loss,
        input,
        target,
        alpha,
        gamma,
        reduction,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
    )
    assert loss.shape == (shape if reduction == "none" else ())


@pytest.mark.parametrize("form", ["dense", "index"])
@pytest.mark.parametrize(
    "shape",
    [(4, 1), (3, 2), (5, 129), (2, 1000), (1, 32000), (2, 3, 4, 5), (1, 2, 3, 2, 3), (7,), (11, 7)],
    ids=str,
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes(device, dtype, shape, form):
    input = torch.randn(shape, dtype=dtype, device=device)
    target = make_target(form, shape, dtype, device)
    for reduction in reductions:
        check_against_reference(
            focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, input, target, 0.25, 2.0, reduction
        )


@pytest.mark.parametrize("form", ["dense", "index"])
@pytest.mark.parametrize("layout", ["sliced", "transposed", "sliced_rows", "expanded_target"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_non_contiguous(device, dtype, layout, form):
    base = torch.randn(12, 10, dtype=dtype, device=device)
    if layout == "sliced":
        input = base[:, ::2]
    elif layout == "transposed":
        input = base.t()
    elif layout == "sliced_rows":
        input = base[1::3, 1:]
    else:
        input = base[:, :7]
    assert not input.is_contiguous()
    target = make_target(form, input.shape, dtype, device)
    if layout == "transposed":
        target = target.t().contiguous().t() if form == "dense" else target
    if layout == "expanded_target":
        target = target[:1].expand_as(target) if form == "dense" else target[:1].expand(target.shape)
    for reduction in reductions:
        check_against_reference(
            focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, input, target, 0.25, 2.5, reduction
        )


@pytest.mark.parametrize("form", ["dense", "index"])
def test_empty_input(device, form):
    input = torch.randn(0, 5, device=device, requires_grad=True)
    target = make_target(form, input.shape, torch.float32, device)
    for reduction, expected_shape in [("none", (0, 5)), ("sum", ()), ("mean", ())]:
        loss = focal_cuda.sigmoid_focal_loss(input, target, reduction=reduction)
        assert loss.shape == expected_shape
        assert torch.equal(loss.sum().cpu(), torch.tensor(0.0))
        (grad,) = torch.autograd.grad(loss.sum(), input)
        assert grad.shape == (0, 5)


@pytest.mark.parametrize("dtype", floating_dtypes)
def test_mean_over_all_ignored_rows_is_zero_with_zero_gradient(device, dtype):
    input = torch.randn(4, 3, dtype=dtype, device=device, requires_grad=True)
    target = torch.full((4,), -100, device=device)
    loss = focal_cuda.sigmoid_focal_loss(input, target, reduction="mean")
    (grad,) = torch.autograd.grad(loss, input)
    assert loss.item() == 0.0
    assert torch.equal(grad, torch.zeros_like(grad))


def test_ignored_rows_are_zero_in_none_and_not_counted_in_mean(device):
    input = torch.randn(6, 4, dtype=torch.float64, device=device)
    target = torch.tensor([0, 4, -100, 2, -100, 3], device=device)
    per_element = focal_cuda.sigmoid_focal_loss(input, target, reduction="none")
    assert torch.equal(per_element[2], torch.zeros(4, dtype=torch.float64, device=device))
    assert torch.equal(per_element[4], torch.zeros(4, dtype=torch.float64, device=device))
    mean = focal_cuda.sigmoid_focal_loss(input, target, reduction="mean")
    torch.testing.assert_close(mean, per_element.sum() / (4 * 4))


@pytest.mark.parametrize("form", ["dense", "index"])
@pytest.mark.parametrize("normalizer_kind", ["float", "tensor"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_normalizer_divides_the_sum(device, dtype, normalizer_kind, form):
    input = torch.randn(8, 5, dtype=dtype, device=device)
    target = make_target(form, input.shape, dtype, device)
    normalizer = 3.0 if normalizer_kind == "float" else torch.tensor(3.0, device=device)
    check_against_reference(
        focal_cuda.sigmoid_focal_loss,
        reference.sigmoid_focal_loss,
        input,
        target,
        0.25,
        2.0,
        "mean",
        normalizer=normalizer,
    )
    total = focal_cuda.sigmoid_focal_loss(input, target, reduction="sum")
    normalized = focal_cuda.sigmoid_focal_loss(input, target, reduction="mean", normalizer=normalizer)
    torch.testing.assert_close(normalized.double(), total.double() / 3.0, **_loose(dtype))


def _loose(dtype):
    return dict(rtol=2e-2, atol=1e-3) if dtype in (torch.float16, torch.bfloat16) else dict(rtol=1e-5, atol=1e-6)


def test_input_and_target_are_not_modified(device):
    input = torch.randn(5, 4, device=device, requires_grad=True)
    target = torch.rand(5, 4, device=device)
    input_before, target_before = input.detach().clone(), target.clone()
    loss = focal_cuda.sigmoid_focal_loss(input, target, reduction="mean")
    loss.backward()
    assert torch.equal(input.detach(), input_before)
    assert torch.equal(target, target_before)

