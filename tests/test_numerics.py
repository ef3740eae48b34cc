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


def test_numerics_table_claims():
    """The statements under the README's numerics table, on a smaller run of benchmarks/numerics.py (the table and
    docs/numerics_cpu.csv come from the full run)."""
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "numerics.py")
    spec = importlib.util.spec_from_file_location("focal_numerics", path)
    numerics = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(numerics)
    numerics.ROWS = 128
    rows = numerics.measure("cpu", seed=0)
    by_key = {(r["loss"], r["implementation"], r["logits"], r["setting"]): r for r in rows}
    assert len(by_key) == 3 * 2 * 2 * len(numerics.SETTINGS) and not any("error" in r for r in rows)
    one_rounding = {"fp32": 1e-6, "bf16": 2.0**-8, "fp16": 2.0**-10, "autocast bf16": 2.0**-8,
                    "autocast fp16": 2.0**-10}

    for (loss, implementation, logits, setting), row in by_key.items():
        if implementation != "focal_cuda":
            continue
        assert row["non_finite_loss"] == 0 and row["non_finite_grad"] == 0, (loss, logits, setting)
        assert row["loss_of_max"] <= one_rounding[setting], (loss, logits, setting, row["loss_of_max"])
        assert row["grad_of_max"] <= one_rounding[setting], (loss, logits, setting, row["grad_of_max"])

    for loss in ["sigmoid", "softmax"]:
        for logits in ["typical", "saturated"] if loss == "sigmoid" else ["typical"]:
            ours, naive = by_key[(loss, "focal_cuda", logits, "fp32")], by_key[(loss, "naive", logits, "fp32")]
            for q in ["loss", "grad"]:
                assert naive[f"{q}_of_max"] <= 2 * ours[f"{q}_of_max"] + 1e-9, (loss, logits, q)
    for setting in ["bf16", "autocast bf16"]:
        for logits in ["typical", "saturated"]:
            ours, naive = by_key[("sigmoid", "focal_cuda", logits, setting)], by_key[("sigmoid", "naive", logits, setting)]
            for q in ["loss", "grad"]:
                assert naive[f"{q}_of_max"] <= 10 * ours[f"{q}_of_max"], (logits, setting, q)
                assert naive[f"{q}_per_element"] >= 100 * ours[f"{q}_per_element"], (logits, setting, q)

    for setting in numerics.SETTINGS:
        naive_softmax = by_key[("softmax", "naive", "saturated", setting)]
        assert naive_softmax["non_finite_loss"] > 0 and naive_softmax["non_finite_grad"] > 0, setting
        assert by_key[("binary", "naive", "saturated", setting)]["non_finite_loss"] > 0, setting
    assert by_key[("softmax", "naive", "typical", "fp16")]["non_finite_grad"] > 0
    saturated_softmax = by_key[("softmax", "focal_cuda", "saturated", "fp32")]
    assert saturated_softmax["loss_of_max"] < 1e-7


@pytest.mark.parametrize("x", [10.0, 100.0, 1e4, -10.0, -1e4])
@pytest.mark.parametrize("t", [0.999, 1 - 5.3e-4, 1e-3])
def test_sigmoid_soft_target_near_0_or_1_at_large_logits_has_no_cancellation(device, x, t):
    """docs/design.md section 2: BCE on logits without cancellation for any t in [0, 1] at any |x|. In float32,
    max(x, 0) - t x loses the digits of x (1 - t): 3.6e-5 relative at x = 10, t = 0.999, 1e-4 at x = 1e4 (found by
    the fuzz: class index target with label smoothing 1e-3). t is the float32 value given, so the float64 reference
    sees the same t; compared relatively, without the absolute floor."""
    input = torch.full((3,), x, device=device)
    target = torch.full((3,), t, device=device)
    for gamma in [0.0, 2.0, 0.5]:
        loss = focal_cuda.sigmoid_focal_loss(input, target, alpha=None, gamma=gamma, reduction="none")
        expected = reference.sigmoid_focal_loss(input.double(), target.double(), alpha=None, gamma=gamma,
                                                reduction="none")
        torch.testing.assert_close(loss.double(), expected, rtol=4e-6, atol=0)
