"""focal_cuda.linear_softmax_focal_loss / LinearSoftmaxFocalLoss: softmax_focal_loss(F.linear(x, W, b), target)
computed in row chunks without the full logits (docs/design.md §5, last bullet).

Every result is compared with the unfused composition in the same dtype (focal_cuda.softmax_focal_loss of
F.linear) and with float64 ground truth (focal_cuda.reference on F.linear of the same values in float64): the
loss and the three gradients (input, weight, bias) under a random grad_output. The projection is a matmul whose
rounding in bf16/fp16 moves every logit, so the comparison is norm-wise relative: |a - b| / |b| over the whole
tensor, with the tolerances of TOLERANCES below.
"""
import pytest
import torch
import torch.nn.functional as F

import focal_cuda
from focal_cuda import reference
from focal_cuda.testing import emulation_available

# |actual - expected| / |expected| (Frobenius norms; absolute when expected is ~0) of a result in `dtype`.
# Against float64 ground truth the low precisions are dominated by the rounding of x, W, the logits and the
# gradient: about 2**-8 (bf16) / 2**-11 (fp16) relative per element, averaged over the tensor.
TOLERANCES = {
    torch.float64: 1e-10,
    torch.float32: 2e-5,
    torch.bfloat16: 2e-2,
    torch.float16: 3e-3,
}
DTYPES = list(TOLERANCES)

requires_emulation = pytest.mark.skipif(not emulation_available(), reason="built without FOCAL_CUDA_EMULATE=1")


def rel_err(actual, expected):
    actual, expected = actual.detach().double(), expected.detach().double()
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = expected.norm().item()
    return (actual - expected).norm().item() / (scale if scale > 0 else 1.0)


def assert_rel_close(actual, expected, dtype, what, factor=1.0):
    error = rel_err(actual, expected)
    assert error <= TOLERANCES[dtype] * factor, f"{what} ({dtype}): relative error {error:.3g} > " \
                                                f"{TOLERANCES[dtype] * factor:.3g}"


def fused(x, W, t, b=None, **kwargs):
    return focal_cuda.linear_softmax_focal_loss(x, W, t, b, **kwargs)


def unfused(x, W, t, b=None, *, chunk_size=None, **kwargs):
    """focal_cuda.softmax_focal_loss(F.linear(x, W, b), t): (..., C) logits flattened to (N, C)."""
    logits = F.linear(x, W, b)
    loss = focal_cuda.softmax_focal_loss(logits.reshape(-1, W.shape[0]), t.reshape(-1), **kwargs)
    return loss.reshape(t.shape) if kwargs.get("reduction") == "none" else loss


def truth(x, W, t, b=None, *, chunk_size=None, **kwargs):
    """float64 reference: reference.softmax_focal_loss of F.linear on the same values in float64."""
    kwargs = {k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
              for k, v in kwargs.items()}
    logits = F.linear(x, W, b)
    loss = reference.softmax_focal_loss(logits.reshape(-1, W.shape[0]), t.reshape(-1), **kwargs)
    return loss.reshape(t.shape) if kwargs.get("reduction") == "none" else loss


def loss_and_grads(function, x, W, t, b, grad_output=None, dtype=None, **kwargs):
    """(loss, grad_output, [grad x, grad W, grad b]) of function on fresh leaves (cast to dtype if given)."""
    leaves = [v.detach().clone().to(dtype or v.dtype).requires_grad_(True) for v in (x, W)]
    bias = None if b is None else b.detach().clone().to(dtype or b.dtype).requires_grad_(True)
    if bias is not None:
        leaves.append(bias)
    loss = function(leaves[0], leaves[1], t, bias, **kwargs)
    if grad_output is None:
        grad_output = torch.randn(loss.shape, dtype=torch.float64)
    grads = torch.autograd.grad(loss, leaves, grad_output.to(loss.dtype))
    return loss, grad_output, list(grads)


