"""The softmax kernels' thread layouts, executed by the SIMT emulator (docs/design.md §6): lanes x slots per row in
the warp kernel, misaligned row starts (odd C, offset base), row groups and chunks in the block kernel, class
groups in the spatial kernel. Each case: two thread schedules bitwise equal, the float64 reference within the
dtype's tolerance (check_emulated), and one launch per forward.
"""
import pytest
import torch

import focal_cuda
from focal_cuda import reference
from focal_cuda.testing import emulated_cuda, kernel_launches

from test_emulated_cuda import check_emulated, logits, softmax_index_target


def one_launch_forward(x, t, **kwargs):
    with emulated_cuda():
        before = kernel_launches()
        focal_cuda.softmax_focal_loss(x, t, **kwargs)
        assert kernel_launches() - before == 1, "forward: expected exactly one kernel launch"


# Warp kernel: C = 80 bf16 is 2 lanes x 5 vectors, 81 spans 11 or 12 vectors by row (odd C: rows start anywhere).
@pytest.mark.parametrize("C", [1, 7, 10, 80, 81, 129, 1000])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_rows_lanes_and_slots(C, dtype, label_smoothing):
    x = logits((45, C), dtype)
    t = softmax_index_target((45,), C)
    check_emulated(focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, x, t, reduction="sum",
                   label_smoothing=label_smoothing)
    one_launch_forward(x, t, label_smoothing=label_smoothing)


# A base that is not 16-byte aligned: every row has a head peeled off, and the fresh gradient buffer does not share
# the input's alignment (gradient stored element by element).
@pytest.mark.parametrize("C", [8, 80, 1100])
@pytest.mark.parametrize("offset", [1, 3])
def test_rows_misaligned_base(C, offset):
    rows = 13
    x = logits((rows * C + offset,), torch.bfloat16)[offset:].view(rows, C)
    assert x.data_ptr() % 16 != 0
    t = softmax_index_target((rows,), C)
    alpha = torch.rand(C, dtype=torch.float64) + 0.5
    check_emulated(focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, x, t, reduction="mean", alpha=alpha)


# Block kernel: 64..512 threads per row; 32000 float exceeds one chunk of registers (re-read), bf16 fits.
@pytest.mark.parametrize("C", [1025, 1100, 4097, 8192, 32000])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_rows_block_groups_and_chunks(C, dtype, label_smoothing):
    rows = 3 if C == 32000 else 7
    x = logits((rows, C), dtype)
    t = softmax_index_target((rows,), C, ignore_every=3)
    t[1] = C - 1
    check_emulated(focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, x, t, reduction="none",
                   label_smoothing=label_smoothing, sm_count=2)
    one_launch_forward(x, t, label_smoothing=label_smoothing)


def test_rows_double_long_row_in_chunks():
    x = logits((3, 9000), torch.float64)
    t = torch.tensor([5, -100, 8999])
    check_emulated(focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, x, t, reduction="sum", gamma=2.5)


# Spatial kernel: class groups per position (large C with short or long S), one thread per position for small C.
@pytest.mark.parametrize("shape", [(2, 1500, 3), (1, 2000, 40), (3, 19, 1000), (2, 5, 7), (2, 300, 2, 3)])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_spatial_class_groups(shape, label_smoothing):
    x = logits(shape, torch.float32)
    t = softmax_index_target((shape[0],) + shape[2:], shape[1])
    alpha = torch.rand(shape[1], dtype=torch.float64) + 0.5
    check_emulated(focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, x, t, reduction="mean",
                   alpha=alpha, label_smoothing=label_smoothing, sm_count=2)
    one_launch_forward(x, t, label_smoothing=label_smoothing)


# float64 takes 4 classes per thread and chunk, the others 8.
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_spatial_other_dtypes(dtype):
    x = logits((2, 600, 33), dtype)
    t = softmax_index_target((2, 33), 600)
    check_emulated(focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, x, t, reduction="sum")


@pytest.mark.parametrize("mode", ["hashed", "up", "down"])
@pytest.mark.parametrize("C", [2, 80, 1100])
def test_confident_rows_under_device_approx_math(mode, C):
    """Row [0, -d, ...], target 0: loss = log1p(sum exp(-d)). lg2.approx's 2**-22 near 1 once made the device loss
    0.2 off at d = 14 and exactly 0 at d = 16; the log-sum is log1p of the non-max terms now."""
    from focal_cuda.testing import approx_math_error
    d = torch.arange(0, 17, dtype=torch.float32)
    rows = torch.full((len(d), C), -40.0)
    rows[:, 0] = 0.0
    rows[:, 1] = -d
    with emulated_cuda(), approx_math_error(mode):
        loss = focal_cuda.softmax_focal_loss(rows, torch.zeros(len(d), dtype=torch.long), gamma=0.0,
                                             reduction="none")
    expected = torch.log1p(torch.exp(-d.double()) + (C - 2) * torch.exp(torch.tensor(-40.0, dtype=torch.float64)))
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=0)
