"""The CUDA launchers and kernels, executed without a GPU by the SIMT emulator (docs/design.md §6).

Every case runs under two thread schedules (forward and reversed order between sync points): the results
must be bitwise equal (a missing __syncthreads or an unordered reduction shows up here), and match the
float64 reference within the tolerance table. sm_count sizes the grids, so one-block and many-block
reductions both run on small inputs.
"""
import contextlib
import os

import pytest
import torch
import torch.nn.functional as F

import focal_cuda
from focal_cuda import reference
from focal_cuda.testing import emulated_cuda, emulation_available, kernel_launches

from conftest import assert_close, floating_dtypes, reductions, to_ground_truth

if not emulation_available():
    if os.environ.get("FOCAL_CUDA_REQUIRE_EMULATION") == "1":
        raise RuntimeError("FOCAL_CUDA_REQUIRE_EMULATION=1 but focal_cuda._emulated is missing: "
                           "build with FOCAL_CUDA_EMULATE=1")
    pytest.skip("focal_cuda was built without FOCAL_CUDA_EMULATE=1", allow_module_level=True)

GAMMAS = [0.0, 0.5, 1.0, 2.0, 2.5, 3.0]  # the integer fast paths and pow


def sigmoid_index_target(rows, C, ignore_every=5):
    """Class indices in [0, C] (C = background) with every `ignore_every`-th row ignored."""
    target = torch.randint(0, C + 1, (rows,))
    target[::ignore_every] = -100
    return target


def softmax_index_target(shape, C, ignore_every=4):
    target = torch.randint(0, C, shape)
    target.view(-1)[::ignore_every] = -100
    return target


def run_emulated(function, input, target, grad_output, *, sm_count, reverse, **kwargs):
    leaf = input.detach().clone().requires_grad_(True)
    with emulated_cuda(sm_count=sm_count, reverse_schedule=reverse):
        loss = function(leaf, target, **kwargs)
        (grad,) = torch.autograd.grad(loss, leaf, grad_output)
    return loss.detach(), grad


def check_emulated(function, reference_function, input, target, *, sm_count=3, **kwargs):
    """Forward and backward on the emulated CUDA kernels: schedule-independent and equal to the reference."""
    dtype = input.dtype
    truth = to_ground_truth(input).requires_grad_(True)
    expected = reference_function(truth, to_ground_truth(target), **{k: to_ground_truth(v) for k, v in kwargs.items()})
    grad_output = torch.randn(expected.shape, dtype=dtype)
    loss, grad = run_emulated(function, input, target, grad_output, sm_count=sm_count, reverse=False, **kwargs)
    loss_rev, grad_rev = run_emulated(function, input, target, grad_output, sm_count=sm_count, reverse=True, **kwargs)
    assert torch.equal(loss, loss_rev), "loss differs between the forward and the reversed thread schedule"
    assert torch.equal(grad, grad_rev), "gradient differs between the forward and the reversed thread schedule"
    assert loss.dtype == dtype and grad.dtype == dtype
    assert_close(loss, expected, dtype, "loss")
    (expected_grad,) = torch.autograd.grad(expected, truth, grad_output.to(torch.float64))
    assert_close(grad, expected_grad, dtype, "gradient")
    return loss, grad


def logits(shape, dtype, scale=3.0):
    return (torch.randn(shape, dtype=torch.float64) * scale).to(dtype)


# ---- sigmoid, dense targets: vector path, scalar tail, unaligned ------------------------------------------------

@pytest.mark.parametrize("n", [1, 7, 129, 1031])
@pytest.mark.parametrize("reduction", reductions)
@pytest.mark.parametrize("dtype", floating_dtypes)
def test_sigmoid_dense(n, reduction, dtype):
    x = logits((n,), dtype)
    t = torch.rand(n, dtype=torch.float64).to(dtype)  # soft targets
    check_emulated(focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, x, t, reduction=reduction)


@pytest.mark.parametrize("offset", [1, 3])
@pytest.mark.parametrize("dtype", floating_dtypes)
def test_sigmoid_dense_unaligned_pointers_take_the_scalar_path(offset, dtype):
    n = 517
    x = logits((n + offset,), dtype)[offset:]
    t = (torch.rand(n + offset) > 0.7).to(dtype)[offset:]
    assert x.is_contiguous() and x.data_ptr() % 16 != 0
    check_emulated(focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, x, t, reduction="mean")