def make(shape, H, C, dtype=torch.float32, bias=True, ignore_every=0, scale=None):
    """x (shape + (H,)), W (C, H), b (C,), t: values exactly representable in every dtype (rounded to bf16), so
    all dtypes see the same numbers; logits of a few units (the focal factor matters)."""
    scale = scale if scale is not None else 2.0 / H ** 0.5
    x = torch.randn(*shape, H).bfloat16().double()
    W = (torch.randn(C, H) * scale).bfloat16().double()
    b = (0.5 * torch.randn(C)).bfloat16().double() if bias else None
    t = torch.randint(0, C, shape)
    if ignore_every:
        t.view(-1)[::ignore_every] = -100
    cast = (lambda v: None if v is None else v.to(dtype))
    return cast(x), cast(W), cast(b), t


def check(x, W, t, b, dtype, factor=1.0, **kwargs):
    """Fused == unfused (same dtype) == float64 truth, loss and every gradient; returns the fused loss."""
    loss, go, grads = loss_and_grads(fused, x, W, t, b, dtype=dtype, **kwargs)
    _, _, grads_unfused = loss_and_grads(unfused, x, W, t, b, go, dtype=dtype, **kwargs)
    loss_unfused = unfused(x.to(dtype), W.to(dtype), t, None if b is None else b.to(dtype), **kwargs)
    loss_truth, _, grads_truth = loss_and_grads(truth, x, W, t, b, go, dtype=torch.float64, **kwargs)
    assert loss.dtype == dtype and loss.shape == loss_truth.shape
    assert all(g.dtype == dtype for g in grads)
    names = ["grad input", "grad weight", "grad bias"]
    assert_rel_close(loss, loss_truth, dtype, "loss", factor)
    assert_rel_close(loss, loss_unfused, dtype, "loss vs unfused", 2 * factor)
    for name, g, g_truth, g_unfused in zip(names, grads, grads_truth, grads_unfused):
        assert_rel_close(g, g_truth, dtype, name, factor)
        assert_rel_close(g, g_unfused, dtype, f"{name} vs unfused", 2 * factor)
    return loss


# (batch shape, H, C, chunk_size): odd N and C (1, 7, 129, 1000+), (B, T, H) input, N not a multiple of the chunk
CASES = {
    "N1_C1": ((1,), 3, 1, None),
    "N7_C7": ((7,), 5, 7, 3),
    "N129_C129": ((129,), 16, 129, 50),
    "N130_C1003": ((130,), 24, 1003, 64),
    "B3_T11": ((3, 11), 8, 37, 10),
}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_unfused_and_reference(dtype, case, reduction):
    shape, H, C, chunk = CASES[case]
    x, W, b, t = make(shape, H, C, ignore_every=5)
    check(x, W, t, b, dtype, reduction=reduction, chunk_size=chunk)


