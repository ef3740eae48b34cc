"""One rule for non-finite inputs, the same on both backends (docs/design.md §2, README "Non-finite inputs"):

- NaN or inf in a counted element's logit / target / score / weight reaches loss and gradient as torch's
  formula would: a NaN input makes its element's loss NaN, and nothing leaks into other rows;
- an ignored row (class-index target == ignore_index) gives loss 0 and gradient 0 whatever its logits,
  score or weights hold;
- a user weight of 0 is an ordinary weight: 0 * NaN = NaN, as `loss * weight`.

Checked on a grid of placements, in NaN-ness per element, on the CPU kernels and the emulated CUDA kernels, which
must agree bit for bit in NaN-ness.
"""
import math

import pytest
import torch

import focal_cuda
from focal_cuda import reference

from conftest import backends

SPECIALS = [math.nan, math.inf, -math.inf]
ROWS, C = 6, 5
IGNORED_ROW, ZERO_WEIGHT_ROW = 1, 3


def run(function, x, *args, **kwargs):
    leaf = x.detach().clone().requires_grad_(True)
    loss = function(leaf, *args, reduction="none", **kwargs)
    (grad,) = torch.autograd.grad(loss.sum(), leaf)
    return loss.detach(), grad


def on_both_backends(function, x, *args, **kwargs):
    """(loss, grad) from the CPU kernels and from the emulated CUDA kernels."""
    from focal_cuda import testing
    results = [run(function, x, *args, **kwargs)]
    if not testing.emulation_available():
        pytest.skip("focal_cuda was built without FOCAL_CUDA_EMULATE=1")
    with testing.emulated_cuda():
        results.append(run(function, x, *args, **kwargs))
    return results


def assert_rule(results, what, nan_at=None, clean_rows=()):
    """Both backends agree in NaN-ness (loss and gradient); a NaN input at `nan_at` makes that element's loss NaN;
    rows in `clean_rows` (no special value in them) stay finite."""
    (cpu_loss, cpu_grad), (cuda_loss, cuda_grad) = results
    assert torch.equal(cpu_loss.isnan(), cuda_loss.isnan()), (
        f"{what}: the loss's NaN positions differ between CPU {cpu_loss.isnan().nonzero().tolist()} and CUDA "
        f"{cuda_loss.isnan().nonzero().tolist()}")
    assert torch.equal(cpu_grad.isnan(), cuda_grad.isnan()), (
        f"{what}: the gradient's NaN positions differ between CPU {cpu_grad.isnan().nonzero().tolist()} and CUDA "
        f"{cuda_grad.isnan().nonzero().tolist()}")
    for loss, grad in results:
        if nan_at is not None:
            assert loss[nan_at].isnan(), f"{what}: a NaN input must reach its loss"
        for r in clean_rows:
            assert torch.isfinite(loss[r]).all() and torch.isfinite(grad[r]).all(), f"{what}: NaN leaked to row {r}"


def grid_input(special, where):
    x = torch.randn(ROWS, C, dtype=torch.float64)
    if where == "ignored_row":
        x[IGNORED_ROW, 2] = special
    elif where == "zero_weight_row":
        x[ZERO_WEIGHT_ROW, 2] = special
    else:
        x[4, 0] = special
    return x


ELEMENTWISE = {
    "sigmoid": (focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, {"gamma": 2.0}),
    "sigmoid_gamma0": (focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, {"gamma": 0.0, "alpha": None}),
    "varifocal": (focal_cuda.varifocal_loss, reference.varifocal_loss, {}),
    "quality_focal": (focal_cuda.quality_focal_loss, reference.quality_focal_loss, {}),
    "asymmetric": (focal_cuda.asymmetric_loss, reference.asymmetric_loss, {}),
}