def test_sigmoid_dense_non_contiguous_input():
    x = logits((40, 30), torch.float32).t()
    t = (torch.rand(30, 40) > 0.5).float()
    check_emulated(focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, x, t, reduction="sum")


# ---- sigmoid, class-index targets: vectors crossing rows ------------------------------------------------------

@pytest.mark.parametrize("C", [1, 3, 7, 80, 81, 129])
@pytest.mark.parametrize("dtype", floating_dtypes)
def test_sigmoid_index_vectors_cross_rows(C, dtype):
    x = logits((23, C), dtype)
    t = sigmoid_index_target(23, C)
    check_emulated(focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, x, t, reduction="mean")


# Rows of whole 32-byte groups (C % 16 == 0 in fp16 / bf16, C % 8 in float32) take two adjacent vectors of one row per
# access; C = 24 is whole vectors but half groups in fp16 / bf16 (one vector per access). Rows of other lengths take
# two adjacent vectors that may span two rows (C = 17, 81: a row's first and the previous row's last column can share
# an access, as can an ignored row and a counted one), or, shorter than two vectors, single vectors (C = 12 in fp16 /
# bf16). ignore_index = 2 is a class the aligned layouts' one-compare `positive` test also matches: the row must stay 0
# and uncounted.
@pytest.mark.parametrize("ignore_index", [-100, 2])
@pytest.mark.parametrize("sm_count", [1, 3])
@pytest.mark.parametrize("C", [12, 16, 17, 24, 32, 80, 81])
@pytest.mark.parametrize("dtype", floating_dtypes)
def test_sigmoid_index_row_groups(C, dtype, sm_count, ignore_index):
    rows = 41
    x = logits((rows, C), dtype)
    t = torch.randint(0, C + 1, (rows,))
    t[::4] = ignore_index
    t[1] = 0
    t[3] = C - 1  # the last column of a row: the second vector of a group
    t[5], t[6], t[7] = C - 1, 0, C - 1  # two rows' targets in one access; a target next to an ignored row (8)
    loss, grad = check_emulated(focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, x, t,
                                sm_count=sm_count, reduction="none", ignore_index=ignore_index)
    assert (loss[::4] == 0).all() and (grad[::4] == 0).all()
    # ignored rows are 0 and 0 whatever their logits hold, and leave every other row as it was
    x[::4, 1] = float("nan")
    x[::4, -1] = float("inf")
    grad_output = torch.ones_like(x)
    garbage_loss, garbage_grad = run_emulated(focal_cuda.sigmoid_focal_loss, x, t, grad_output, sm_count=sm_count,
                                              reverse=False, reduction="none", ignore_index=ignore_index)
    assert torch.equal(garbage_loss, loss)
    _, clean_grad = run_emulated(focal_cuda.sigmoid_focal_loss, x.nan_to_num(0.0, 0.0), t, grad_output,
                                 sm_count=sm_count, reverse=False, reduction="none", ignore_index=ignore_index)
    assert torch.equal(garbage_grad, clean_grad)


INDEX_POINTS = {
    "sigmoid_focal": (focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, {}),
    "varifocal": (focal_cuda.varifocal_loss, reference.varifocal_loss, {}),
    "quality_focal": (focal_cuda.quality_focal_loss, reference.quality_focal_loss, {}),
    "asymmetric": (focal_cuda.asymmetric_loss, reference.asymmetric_loss, {}),
    "asymmetric, no clip, modulation in the gradient": (focal_cuda.asymmetric_loss, reference.asymmetric_loss,
                                                        {"clip": 0.0, "detach_modulation": False}),
}


