"""The CUDA backward kernel (focal_bwd / focal_bwd_), executed by the SIMT emulator: every way it reads
grad_output (one scalar; the gradient's shape; one value per softmax row; a vector of S-neighbours; any C and S
element by element), aligned and misaligned, in one block and in many (the row cursor then steps across rows),
and the host's per-call work (the occupancy query is cached per kernel instantiation and device).
"""
import os

import pytest
import torch

import focal_cuda
from focal_cuda import _ops
from focal_cuda.testing import emulated_cuda, emulation_available

from conftest import assert_close

if not emulation_available():
    if os.environ.get("FOCAL_CUDA_REQUIRE_EMULATION") == "1":
        raise RuntimeError("FOCAL_CUDA_REQUIRE_EMULATION=1 but focal_cuda._emulated is missing")
    pytest.skip("focal_cuda was built without FOCAL_CUDA_EMULATE=1", allow_module_level=True)

NONE, MEAN = 0, 1

# (gradient shape, softmax 'none' loss: grad_output lacks dim 1). Which layout the launcher picks for bf16
# (8 per vector) is in the id: scalar reads of odd sizes, vectors where rows and S-runs are whole vectors.
SHAPES = {
    "elementwise (13, 7)": ((13, 7), False),
    "elementwise (64, 80)": ((64, 80), False),
    "softmax rows C=80 (row vector)": ((67, 80), True),
    "softmax rows C=21 (element by element)": ((67, 21), True),
    "softmax spatial S=64 (vector of S)": ((5, 3, 8, 8), True),
    "softmax spatial S=35 (element by element)": ((5, 3, 5, 7), True),
    "softmax unbatched (C,)": ((40,), True),
    # more elements than one grid sweeps at sm_count=1 (8 blocks x 256 threads x 8): the row cursor steps
    "softmax rows C=80, several sweeps": ((420, 80), True),
    "softmax spatial S=24, several sweeps": ((40, 20, 4, 6), True),  # the sweep is no multiple of S
}


def expected_backward(grad, grad_output, grad_scale, reduction, class_dim_reduced):
    go = grad_output.double()
    if reduction != NONE:
        return grad.double() * go * grad_scale.double()
    if class_dim_reduced and grad.dim() >= 2:
        go = go.unsqueeze(1)
    scale = grad_scale.double() if grad.dtype == torch.float16 else 1.0  # 'none': 1 but for fp16's prescale
    return grad.double() * go * scale


def backward_inputs(shape, class_dim_reduced, dtype, reduction, offset=0):
    """grad (starting `offset` elements into its storage: a misaligned one for offset > 0) and grad_output."""
    numel = torch.Size(shape).numel()
    grad = torch.randn(numel + offset, dtype=torch.float64).to(dtype)[offset:].view(shape)
    if reduction != NONE:
        loss_shape = ()
    elif class_dim_reduced:
        loss_shape = shape[:1] + shape[2:] if len(shape) >= 2 else ()
    else:
        loss_shape = shape
    grad_output = torch.randn(loss_shape, dtype=torch.float64).to(dtype)
    scale = torch.tensor(0.375, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    return grad, grad_output, scale


@pytest.mark.parametrize("sm_count", [1, 132])
@pytest.mark.parametrize("offset", [0, 1], ids=["aligned", "misaligned"])
@pytest.mark.parametrize("reduction", [NONE, MEAN], ids=["none", "mean"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("case", sorted(SHAPES))
def test_backward_matches_grad_times_grad_output(case, dtype, reduction, offset, sm_count):
    shape, class_dim_reduced = SHAPES[case]
    grad, grad_output, scale = backward_inputs(shape, class_dim_reduced, dtype, reduction, offset)
    ops = _ops.load_emulated()
    with emulated_cuda(sm_count=sm_count):
        out = ops.focal_bwd(grad, grad_output, scale, reduction, class_dim_reduced)
        in_place = grad.clone()
        ops.focal_bwd_(in_place, grad_output, scale, reduction, class_dim_reduced)
    expected = expected_backward(grad, grad_output, scale, reduction, class_dim_reduced)
    assert out.dtype == dtype and out.shape == grad.shape
    assert_close(out, expected, dtype, what="focal_bwd")
    assert torch.equal(in_place, out), "focal_bwd_ differs from focal_bwd"


@pytest.mark.parametrize("case", sorted(SHAPES))
def test_backward_is_one_launch(case):
    shape, class_dim_reduced = SHAPES[case]
    grad, grad_output, scale = backward_inputs(shape, class_dim_reduced, torch.bfloat16, NONE)
    ops = _ops.load_emulated()
    with emulated_cuda():
        before = ops.kernel_launches()
        ops.focal_bwd(grad, grad_output, scale, NONE, class_dim_reduced)
        assert ops.kernel_launches() - before == 1


def test_occupancy_is_queried_once_per_kernel_not_per_call():
    """Host overhead per call: after the first call of each kernel instantiation, 100 forward + backward calls
    issue no occupancy query (cudaOccupancyMaxActiveBlocksPerMultiprocessor is cached per kernel and device)."""
    ops = _ops.load_emulated()
    x = torch.randn(64, 80, requires_grad=True)
    dense, index = torch.rand(64, 80), torch.randint(0, 80, (64,))

    def step():
        for loss in (focal_cuda.sigmoid_focal_loss(x, dense, reduction="mean"),
                     focal_cuda.softmax_focal_loss(x, index, reduction="none").sum()):
            torch.autograd.grad(loss, x)

    with emulated_cuda():
        step()  # the first call of each instantiation queries once
        before_queries, before_launches = ops.occupancy_queries(), ops.kernel_launches()
        for _ in range(100):
            step()
        queries, launches = ops.occupancy_queries() - before_queries, ops.kernel_launches() - before_launches
    assert launches == 100 * 4, f"expected 400 kernel launches, got {launches}"
    assert queries == 0, f"{queries} occupancy queries over 400 launches: expected 0 (cached)"