@pytest.mark.parametrize("special", SPECIALS, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", ["counted", "ignored_row", "zero_weight_row"])
@pytest.mark.parametrize("loss_name", list(ELEMENTWISE))
def test_elementwise_logits(loss_name, where, special):
    function, reference_function, kwargs = ELEMENTWISE[loss_name]
    x = grid_input(special, where)
    target = torch.randint(0, C + 1, (ROWS,))
    target[IGNORED_ROW] = -100
    weight = torch.rand(ROWS, dtype=torch.float64) + 0.5
    weight[ZERO_WEIGHT_ROW] = 0.0
    results = on_both_backends(function, x, target, weight=weight, **kwargs)
    special_row = {"ignored_row": IGNORED_ROW, "zero_weight_row": ZERO_WEIGHT_ROW}.get(where, 4)
    nan_at = (special_row, 2 if where != "counted" else 0) if math.isnan(special) and where != "ignored_row" else None
    assert_rule(results, f"{loss_name}, {special} logit in a {where}", nan_at,
                [r for r in range(ROWS) if r not in (special_row, IGNORED_ROW)])
    # and where nothing is special, the kernels agree with torch's formula
    truth = run(reference_function, x, target, weight=weight, **kwargs)
    torch.testing.assert_close(results[0][0][0], truth[0][0])
    for loss, grad in results:
        assert (loss[IGNORED_ROW] == 0).all() and (grad[IGNORED_ROW] == 0).all(), "an ignored row is 0 and 0"
    if math.isnan(special) and where == "zero_weight_row":
        assert all(loss[ZERO_WEIGHT_ROW, 2].isnan() for loss, _ in results), "0 * NaN is NaN (an ordinary weight)"


@pytest.mark.parametrize("special", SPECIALS, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("what", ["score", "weight_element", "weight_class", "dense_target"])
def test_elementwise_other_inputs(what, special):
    x = torch.randn(ROWS, C, dtype=torch.float64)
    target = torch.randint(0, C, (ROWS,))
    target[IGNORED_ROW] = -100
    kwargs = {}
    if what == "score":
        score = torch.rand(ROWS, dtype=torch.float64)
        score[IGNORED_ROW] = special
        score[4] = special
        kwargs["score"] = score
        function, reference_function = focal_cuda.varifocal_loss, reference.varifocal_loss
    elif what == "dense_target":
        target = torch.rand(ROWS, C, dtype=torch.float64)
        target[4, 1] = special
        function, reference_function = focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss
    else:
        shape = (ROWS, C) if what == "weight_element" else (C,)
        weight = torch.rand(shape, dtype=torch.float64)
        if what == "weight_element":
            weight[IGNORED_ROW, 0] = special
            weight[4, 1] = special
        else:
            weight[1] = special
        kwargs["weight"] = weight
        function, reference_function = focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss
    results = on_both_backends(function, x, target, **kwargs)
    nan_at = None
    if math.isnan(special) and what != "weight_class":
        nan_at = (4, 1) if what != "score" else (4, int(target[4]))
    if math.isnan(special) and what == "weight_class":
        nan_at = (0, 1)
    assert_rule(results, f"{special} in the {what}", nan_at, [0, 2, 3, 5] if what != "weight_class" else [])
    truth = run(reference_function, x, target, **kwargs)
    torch.testing.assert_close(results[0][0][0], truth[0][0], equal_nan=True)
    if target.dtype == torch.long:
        for loss, grad in results:
            assert (loss[IGNORED_ROW] == 0).all() and (grad[IGNORED_ROW] == 0).all(), "an ignored row is 0 and 0"


@pytest.mark.parametrize("special", SPECIALS, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", ["counted", "ignored_row", "zero_weight_row"])
@pytest.mark.parametrize("shape", ["rows", "spatial"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_logits(shape, where, special, smoothing):
    x = grid_input(special, where)
    target = torch.randint(0, C, (ROWS,))
    target[IGNORED_ROW] = -100
    weight = torch.rand(ROWS, dtype=torch.float64) + 0.5
    weight[ZERO_WEIGHT_ROW] = 0.0
    if shape == "spatial":  # (1, C, ROWS): the rows become positions
        x, target, weight = x.t().unsqueeze(0).contiguous(), target.unsqueeze(0), weight.unsqueeze(0)
    kwargs = dict(weight=weight, label_smoothing=smoothing)
    results = on_both_backends(focal_cuda.softmax_focal_loss, x, target, **kwargs)
    special_row = {"ignored_row": IGNORED_ROW, "zero_weight_row": ZERO_WEIGHT_ROW}.get(where, 4)
    flat = [(loss.reshape(-1), grad.reshape(ROWS, C) if shape == "rows" else grad[0].t()) for loss, grad in results]
    nan_row = special_row if math.isnan(special) and where != "ignored_row" else None
    for loss, _ in flat:
        if nan_row is not None:
            assert loss[nan_row].isnan(), "a NaN logit in a counted row (weight 0 included) makes its loss NaN"
    assert_rule(flat, f"softmax {shape}, {special} logit in a {where}", None,
                [r for r in range(ROWS) if r not in (special_row, IGNORED_ROW)])
    truth = run(reference.softmax_focal_loss, x, target, **kwargs)
    torch.testing.assert_close(results[0][0].reshape(-1)[0], truth[0].reshape(-1)[0])
    for loss, grad in results:
        ignored_grad = grad[IGNORED_ROW] if shape == "rows" else grad[0, :, IGNORED_ROW]
        assert (loss.reshape(-1)[IGNORED_ROW] == 0) and (ignored_grad == 0).all(), "an ignored row is 0 and 0"


@pytest.mark.parametrize("special", SPECIALS, ids=["nan", "inf", "-inf"])
def test_binary_probabilities_and_weights(special):
    p = torch.rand(ROWS, C, dtype=torch.float64) * 0.98 + 0.01
    t = torch.rand(ROWS, C, dtype=torch.float64)
    weight = torch.rand(ROWS, C, dtype=torch.float64)
    weight[0, 0] = 0.0
    weight[2, 3] = special
    t[4, 4] = special
    if math.isnan(special):
        p[0, 0] = special  # NaN passes the range check and propagates, under a weight of 0 too
    (cpu_loss, cpu_grad), (cuda_loss, cuda_grad) = on_both_backends(focal_cuda.binary_focal_loss, p, t, weight=weight)
    assert torch.equal(cpu_loss.isnan(), cuda_loss.isnan()) and torch.equal(cpu_grad.isnan(), cuda_grad.isnan())
    assert cpu_loss[2, 3].isnan() == math.isnan(special) and cpu_loss[4, 4].isnan()  # t = +-inf: inf * log terms
    if math.isnan(special):
        assert cpu_loss[0, 0].isnan(), "NaN prob under a weight of 0: 0 * NaN = NaN"
