"""64-bit indexing: tensors with more than 2**31 elements give the right loss and gradient (marked slow).

Each test builds a bfloat16 tensor of 2**31 + 2**19 elements that is constant except for distinctive values
past element 2**31, and checks those values, their 32-bit aliases (index - 2**31) and the reductions (whose
count of elements does not fit 32 bits). A 32-bit element offset would read or write the wrong element, a
32-bit count would give a wrong mean.

Where they run:
- CUDA: when a GPU has the memory free (scripts/gpu_check.sh runs `pytest -m slow`).
- CPU: only with FOCAL_CUDA_RUN_HUGE=1 and enough MemAvailable (/proc/meminfo): each test needs 8-12 GiB
  and 10-60 s on 2 cores, too much for the default test run.
"""

import os

import pytest
import torch

import focal_cuda
from conftest import devices
from focal_cuda import reference

pytestmark = pytest.mark.slow

GiB = 2**30
SPLIT = 2**31  # the first element index a signed 32-bit offset cannot hold
ROWS, CLASSES = 2**15 + 8, 2**16
NUMEL = ROWS * CLASSES  # 2**31 + 2**19
assert NUMEL > SPLIT
DTYPE = torch.bfloat16
# flat positions past 2**31: the first element of row 2**15 plus 12345, and the very last element
FAR = SPLIT + 12345
LAST = NUMEL - 1
FAR_ROW, FAR_COL = divmod(FAR, CLASSES)
LAST_ROW, LAST_COL = divmod(LAST, CLASSES)
ALIAS = FAR - SPLIT  # where a 32-bit offset of FAR would land


def mem_available_bytes():
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def require_memory(device, full_size_buffers):
    """Skip unless `full_size_buffers` bf16 tensors of NUMEL elements (plus 2 GiB of slack) fit."""
    needed = full_size_buffers * NUMEL * DTYPE.itemsize + 2 * GiB
    if device == "cuda":
        free, _ = torch.cuda.mem_get_info()
        if free < needed:
            pytest.skip(f"needs {needed / GiB:.1f} GiB of free GPU memory, {free / GiB:.1f} GiB free")
        return
    if os.environ.get("FOCAL_CUDA_RUN_HUGE") != "1":
        pytest.skip(f"CPU huge-tensor test: set FOCAL_CUDA_RUN_HUGE=1 to run it (needs {needed / GiB:.1f} GiB)")
    available = mem_available_bytes()
    if available < needed:
        pytest.skip(f"needs {needed / GiB:.1f} GiB of available memory, /proc/meminfo MemAvailable is "
                    f"{available / GiB:.1f} GiB")


def expected_close(actual, expected, what):
    """Equal up to a bf16 rounding or two (atol relative to the largest expected value: gradients are small)."""
    expected = torch.as_tensor(expected, dtype=torch.float32)
    assert expected.abs().max() > 0, f"{what}: a zero expectation would make this check vacuous"
    torch.testing.assert_close(actual.float().cpu(), expected, rtol=1e-2, atol=1e-3 * float(expected.abs().max()),
                               msg=lambda m: f"{what}: {m}")


