"""gradcheck on every public function (float64) and torch.library.opcheck on every registered op."""

import pytest
import torch

import focal_cuda  # noqa: F401  (registers torch.ops.focal_cuda)

REDUCTION_CODE = {"none": 0, "mean": 1, "sum": 2}


def leaf(*shape, device, dtype=torch.float64, scale=2.0):
    return (scale * torch.randn(*shape, dtype=dtype, device=device)).requires_grad_(True)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 2.5])
@pytest.mark.parametrize("form", ["dense", "index"])
def test_gradcheck_sigmoid(device, reduction, gamma, form):
    input = leaf(5, 4, device=device)
    if form == "dense":
        target = torch.rand(5, 4, dtype=torch.float64, device=device)
    else:
        target = torch.tensor([0, 4, -100, 3, 1], device=device)
    torch.autograd.gradcheck(
        lambda x: focal_cuda.sigmoid_focal_loss(x, target, 0.3, gamma, reduction, label_smoothing=0.1), (input,)
    )


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 2.5])
@pytest.mark.parametrize("shape", [(5, 4), (2, 4, 3), (4,)], ids=str)
def test_gradcheck_softmax(device, reduction, gamma, shape):
    input = leaf(*shape, device=device)
    if len(shape) == 1:
        target = torch.tensor(2, device=device)
    else:
        target = torch.randint(0, shape[1], shape[:1] + shape[2:], device=device)
        target.view(-1)[0] = -100
    alpha = torch.tensor([0.5, 1.0, 1.5, 0.25], dtype=torch.float64, device=device)
    torch.autograd.gradcheck(
        lambda x: focal_cuda.softmax_focal_loss(x, target, alpha, gamma, reduction, label_smoothing=0.1), (input,)
    )


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 2.5])
def test_gradcheck_binary(device, reduction, gamma):
    prob = (0.05 + 0.9 * torch.rand(6, 3, dtype=torch.float64, device=device)).requires_grad_(True)
    target = torch.rand(6, 3, dtype=torch.float64, device=device)
    torch.autograd.gradcheck(
        lambda p: focal_cuda.binary_focal_loss(p, target, 0.25, gamma, reduction), (prob,), eps=1e-7
    )


def test_gradcheck_normalizer_tensor(device):
    input = leaf(4, 3, device=device)
    target = torch.tensor([1, 0, 2, 1], device=device)
    normalizer = torch.tensor(2.5, device=device)
    torch.autograd.gradcheck(
        lambda x: focal_cuda.softmax_focal_loss(x, target, normalizer=normalizer), (input,)
    )


# --- torch.library.opcheck: schema, fake tensor, autograd registration, AOT dispatch ---


def sigmoid_fwd_args(device, dtype, form, reduction, compute_grad):
    input = torch.randn(5, 4, dtype=dtype, device=device, requires_grad=compute_grad)
    if form == "dense":
        target = torch.rand(5, 4, dtype=dtype, device=device)
    else:
        target = torch.tensor([0, 4, -100, 3, 1], device=device)
    return (input, target, 0.25, 2.0, REDUCTION_CODE[reduction], -100, 0.1, None, compute_grad)


def softmax_fwd_args(device, dtype, shape, reduction, compute_grad, with_alpha, normalizer=None):
    input = torch.randn(shape, dtype=dtype, device=device, requires_grad=compute_grad)
    num_classes = shape[0] if len(shape) == 1 else shape[1]
    if len(shape) == 1:
        target = torch.tensor(1, device=device)
    else:
        target = torch.randint(0, num_classes, shape[:1] + shape[2:], device=device)
        target.view(-1)[0] = -100
    alpha_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    alpha = torch.rand(num_classes, dtype=alpha_dtype, device=device) if with_alpha else None
    return (input, target, alpha, 2.0, REDUCTION_CODE[reduction], -100, 0.1, normalizer, compute_grad)


def binary_fwd_args(device, dtype, reduction, compute_grad):
    prob = (0.05 + 0.9 * torch.rand(6, 3, device=device)).to(dtype).requires_grad_(compute_grad)
    target = torch.rand(6, 3, dtype=dtype, device=device)
    return (prob, target, 0.25, 2.0, REDUCTION_CODE[reduction], compute_grad)


def opcheck(op, args):
    torch.library.opcheck(op, args)


