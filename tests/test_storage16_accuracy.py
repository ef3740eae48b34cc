"""fp16 / bf16 results to the last digit (docs/design.md §2 and §7).

The CUDA kernels compute fp16 / bf16 results with shorter series and powers than float32 ones (focal_math.h's
Precision::kStorage16: about 2e-5 relative, 25 times under fp16's rounding). The claim: every element of loss and
gradient is within one unit in the last place of the format of float64 math on the same (16-bit) inputs, wherever
that value is a normal number of the format. One rounding of a result 2e-5 off stays within half an ulp plus 2e-5;
a series or power off by more than the claim moves results by whole ulps. On the CPU kernels and on the emulated
CUDA kernels at the documented worst-case approx error (hashed per input, all up, all down).
"""
import pytest
import torch

import focal_cuda
from focal_cuda import reference

from test_edge_accuracy import loss_and_grad


DTYPES = [torch.bfloat16, torch.float16]
SIGNIFICANT_BITS = {torch.bfloat16: 8, torch.float16: 11}


def assert_within_one_ulp(actual, expected, dtype, what):
    """|actual - expected| <= one ulp of `dtype` at |expected|, per element where expected is a normal number."""
    actual = actual.detach().double()
    expected = expected.detach().double()
    assert actual.shape == expected.shape
    finite = torch.isfinite(expected)
    assert torch.equal(torch.isfinite(actual), finite), f"{what}: non-finite where the truth is finite (or not)"
    magnitude = expected.abs()[finite]
    normal = magnitude >= torch.finfo(dtype).tiny
    ulp = torch.exp2(torch.floor(torch.log2(magnitude.clamp_min(torch.finfo(dtype).tiny))) -
                     (SIGNIFICANT_BITS[dtype] - 1))
    error = (actual[finite] - expected[finite]).abs()
    bad = normal & (error > ulp)
    if bad.any():
        worst = (error / ulp)[normal].argmax()
        raise AssertionError(f"{what} ({dtype}): {int(bad.sum())} of {int(normal.sum())} elements off by more than "
                             f"one ulp; worst {(error / ulp)[normal][worst].item():.2f} ulp: "
                             f"{actual[finite][normal][worst].item()!r} vs {expected[finite][normal][worst].item()!r}")


def check(function, reference_function, input, target, dtype, **kwargs):
    """function on the 16-bit input against reference_function in float64 on the same values."""
    input = input.to(dtype)
    target16 = target.to(dtype) if target.is_floating_point() else target
    loss, grad = loss_and_grad(function, input, target16, **kwargs)
    target64 = target16.double() if target.is_floating_point() else target
    truth_loss, truth_grad = loss_and_grad(reference_function, input.double(), target64, **kwargs)
    assert (loss >= 0).all()
    assert_within_one_ulp(loss, truth_loss, dtype, "loss")
    assert_within_one_ulp(grad, truth_grad, dtype, "gradient")


# Logits from -30 to 30 (easy examples at both ends), 8 per row for the class-index layouts.
LOGITS = torch.linspace(-30, 30, 481)[:480]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 3.5])
@pytest.mark.parametrize("t", [0.0, 1.0])
def test_sigmoid_focal_dense(kernels, dtype, gamma, t):
    check(focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, LOGITS, torch.full_like(LOGITS, t), dtype,
          alpha=0.25, gamma=gamma)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("classes", [8, 16, 12, 10])
def test_sigmoid_focal_class_index(kernels, dtype, gamma, classes):
    # rows of whole vectors (8, 16) and rows that share vectors (12, 10); every class the target once, background
    # and ignored rows too
    input = LOGITS[: (len(LOGITS) // classes) * classes].reshape(-1, classes)
    rows = input.shape[0]
    target = torch.arange(rows) % (classes + 2)
    target[target == classes + 1] = -100
    check(focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, input, target, dtype, alpha=0.25, gamma=gamma)
    # and with the rows' order of logits reversed, so each class sees both signs
    check(focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, input.flip(0).contiguous(), target, dtype,
          alpha=0.25, gamma=gamma)


PROBS = torch.tensor([1 - 2.0**-11, 1 - 2.0**-8, 0.999, 0.99, 0.9, 0.75, 0.5, 0.4999, 0.3, 0.1, 1e-2, 1e-3, 1e-4,
                      2.0**-14], dtype=torch.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("t", [0.0, 1.0])
def test_binary_focal(kernels, dtype, gamma, t):
    probs = PROBS[PROBS.to(dtype) < 1]  # not those that round to 1 (BCELoss's clamped gradient, not this claim)
    check(focal_cuda.binary_focal_loss, reference.binary_focal_loss, probs, torch.full_like(probs, t), dtype,
          alpha=0.25, gamma=gamma)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("clip", [0.0, 0.05])
@pytest.mark.parametrize("t", [0.0, 1.0])
def test_asymmetric(kernels, dtype, clip, t):
    check(focal_cuda.asymmetric_loss, reference.asymmetric_loss, LOGITS, torch.full_like(LOGITS, t), dtype,
          gamma_pos=1.0, gamma_neg=4.0, clip=clip)


@pytest.mark.parametrize("dtype", DTYPES)
def test_varifocal_class_index_with_scores(kernels, dtype):
    input = LOGITS.reshape(-1, 8)
    rows = input.shape[0]
    target = torch.arange(rows) % 9
    score = torch.linspace(0.05, 1.0, rows).to(dtype)
    loss, grad = loss_and_grad(focal_cuda.varifocal_loss, input.to(dtype), target, score=score)
    truth_loss, truth_grad = loss_and_grad(reference.varifocal_loss, input.to(dtype).double(), target,
                                           score=score.double())
    assert_within_one_ulp(loss, truth_loss, dtype, "loss")
    assert_within_one_ulp(grad, truth_grad, dtype, "gradient")


def softmax_rows(classes):
    """Rows of `classes` logits with the target's margin from -8 to 16 (hard rows to confident ones)."""
    generator = torch.Generator().manual_seed(classes)
    rows = 48
    input = torch.randn(rows, classes, generator=generator, dtype=torch.float64) * 2
    target = torch.arange(rows) % classes
    input[torch.arange(rows), target] += torch.linspace(-8, 16, rows, dtype=torch.float64)
    return input, target


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gamma", [0.0, 2.0, 2.5])
@pytest.mark.parametrize("classes", [80, 13])
def test_softmax_focal_rows(kernels, dtype, gamma, classes):
    input, target = softmax_rows(classes)
    check(focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, input, target, dtype, gamma=gamma)