OPTIONS = {
    "alpha_per_class": dict(alpha="per_class"),
    "alpha_number": dict(alpha=0.25),
    "label_smoothing": dict(label_smoothing=0.1),
    "gamma_half": dict(gamma=0.5),
    "gamma_0_alpha_ls": dict(gamma=0.0, alpha="per_class", label_smoothing=0.2),
    "ignore_index_7": dict(ignore_index=7),
    "normalizer_float": dict(normalizer=12.5),
    "normalizer_tensor": dict(normalizer="tensor"),
    "no_bias": dict(bias=False),
}


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_options(dtype, option):
    kwargs = dict(OPTIONS[option])
    C = 23
    x, W, b, t = make((41,), 12, C, bias=kwargs.pop("bias", True), ignore_every=6)
    if kwargs.get("alpha") == "per_class":
        kwargs["alpha"] = torch.rand(C, 1) + 0.25  # the classic (C, 1) shape
    if kwargs.get("normalizer") == "tensor":
        kwargs["normalizer"] = torch.tensor(17.0)
    if "ignore_index" in kwargs:
        t[::4] = kwargs["ignore_index"]
        t[t == -100] = 3
    check(x, W, t, b, dtype, reduction="mean", chunk_size=8, **kwargs)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_chunk_sizes_agree(reduction):
    """Every chunking (1 row, N not a multiple, exactly N, more than N, the default) gives the same result."""
    x, W, b, t = make((23,), 6, 11, dtype=torch.float64, ignore_every=4)
    base_loss, go, base_grads = loss_and_grads(fused, x, W, t, b, reduction=reduction, chunk_size=23)
    for chunk in (1, 2, 5, 22, 24, None):
        loss, _, grads = loss_and_grads(fused, x, W, t, b, go, reduction=reduction, chunk_size=chunk)
        torch.testing.assert_close(loss, base_loss, rtol=1e-13, atol=1e-15)
        for g, g0 in zip(grads, base_grads):
            torch.testing.assert_close(g, g0, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_ignored_chunk(reduction):
    """A chunk whose rows are all ignored contributes nothing, and the mean counts only the others."""
    x, W, b, t = make((12,), 5, 9)
    t[4:8] = -100  # exactly the second chunk of 4
    check(x, W, t, b, torch.float64, reduction=reduction, chunk_size=4)
    check(x, W, t, b, torch.float32, reduction=reduction, chunk_size=4)


@pytest.mark.parametrize("normalizer", [None, 3.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_rows_ignored_is_zero_with_zero_gradients(reduction, normalizer):
    if normalizer is not None and reduction != "mean":
        pytest.skip("normalizer goes with 'mean' only")
    x, W, b, t = make((10,), 4, 6)
    t[:] = -100
    loss, _, grads = loss_and_grads(fused, x, W, t, b, reduction=reduction, chunk_size=3, normalizer=normalizer)
    assert torch.all(loss == 0) and not torch.isnan(loss).any()
    for g in grads:
        assert torch.all(g == 0)


def test_empty_input():
    x, W, b, t = make((0,), 4, 6)
    for reduction in ("mean", "sum"):
        loss, _, grads = loss_and_grads(fused, x, W, t, b, reduction=reduction)
        assert loss.item() == 0
        assert grads[0].shape == (0, 4) and torch.all(grads[1] == 0) and torch.all(grads[2] == 0)
    assert fused(x, W, t, b, reduction="none").shape == (0,)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.15])
def test_gamma_0_equals_linear_cross_entropy(dtype, reduction, label_smoothing):
    """gamma = 0, alpha None: F.linear + F.cross_entropy, value and the three gradients (a fused linear CE)."""
    x, W, b, t = make((4, 9), 10, 33, dtype=dtype, ignore_every=7)

    def linear_ce(x, W, t, b, **kwargs):
        return F.cross_entropy(F.linear(x, W, b).reshape(-1, W.shape[0]), t.reshape(-1), ignore_index=-100,
                               reduction=reduction, label_smoothing=label_smoothing)

    loss, go, grads = loss_and_grads(fused, x, W, t, b, gamma=0.0, reduction=reduction,
                                     label_smoothing=label_smoothing, chunk_size=7)
    loss_ce, _, grads_ce = loss_and_grads(linear_ce, x, W, t, b, go)
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == torch.float64 else dict(rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(loss, loss_ce, **tol)
    for g, g_ce in zip(grads, grads_ce):
        torch.testing.assert_close(g, g_ce, **tol)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradcheck_float64(reduction):
    x, W, b, t = make((5,), 3, 4, dtype=torch.float64, ignore_every=4)
    inputs = tuple(v.clone().requires_grad_(True) for v in (x, W, b))

    def function(x, W, b):
        return fused(x, W, t, b, reduction=reduction, label_smoothing=0.1, chunk_size=2,
                     alpha=torch.tensor([1.0, 0.5, 2.0, 0.75], dtype=torch.float64))

    assert torch.autograd.gradcheck(function, inputs)


@requires_emulation
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_emulated_cuda_kernels(dtype, reduction):
    """The loss part on the CUDA kernels (run by the SIMT emulator): same checks, small sizes."""
    from focal_cuda.testing import emulated_cuda, kernel_launches

    x, W, b, t = make((9,), 4, 6, ignore_every=4)
    with emulated_cuda(sm_count=2):
        before = kernel_launches()
        check(x, W, t, b, dtype, reduction=reduction, chunk_size=4, label_smoothing=0.1)
        assert kernel_launches() > before  # the emulated kernels did run


def test_autocast_cpu_bf16():
    """Under autocast the logits are bf16 (as F.linear's); the loss is bf16, the gradients take the parameters'
    float32 dtype, and everything matches the unfused composition under the same autocast."""
    x, W, b, t = make((33,), 16, 45, ignore_every=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, go, grads = loss_and_grads(fused, x, W, t, b, chunk_size=8)
        loss_u, _, grads_u = loss_and_grads(unfused, x, W, t, b, go)
    assert loss.dtype == loss_u.dtype == torch.bfloat16
    assert all(g.dtype == torch.float32 for g in grads)
    _, _, grads_truth = loss_and_grads(truth, x, W, t, b, go, dtype=torch.float64)
    assert_rel_close(loss, loss_u, torch.bfloat16, "loss vs unfused")
    for name, g, g_u, g_t in zip(["input", "weight", "bias"], grads, grads_u, grads_truth):
        assert_rel_close(g, g_u, torch.bfloat16, f"grad {name} vs unfused")
        assert_rel_close(g, g_t, torch.bfloat16, f"grad {name} vs truth")


def test_torch_compile():
    """torch.compile(fullgraph=True) traces it whole (AOT autograd with the eager backend: fast to compile) and gives
    the eager values and gradients."""
    x, W, b, t = make((4, 6), 8, 13, ignore_every=5)

    def step(x, W, b, t):
        return focal_cuda.linear_softmax_focal_loss(x, W, t, b, alpha=0.5, chunk_size=7) * 2

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)  # no graph break
    loss, go, grads = loss_and_grads(lambda x, W, t, b: step(x, W, b, t), x, W, t, b)
    loss_c, _, grads_c = loss_and_grads(lambda x, W, t, b: compiled(x, W, b, t), x, W, t, b, go)
    torch.testing.assert_close(loss_c, loss)
    for g, g_c in zip(grads, grads_c):
        torch.testing.assert_close(g_c, g)


def test_gradient_lands_in_weight_grad_and_accumulates():
    """The usual training step: an nn.Linear head's parameters get .grad, accumulated over micro-batches."""
    head = torch.nn.Linear(8, 19)
    criterion = focal_cuda.LinearSoftmaxFocalLoss(gamma=1.5, chunk_size=5)
    hidden = [torch.randn(2, 7, 8) for _ in range(2)]
    targets = [torch.randint(0, 19, (2, 7)) for _ in range(2)]
    for h, t in zip(hidden, targets):
        criterion(h, head.weight, t, head.bias).backward()
    grads = head.weight.grad.clone(), head.bias.grad.clone()
    head.zero_grad()
    for h, t in zip(hidden, targets):
        unfused(h, head.weight, t, head.bias, gamma=1.5).backward()
    torch.testing.assert_close(grads[0], head.weight.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[1], head.bias.grad, rtol=1e-5, atol=1e-6)


def test_module_stores_arguments_and_alpha_buffer():
    alpha = torch.rand(7, 1)
    module = focal_cuda.LinearSoftmaxFocalLoss(alpha=alpha, gamma=3.0, reduction="sum", ignore_index=1,
                                               label_smoothing=0.05, chunk_size=3)
    assert "alpha" in module.state_dict() and module.alpha.shape == (7,)
    x, W, b, t = make((10,), 4, 7)
    expected = fused(x, W, t, b, alpha=alpha, gamma=3.0, reduction="sum", ignore_index=1, label_smoothing=0.05)
    torch.testing.assert_close(module(x, W, t, b), expected)
    torch.testing.assert_close(focal_cuda.LinearSoftmaxFocalLoss()(x, W, t, b), fused(x, W, t, b))
    assert "linear_softmax_focal_loss" in focal_cuda.__all__ and "LinearSoftmaxFocalLoss" in focal_cuda.__all__


def test_only_requested_gradients_and_retain_graph():
    x, W, b, t = make((9,), 4, 5)
    W.requires_grad_(True)
    loss = fused(x, W, t, b, chunk_size=4)
    loss.backward(retain_graph=True)
    first = W.grad.clone()
    loss.backward()  # the saved gradients are left as they were: the second backward adds the same again
    torch.testing.assert_close(W.grad, 2 * first)
    assert x.grad is None and b.grad is None
    with torch.no_grad():
        torch.testing.assert_close(fused(x, W, t, b), loss.detach())


def test_double_backward_and_forward_mode_raise():
    x, W, b, t = make((6,), 4, 5, dtype=torch.float64)
    x.requires_grad_(True)
    W.requires_grad_(True)
    (grad_x,) = torch.autograd.grad(fused(x, W, t, b), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward .* is not supported"):
        grad_x.sum().backward()
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level(), pytest.raises(RuntimeError, match="forward-mode AD"):
        fused(fwAD.make_dual(x.detach(), torch.ones_like(x)), W.detach(), t, b)


def test_bad_arguments():
    x, W, b, t = make((6,), 4, 5)
    with pytest.raises(ValueError, match="^Invalid reduction"):
        fused(x, W, t, b, reduction="avg")
    with pytest.raises(ValueError, match="normalizer"):
        fused(x, W, t, b, reduction="sum", normalizer=2.0)
    with pytest.raises(ValueError, match="alpha"):
        fused(x, W, t, b, alpha=torch.ones(5, requires_grad=True))
    with pytest.raises(ValueError, match="alpha"):
        fused(x, W, t, b, alpha=torch.ones(4))
    with pytest.raises(ValueError, match="normalizer"):
        fused(x, W, t, b, normalizer=torch.tensor(2.0, requires_grad=True))
    with pytest.raises(ValueError, match="input"):
        fused(torch.randn(6, 3), W, t, b)
    with pytest.raises(ValueError, match="target"):
        fused(x, W, t[:5], b)
    with pytest.raises(TypeError, match="target"):
        fused(x, W, t.float(), b)
    with pytest.raises(ValueError, match="bias"):
        fused(x, W, t, torch.zeros(4))
    with pytest.raises(ValueError, match="weight"):
        fused(x, W.reshape(-1), t, b)
    with pytest.raises(TypeError, match="weight"):
        fused(x, W.double(), t, b)
    with pytest.raises(ValueError, match="chunk_size"):
        fused(x, W, t, b, chunk_size=0)
    with pytest.raises(TypeError, match="chunk_size"):
        fused(x, W, t, b, chunk_size=True)
    with pytest.raises(RuntimeError):
        fused(x, W, torch.full_like(t, 5), b)  # class index out of range: the kernel's check


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_grad_scale_of_the_kernel_is_applied(monkeypatch, reduction):
    """The kernel's gradient is grad * grad_scale (a half-precision gradient may be stored times a power of two
    whose inverse rides in grad_scale): a kernel that does so must give the same results."""
    import focal_cuda.linear as linear

    x, W, b, t = make((11,), 5, 9, dtype=torch.float64, ignore_every=4)
    loss, go, grads = loss_and_grads(fused, x, W, t, b, reduction=reduction, chunk_size=4)
    real = linear._focal_chunk

    def pre_multiplied(*args, **kwargs):
        chunk_loss, grad, grad_scale = real(*args, **kwargs)
        if grad.numel():
            grad, grad_scale = grad * 16, grad_scale / 16
        return chunk_loss, grad, grad_scale

    monkeypatch.setattr(linear, "_focal_chunk", pre_multiplied)
    loss_2, _, grads_2 = loss_and_grads(fused, x, W, t, b, go, reduction=reduction, chunk_size=4)
    torch.testing.assert_close(loss_2, loss)
    for g, g_2 in zip(grads, grads_2):
        torch.testing.assert_close(g_2, g)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_unbatched_input(reduction):
    """(H,) input with a 0-dim target, as F.linear + softmax_focal_loss on (C,) logits."""
    x, W, b, t = make((1,), 6, 5, dtype=torch.float64)
    x, t = x[0], t[0]
    loss, go, grads = loss_and_grads(fused, x, W, t, b, reduction=reduction)

    def composition(x, W, t, b, **kwargs):
        return focal_cuda.softmax_focal_loss(F.linear(x, W, b), t, **kwargs)

    loss_u, _, grads_u = loss_and_grads(composition, x, W, t, b, go, reduction=reduction)
    assert loss.shape == () and grads[0].shape == x.shape
    torch.testing.assert_close(loss, loss_u)
    for g, g_u in zip(grads, grads_u):
        torch.testing.assert_close(g, g_u)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_retain_graph_bf16_weights(reduction):
    """bf16 weights (float32 accumulator cast in the backward): a second backward of the same graph gives the same
    gradients (the saved accumulator is left as it was)."""
    x, W, b, t = make((9,), 4, 5, dtype=torch.bfloat16)
    W.requires_grad_(True)
    b.requires_grad_(True)
    loss = fused(x, W, t, b, chunk_size=4, reduction=reduction).sum()
    first = torch.autograd.grad(loss, (W, b), retain_graph=True)
    second = torch.autograd.grad(loss, (W, b))
    for g1, g2 in zip(first, second):
        assert torch.equal(g1, g2)