@pytest.mark.parametrize("compute_grad", [True, False])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("form", ["dense", "index"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_opcheck_sigmoid_fwd(device, dtype, form, reduction, compute_grad):
    opcheck(torch.ops.focal_cuda.sigmoid_focal_fwd.default, sigmoid_fwd_args(device, dtype, form, reduction, compute_grad))


@pytest.mark.parametrize("compute_grad", [True, False])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("shape,with_alpha", [((5, 4), True), ((2, 4, 3), False), ((4,), True)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck_softmax_fwd(device, dtype, shape, with_alpha, reduction, compute_grad):
    opcheck(
        torch.ops.focal_cuda.softmax_focal_fwd.default,
        softmax_fwd_args(device, dtype, shape, reduction, compute_grad, with_alpha),
    )


def test_opcheck_softmax_fwd_with_normalizer(device):
    normalizer = torch.tensor(3.0, device=device)
    args = softmax_fwd_args(device, torch.float32, (5, 4), "mean", True, True, normalizer)
    opcheck(torch.ops.focal_cuda.softmax_focal_fwd.default, args)
    args = sigmoid_fwd_args(device, torch.float32, "index", "mean", True)
    opcheck(torch.ops.focal_cuda.sigmoid_focal_fwd.default, args[:7] + (normalizer, True))


@pytest.mark.parametrize("compute_grad", [True, False])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_binary_fwd(device, dtype, reduction, compute_grad):
    opcheck(torch.ops.focal_cuda.binary_focal_fwd.default, binary_fwd_args(device, dtype, reduction, compute_grad))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("loss", ["sigmoid", "softmax", "binary"])
def test_opcheck_bwd(device, loss, reduction):
    """The backward ops, fed with what their forward op returned."""
    with torch.no_grad():
        if loss == "sigmoid":
            fwd_args = sigmoid_fwd_args(device, torch.float32, "dense", reduction, True)
        elif loss == "softmax":
            fwd_args = softmax_fwd_args(device, torch.float32, (2, 4, 3), reduction, True, True)
        else:
            fwd_args = binary_fwd_args(device, torch.float32, reduction, True)
        fwd_args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in fwd_args)
        fwd = getattr(torch.ops.focal_cuda, f"{loss}_focal_fwd").default
        output, grad, grad_scale = fwd(*fwd_args)
    assert grad.shape == fwd_args[0].shape
    grad_output = torch.randn(output.shape, device=device)
    bwd = torch.ops.focal_cuda.focal_bwd.default
    args = (grad, grad_output, grad_scale, REDUCTION_CODE[reduction], loss == "softmax")
    opcheck(bwd, args)
    grad_input = bwd(*args)
    if reduction == "none":
        broadcast = grad_output.unsqueeze(1) if loss == "softmax" else grad_output
        torch.testing.assert_close(grad_input, grad * broadcast)
    else:
        torch.testing.assert_close(grad_input, grad * (grad_output * grad_scale))


@pytest.mark.parametrize("loss", ["sigmoid", "softmax", "binary"])
def test_fwd_without_compute_grad_returns_empty_grad(device, loss):
    if loss == "sigmoid":
        args = sigmoid_fwd_args(device, torch.float32, "index", "mean", False)
    elif loss == "softmax":
        args = softmax_fwd_args(device, torch.float32, (5, 4), "mean", False, True)
    else:
        args = binary_fwd_args(device, torch.float32, "mean", False)
    output, grad, grad_scale = getattr(torch.ops.focal_cuda, f"{loss}_focal_fwd")(*args)
    assert grad.numel() == 0
    assert output.shape == () and grad_scale.shape == () and grad_scale.dtype == torch.float32


# Ops without tensors (counters, diagnostics): nothing for opcheck to check; each has its own test.
DIAGNOSTIC_OPS = {"kernel_launches", "occupancy_queries", "parallel_threads_used"}


def test_every_op_is_covered_by_opcheck():
    """A new op registered under focal_cuda must get an opcheck test here."""
    covered = {f"{loss}_focal_fwd" for loss in ("sigmoid", "softmax", "binary")} | {"focal_bwd"}
    covered |= {"varifocal_fwd", "quality_focal_fwd", "asymmetric_fwd"}  # tests/test_focal_family.py::test_opcheck
    covered |= {"focal_bwd_"}  # tests/test_backward_memory.py::test_in_place_op_passes_opcheck
    registered = {
        name.split("::")[1].split(".")[0]
        for name in torch._C._dispatch_get_all_op_names()
        if name.startswith("focal_cuda::")
    }
    assert registered - DIAGNOSTIC_OPS == covered