def sigmoid_case(device):
    """Logits 0 everywhere, 4 at FAR (a negative), -3 at LAST (the positive of the last row); class-index
    targets: every row background (C) except the last row, whose class is LAST_COL."""
    input = torch.zeros(ROWS, CLASSES, dtype=DTYPE, device=device)
    flat = input.view(-1)
    flat[FAR], flat[LAST] = 4.0, -3.0
    target = torch.full((ROWS,), CLASSES, dtype=torch.long, device=device)
    target[LAST_ROW] = LAST_COL
    # per-element losses and gradients of the three kinds of element, from the float64 reference
    x = torch.tensor([0.0, 4.0, -3.0], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    per_element = reference.sigmoid_focal_loss(x, t, 0.25, 2.0, "none")
    (per_element_grad,) = torch.autograd.grad(per_element.sum(), x)
    return input, target, per_element.detach(), per_element_grad


@pytest.mark.parametrize("device", devices)
def test_sigmoid_forward_past_2_31_elements(device):
    require_memory(device, full_size_buffers=2)  # input and the "none" loss
    input, target, per_element, _ = sigmoid_case(device)
    baseline, far_value, last_value = per_element.tolist()

    loss = focal_cuda.sigmoid_focal_loss(input, target, 0.25, 2.0, "none")
    assert loss.shape == input.shape and loss.dtype == DTYPE
    flat = loss.view(-1)
    expected_close(flat[FAR], far_value, "loss at element 2**31 + 12345")
    expected_close(flat[LAST], last_value, "loss at the last element")
    expected_close(flat[ALIAS], baseline, "loss at the 32-bit alias of element 2**31 + 12345")
    expected_close(flat[LAST - SPLIT], baseline, "loss at the 32-bit alias of the last element")
    expected_close(flat[SPLIT - 1 : SPLIT + 1], [baseline, baseline], "loss on both sides of element 2**31")
    del loss, flat

    # the counts: NUMEL elements (a 32-bit count would be 2**19, or negative)
    expected_sum = baseline * (NUMEL - 2) + far_value + last_value
    expected_close(focal_cuda.sigmoid_focal_loss(input, target, 0.25, 2.0, "sum"), expected_sum, "sum")
    expected_close(focal_cuda.sigmoid_focal_loss(input, target, 0.25, 2.0, "mean"), expected_sum / NUMEL, "mean")


@pytest.mark.parametrize("device", devices)
def test_sigmoid_gradient_past_2_31_elements(device):
    require_memory(device, full_size_buffers=3)  # input, the stored gradient and grad_input
    input, target, _, per_element_grad = sigmoid_case(device)
    input.requires_grad_(True)
    loss = focal_cuda.sigmoid_focal_loss(input, target, 0.25, 2.0, "mean")
    (grad,) = torch.autograd.grad(loss, input)
    assert grad.shape == input.shape and grad.dtype == DTYPE
    flat = grad.view(-1)
    baseline, far_value, last_value = (per_element_grad / NUMEL).tolist()
    expected_close(flat[FAR] * NUMEL, far_value * NUMEL, "gradient at element 2**31 + 12345 (x NUMEL)")
    expected_close(flat[LAST] * NUMEL, last_value * NUMEL, "gradient at the last element (x NUMEL)")
    expected_close(flat[ALIAS] * NUMEL, baseline * NUMEL, "gradient at the 32-bit alias (x NUMEL)")
    expected_close(flat[0] * NUMEL, baseline * NUMEL, "gradient at element 0 (x NUMEL)")


def softmax_case(device):
    """Logits 0 except 10 at FAR (its row's target) and 5 at LAST (the last row's target); other rows' target 0."""
    input = torch.zeros(ROWS, CLASSES, dtype=DTYPE, device=device)
    flat = input.view(-1)
    flat[FAR], flat[LAST] = 10.0, 5.0
    target = torch.zeros(ROWS, dtype=torch.long, device=device)
    target[FAR_ROW], target[LAST_ROW] = FAR_COL, LAST_COL
    # the three kinds of row, from the float64 reference
    rows = torch.zeros(3, CLASSES, dtype=torch.float64)
    rows[1, FAR_COL], rows[2, LAST_COL] = 10.0, 5.0
    rows.requires_grad_(True)
    row_targets = torch.tensor([0, FAR_COL, LAST_COL])
    per_row = reference.softmax_focal_loss(rows, row_targets, None, 2.0, "none", label_smoothing=0.1)
    (row_grads,) = torch.autograd.grad(per_row.sum(), rows)
    return input, target, per_row.detach(), row_grads


@pytest.mark.parametrize("device", devices)
def test_softmax_forward_past_2_31_elements(device):
    require_memory(device, full_size_buffers=1)  # the input (the "none" loss has one value per row)
    input, target, per_row, _ = softmax_case(device)
    baseline, far_value, last_value = per_row.tolist()

    loss = focal_cuda.softmax_focal_loss(input, target, None, 2.0, "none", label_smoothing=0.1)
    assert loss.shape == (ROWS,)
    expected_close(loss[FAR_ROW], far_value, "loss of row 2**15 (starts at element 2**31)")
    expected_close(loss[LAST_ROW], last_value, "loss of the last row")
    expected_close(loss[0], baseline, "loss of row 0 (the 32-bit alias of row 2**15)")
    expected_close(loss[FAR_ROW - 1], baseline, "loss of the row ending at element 2**31 - 1")
    expected_sum = baseline * (ROWS - 2) + far_value + last_value
    expected_close(focal_cuda.softmax_focal_loss(input, target, None, 2.0, "sum", label_smoothing=0.1),
                   expected_sum, "sum")


@pytest.mark.parametrize("device", devices)
def test_softmax_gradient_past_2_31_elements(device):
    require_memory(device, full_size_buffers=3)
    input, target, _, row_grads = softmax_case(device)
    input.requires_grad_(True)
    loss = focal_cuda.softmax_focal_loss(input, target, None, 2.0, "sum", label_smoothing=0.1)
    (grad,) = torch.autograd.grad(loss, input)
    for row, expected_row, what in [(FAR_ROW, 1, "row 2**15"), (LAST_ROW, 2, "the last row"), (0, 0, "row 0")]:
        # the distinctive entries and a few others; a whole row is 65536 values
        columns = torch.tensor([0, 1, FAR_COL, LAST_COL, CLASSES // 2])
        expected_close(grad[row, columns], row_grads[expected_row, columns].float(), f"gradient of {what}")


@pytest.mark.parametrize("device", devices)
def test_binary_forward_past_2_31_elements(device):
    require_memory(device, full_size_buffers=3)  # prob, target and the "none" loss
    prob = torch.full((NUMEL,), 0.5, dtype=DTYPE, device=device)
    target = torch.zeros(NUMEL, dtype=DTYPE, device=device)
    prob[FAR], target[FAR] = 0.125, 1.0
    x = torch.tensor([0.5, 0.125], dtype=torch.float64)
    baseline, far_value = reference.binary_focal_loss(x, torch.tensor([0.0, 1.0], dtype=torch.float64),
                                                      0.25, 2.0, "none").tolist()
    loss = focal_cuda.binary_focal_loss(prob, target, 0.25, 2.0, "none")
    expected_close(loss[FAR], far_value, "loss at element 2**31 + 12345")
    expected_close(loss[ALIAS], baseline, "loss at its 32-bit alias")
    del loss
    expected_close(focal_cuda.binary_focal_loss(prob, target, 0.25, 2.0, "mean"),
                   (baseline * (NUMEL - 1) + far_value) / NUMEL, "mean")