# Rows of any length (C = 17, 81: accesses spanning two rows) for every loss with class-index targets, with and without
# a weight per row (separate kernels): an ignored row's elements compute on a logit whose terms are exactly 0, so they
# stay 0 and 0 whatever the row's logits and weight hold, next to a counted row's target in the same access. Scores of
# exactly 0 make the target class one more negative.
@pytest.mark.parametrize("row_weight", [False, True])
@pytest.mark.parametrize("C", [17, 81])
@pytest.mark.parametrize("name", sorted(INDEX_POINTS))
@pytest.mark.parametrize("dtype", floating_dtypes)
def test_index_rows_of_any_length_every_loss(dtype, name, C, row_weight):
    function, reference_function, options = INDEX_POINTS[name]
    rows = 29
    x = logits((rows, C), dtype)
    t = torch.randint(0, C + 1, (rows,))
    t[::4] = -100
    t[3], t[5], t[7] = C - 1, 0, C - 1  # targets at a row's ends, next to ignored rows 4 and 8
    kwargs = dict(options)
    if name in ("varifocal", "quality_focal"):
        score = torch.rand(rows, dtype=torch.float64).to(dtype)
        score[1::6] = 0.0
        kwargs["score"] = score
    if row_weight:
        kwargs["weight"] = torch.rand(rows, dtype=torch.float64) + 0.5
    loss, grad = check_emulated(function, reference_function, x, t, reduction="none", **kwargs)
    assert (loss[::4] == 0).all() and (grad[::4] == 0).all()
    # ignored rows: NaN / inf logits (and weights) change nothing anywhere
    if row_weight:
        kwargs["weight"] = kwargs["weight"].clone()
        kwargs["weight"][::4] = float("nan")
    garbage = x.clone()
    garbage[::4, 1] = float("nan")
    garbage[::4, -1] = float("inf")
    garbage[::4, 0] = -float("inf")
    grad_output = torch.ones_like(x)
    garbage_loss, garbage_grad = run_emulated(function, garbage, t, grad_output, sm_count=3, reverse=False,
                                              reduction="none", **kwargs)
    clean_loss, clean_grad = run_emulated(function, x, t, grad_output, sm_count=3, reverse=False, reduction="none",
                                          **kwargs)
    assert torch.equal(garbage_loss, clean_loss) and torch.equal(garbage_grad, clean_grad)


@pytest.mark.parametrize("reduction", reductions)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_sigmoid_index_ignore_smoothing_alpha(reduction, label_smoothing, alpha):
    x = logits((4, 9, 7), torch.float32)
    t = sigmoid_index_target(36, 7).reshape(4, 9)
    check_emulated(focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, x, t, reduction=reduction,
                   alpha=alpha, label_smoothing=label_smoothing)


# ---- softmax: lane groups, block per row, spatial --------------------------------------------------------------

@pytest.mark.parametrize("C", [1, 3, 7, 80, 81, 129, 1000])
@pytest.mark.parametrize("dtype", floating_dtypes)
def test_softmax_rows_lane_groups(C, dtype):
    x = logits((37, C), dtype)
    check_emulated(focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, x, softmax_index_target((37,), C))


@pytest.mark.parametrize("C", [1025, 4096, 32000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_softmax_block_per_row(C, dtype):
    x = logits((3, C), dtype)
    t = torch.tensor([0, C - 1, -100])
    check_emulated(focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, x, t, reduction="sum",
                   label_smoothing=0.05)


@pytest.mark.parametrize("shape", [(2, 5, 7), (2, 3, 4, 5), (2, 1500, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_softmax_spatial(shape, dtype):
    x = logits(shape, dtype)
    t = softmax_index_target((shape[0],) + shape[2:], shape[1])
    check_emulated(focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, x, t, reduction="mean")


@pytest.mark.parametrize("reduction", reductions)
@pytest.mark.parametrize("layout", ["rows", "block", "spatial", "unbatched"])
def test_softmax_smoothing_alpha_ignore(reduction, layout):
    shape = {"rows": (11, 6), "block": (2, 1100), "spatial": (2, 6, 5), "unbatched": (6,)}[layout]
    C = shape[0] if layout == "unbatched" else shape[1]
    x = logits(shape, torch.float32)
    t = torch.tensor(3) if layout == "unbatched" else softmax_index_target((shape[0],) + shape[2:], C)
    alpha = torch.rand(C, dtype=torch.float64) + 0.5
    check_emulated(focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, x, t, reduction=reduction,
                   alpha=alpha, label_smoothing=0.1)


# ---- binary on probabilities ------------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", reductions)
@pytest.mark.parametrize("dtype", floating_dtypes)
def test_binary(reduction, dtype):
    p = torch.rand(301, dtype=torch.float64).clamp(0.01, 0.99).to(dtype)
    t = (torch.rand(301) > 0.6).to(dtype)
    check_emulated(focal_cuda.binary_focal_loss, reference.binary_focal_loss, p, t, reduction=reduction)


# ---- every gamma fast path and pow, per layout ------------------------------------------------------------------

LAYOUTS = {
    "sigmoid_dense": lambda: (focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, logits((9, 13), torch.float32),
                              torch.rand(9, 13)),
    "sigmoid_index": lambda: (focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, logits((9, 13), torch.float32),
                              sigmoid_index_target(9, 13)),
    "softmax_rows": lambda: (focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, logits((9, 13), torch.float32),
                             softmax_index_target((9,), 13)),
    "softmax_spatial": lambda: (focal_cuda.softmax_focal_loss, reference.softmax_focal_loss,
                                logits((2, 13, 5), torch.float32), softmax_index_target((2, 5), 13)),
    "binary": lambda: (focal_cuda.binary_focal_loss, reference.binary_focal_loss,
                       torch.rand(9, 13).clamp(0.01, 0.99), (torch.rand(9, 13) > 0.5).float()),
}


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_gamma(layout, gamma):
    function, reference_function, x, t = LAYOUTS[layout]()
    check_emulated(function, reference_function, x, t, gamma=gamma, reduction="mean")


def test_gamma_zero_equals_cross_entropy():
    x = logits((50, 9), torch.float32).requires_grad_(True)
    t = softmax_index_target((50,), 9)
    with emulated_cuda():
        loss = focal_cuda.softmax_focal_loss(x, t, gamma=0.0, label_smoothing=0.1)
        (grad,) = torch.autograd.grad(loss, x)
    expected = F.cross_entropy(x, t, label_smoothing=0.1)
    (expected_grad,) = torch.autograd.grad(expected, x)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grad, expected_grad)


# ---- grid sizes: one block, a few, many -------------------------------------------------------------------------

@pytest.mark.parametrize("sm_count", [1, 3, 132])
@pytest.mark.parametrize("layout", ["sigmoid_dense", "sigmoid_index", "softmax_rows", "softmax_block", "spatial",
                                    "binary"])
def test_grid_sizes(layout, sm_count):
    if layout == "sigmoid_dense":
        args = (focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, logits((20011,), torch.float32),
                torch.rand(20011))
    elif layout == "sigmoid_index":
        args = (focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, logits((1201, 17), torch.float32),
                sigmoid_index_target(1201, 17))
    elif layout == "softmax_rows":
        args = (focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, logits((2003, 5), torch.float32),
                softmax_index_target((2003,), 5))
    elif layout == "softmax_block":
        args = (focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, logits((9, 1031), torch.float32),
                softmax_index_target((9,), 1031))
    elif layout == "spatial":
        args = (focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, logits((3, 4, 1003), torch.float32),
                softmax_index_target((3, 1003), 4))
    else:
        args = (focal_cuda.binary_focal_loss, reference.binary_focal_loss, torch.rand(20011).clamp(0.01, 0.99),
                (torch.rand(20011) > 0.5).float())
    check_emulated(*args, sm_count=sm_count, reduction="mean")


# ---- normalizer, empty input, mean over nothing -----------------------------------------------------------------

@pytest.mark.parametrize("normalizer", [7.0, "tensor"])
def test_normalizer(normalizer):
    normalizer = torch.tensor(5.5) if normalizer == "tensor" else normalizer
    x = logits((6, 11), torch.float32)
    check_emulated(focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, x, sigmoid_index_target(6, 11),
                   reduction="mean", normalizer=normalizer)
    check_emulated(focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, x, softmax_index_target((6,), 11),
                   reduction="mean", normalizer=normalizer)


@pytest.mark.parametrize("reduction", reductions)
@pytest.mark.parametrize("case", ["sigmoid_dense", "sigmoid_index", "softmax", "binary"])
def test_empty_input(case, reduction):
    x = torch.zeros(0, 5, requires_grad=True)
    function, t = {
        "sigmoid_dense": (focal_cuda.sigmoid_focal_loss, torch.zeros(0, 5)),
        "sigmoid_index": (focal_cuda.sigmoid_focal_loss, torch.zeros(0, dtype=torch.long)),
        "softmax": (focal_cuda.softmax_focal_loss, torch.zeros(0, dtype=torch.long)),
        "binary": (focal_cuda.binary_focal_loss, torch.zeros(0, 5)),
    }[case]
    with emulated_cuda():
        loss = function(x, t, reduction=reduction)
        if reduction == "none":
            assert loss.numel() == 0
            loss = loss.sum()
        else:
            assert loss.shape == () and loss.item() == 0.0
        (grad,) = torch.autograd.grad(loss, x)
    assert grad.shape == x.shape


def test_mean_over_only_ignored_rows_is_zero_with_zero_gradient():
    x = logits((4, 6), torch.float32).requires_grad_(True)
    t = torch.full((4,), -100)
    with emulated_cuda():
        for function in (focal_cuda.sigmoid_focal_loss, focal_cuda.softmax_focal_loss):
            loss = function(x, t, reduction="mean")
            (grad,) = torch.autograd.grad(loss, x)
            assert loss.item() == 0.0 and torch.count_nonzero(grad) == 0


# ---- determinism, launches, scale precision, outputs -------------------------------------------------------------

def test_two_runs_are_bitwise_equal_with_any_number_of_worker_threads():
    x = logits((3000, 21), torch.float32)
    t = softmax_index_target((3000,), 21)
    results = []
    for workers in (1, 2, 4, 2):
        leaf = x.clone().requires_grad_(True)
        with emulated_cuda(sm_count=7, workers=workers):
            loss = focal_cuda.softmax_focal_loss(leaf, t)
            (grad,) = torch.autograd.grad(loss, leaf)
        results.append((loss, grad))
    for loss, grad in results[1:]:
        assert torch.equal(loss, results[0][0]) and torch.equal(grad, results[0][1])


LAUNCH_CASES = {
    "sigmoid_dense": lambda: (focal_cuda.sigmoid_focal_loss, torch.randn(40, 9), torch.rand(40, 9)),
    "sigmoid_index": lambda: (focal_cuda.sigmoid_focal_loss, torch.randn(40, 9), torch.randint(0, 10, (40,))),
    "softmax_rows": lambda: (focal_cuda.softmax_focal_loss, torch.randn(40, 9), torch.randint(0, 9, (40,))),
    "softmax_block": lambda: (focal_cuda.softmax_focal_loss, torch.randn(2, 2000), torch.randint(0, 2000, (2,))),
    "softmax_spatial": lambda: (focal_cuda.softmax_focal_loss, torch.randn(2, 9, 6), torch.randint(0, 9, (2, 6))),
    "binary": lambda: (focal_cuda.binary_focal_loss, torch.rand(40, 9), torch.rand(40, 9)),
}


@pytest.mark.parametrize("reduction", reductions)
@pytest.mark.parametrize("case", sorted(LAUNCH_CASES))
def test_one_launch_forward_one_launch_backward(case, reduction):
    function, x, t = LAUNCH_CASES[case]()
    x.requires_grad_(True)
    with emulated_cuda():
        before = kernel_launches()
        loss = function(x, t, reduction=reduction)
        after_forward = kernel_launches()
        (grad,) = torch.autograd.grad(loss, x, torch.ones_like(loss))
        after_backward = kernel_launches()
    assert after_forward - before == 1, "forward: expected exactly one kernel launch"
    assert after_backward - after_forward == 1, "backward: expected exactly one kernel launch"


def test_forward_without_grad_is_one_launch():
    with emulated_cuda():
        before = kernel_launches()
        focal_cuda.sigmoid_focal_loss(torch.randn(10, 4), torch.rand(10, 4), reduction="mean")
        assert kernel_launches() - before == 1


def test_fp16_mean_gradient_scale_is_applied_in_float():
    # 1/n is subnormal in fp16 here and rounds with 0.33 % error; applied in float, the gradient is within
    # the two roundings of the fp16 format (stored gradient, result) of the float64 reference.
    n = 110017
    x = logits((n,), torch.float16)
    t = (torch.rand(n) > 0.5).half()
    grad_output = torch.tensor(2048.0, dtype=torch.float16)
    loss, grad = run_emulated(focal_cuda.sigmoid_focal_loss, x, t, grad_output, sm_count=2, reverse=False,
                              reduction="mean")
    truth = to_ground_truth(x).requires_grad_(True)
    expected = reference.sigmoid_focal_loss(truth, t.double(), reduction="mean")
    (expected_grad,) = torch.autograd.grad(expected, truth, grad_output.double())
    normal = expected_grad.abs() > 2 ** -14  # the fp16 normal range: relative precision 2**-11 per rounding
    error = (grad.double() - expected_grad).abs()
    assert normal.sum() > n // 2
    assert (error[normal] <= 2 ** -10 * 1.01 * expected_grad[normal].abs()).all()


def test_sum_is_its_own_tensor():
    with emulated_cuda():
        loss = focal_cuda.sigmoid_focal_loss(torch.randn(5, 3), torch.rand(5, 3), reduction="sum")
    assert loss._base is None and loss.untyped_storage().nbytes() == loss.element_size()


# ---- device asserts -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["sigmoid_index", "softmax_rows", "softmax_spatial", "binary_prob"])
def test_bad_values_trigger_a_device_assert(case):
    if case == "sigmoid_index":
        call = lambda: focal_cuda.sigmoid_focal_loss(torch.randn(4, 3), torch.tensor([0, 1, 4, 2]))
    elif case == "softmax_rows":
        call = lambda: focal_cuda.softmax_focal_loss(torch.randn(4, 3), torch.tensor([0, 3, 1, 2]))
    elif case == "softmax_spatial":
        call = lambda: focal_cuda.softmax_focal_loss(torch.randn(2, 3, 4), torch.tensor([[0, 1, 2, 0], [1, -1, 0, 0]]))
    else:
        call = lambda: focal_cuda.binary_focal_loss(torch.tensor([0.5, 1.5]), torch.tensor([1.0, 0.0]))
    with emulated_cuda(), pytest.raises(RuntimeError, match="device-side assert"):
        call()


def test_emulation_does_not_touch_the_cpu_kernels_outside_the_context():
    x, t = torch.randn(8, 5), torch.rand(8, 5)
    before = kernel_launches()
    focal_cuda.sigmoid_focal_loss(x, t, reduction="mean")
    assert kernel_launches() == before


@pytest.mark.parametrize("reduction", reductions)
@pytest.mark.parametrize("loss", ["sigmoid", "softmax", "binary"])
def test_emulated_ops_pass_opcheck(loss, reduction):
    """The focal_cuda_emulated ops carry the same schemas, fake kernels and autograd as focal_cuda's."""
    from torch.library import opcheck

    ops = torch.ops.focal_cuda_emulated
    code = {"none": 0, "mean": 1, "sum": 2}[reduction]
    x = torch.randn(6, 5, requires_grad=True)
    if loss == "sigmoid":
        op, args = ops.sigmoid_focal_fwd.default, (x, torch.randint(0, 6, (6,)), 0.25, 2.0, code, -100, 0.0, None, True)
    elif loss == "softmax":
        op, args = ops.softmax_focal_fwd.default, (x, torch.randint(0, 5, (6,)), None, 2.0, code, -100, 0.1, None, True)
    else:
        op, args = ops.binary_focal_fwd.default, (torch.rand(6, 5, requires_grad=True), torch.rand(6, 5), 0.25, 2.0,
                                                  code, True)
    with emulated_cuda():
        opcheck(op, args)


@pytest.mark.parametrize("weight_form", ["row", "element"])
def test_zero_weight_is_an_ordinary_weight_and_ignored_rows_are_zero(weight_form):
    """A NaN logit under a user weight of 0 gives NaN (0 * NaN, as on CPU and in torch's formula); a NaN logit in an
    ignored row gives 0 and 0. The kernels once replaced the logit by 0 wherever the weight was 0."""
    x = torch.randn(6, 8)
    x[2, 3] = float("nan")  # weight 0
    x[4, 1] = float("nan")  # ignored row
    target = torch.randint(0, 9, (6,))
    target[4] = -100
    weight = torch.ones(6) if weight_form == "row" else torch.ones(6, 8)
    weight[2] = 0.0
    results = []
    for emulated in (False, True):
        leaf = x.clone().requires_grad_(True)
        context = emulated_cuda() if emulated else contextlib.nullcontext()
        with context:
            loss = focal_cuda.sigmoid_focal_loss(leaf, target, weight=weight, reduction="none")
            (grad,) = torch.autograd.grad(loss.sum(), leaf)
        results.append((loss.detach(), grad))
        assert loss[2, 3].isnan() and grad[2, 3].isnan(), "0 * NaN must be NaN"
        assert (loss[4] == 0).all() and (grad[4] == 0).all(), "an ignored row is 0 and 0"
    (cpu_loss, cpu_grad), (cuda_loss, cuda_grad) = results
    assert torch.equal(cpu_loss.isnan(), cuda_loss.isnan()) and torch.equal(cpu_grad.isnan(), cuda_grad.isnan())
