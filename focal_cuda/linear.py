"""Fused linear + softmax focal loss: softmax_focal_loss(F.linear(input, weight, bias), target, ...) without
ever holding the full (N, C) logits or their gradient (docs/design.md §5, last bullet).

The rows are walked in chunks. Per chunk, in the forward:

    logits = chunk @ weight.T (+ bias)                      torch's matmul (cuBLAS / MKL / oneDNN)
    loss_c, g, grad_scale = softmax_focal_fwd(logits, ...)  the fused kernel: loss and d(sum loss)/d(logits)
                                                            in one pass; the logits are freed right after
    grad_input[chunk] = g @ weight                          (g times its grad_scale: the true gradient)
    grad_weight      += g.T @ chunk                         accumulated in float32 for bf16/fp16
    grad_bias        += g.sum(0)                            float32 for bf16/fp16

so at most one chunk of logits and one chunk of their gradient exist at a time. The backward only multiplies
the saved gradients by grad_output (and the mean's 1/denominator), in float (opmath).

reduction="none": the per-row gradients cannot be contracted with the weight before grad_output is known, so the
forward computes the losses only (no gradient buffer) and the backward recomputes the chunks, with grad_output as
the kernel's per-row weight of a "sum" (the projection's matmul runs twice: about 4/3 of the reduced cost).
"""
import numbers
from typing import Optional, Sequence, Union

import torch

from ._ops import REDUCTIONS, _is_plain_tensor, opmath_dtype, ops_for
from ._arguments import (_check_floating_input, _check_tensor, _gamma, _ignore_index, _label_smoothing, _normalizer,
                         _reduction_code, _softmax_alpha)

__all__ = ["linear_softmax_focal_loss", "default_chunk_rows"]

_NONE, _MEAN, _SUM = REDUCTIONS["none"], REDUCTIONS["mean"], REDUCTIONS["sum"]

# Bytes of one chunk's logits (its gradient takes as much again, and on CPU the float32 copy of a bf16/fp16
# gradient for the weight's float32 accumulation twice that).
CHUNK_BYTES_CUDA = 256 * 2**20
CHUNK_BYTES_CPU = 32 * 2**20


def default_chunk_rows(num_classes, dtype, device):
    """Rows per chunk so that a chunk's logits take at most CHUNK_BYTES_CUDA (GPU) / CHUNK_BYTES_CPU (else)."""
    budget = CHUNK_BYTES_CUDA if torch.device(device).type == "cuda" else CHUNK_BYTES_CPU
    row_bytes = max(1, num_classes) * torch.empty((), dtype=dtype).element_size()
    return max(1, budget // row_bytes)


def _focal_chunk(logits, target, alpha, gamma, reduction_code, ignore_index, label_smoothing, compute_grad,
                 row_weight=None):
    """The one call of the fused softmax focal kernel (so that a change of the op's signature touches only this):
    (loss, grad, grad_scale); the true d(loss)/d(logits) is grad * grad_scale (grad_scale: a 0-dim opmath tensor)."""
    return ops_for(logits).softmax_focal_fwd(logits, target, alpha, gamma, reduction_code, ignore_index,
                                             label_smoothing, None, compute_grad, row_weight, 0.0)


def _apply_grad_scale_(grad, grad_scale):
    """grad *= grad_scale in place. For a 'sum' the kernels' grad_scale is 1 or a power of two (a half-precision
    gradient stored pre-multiplied), exact in the gradient's dtype. Skipped when it is exactly 1 on a plain CPU
    tensor (reading it is no device synchronisation there), as the loss ops' backward does."""
    if (not torch.compiler.is_compiling() and _is_plain_tensor(grad_scale) and grad_scale.device.type == "cpu"
            and bool(grad_scale == 1)):
        return
    grad.mul_(grad_scale)


def _accumulate_weight_grad(acc, g, x):
    """acc += g.T @ x with acc in float32 for bf16/fp16 operands (CUDA: a float32-output GEMM when torch has one)."""
    if acc.dtype == g.dtype:
        acc.addmm_(g.t(), x)
        return
    try:  # float32 output from bf16/fp16 operands, no float32 copy of the chunk (torch >= 2.8, CUDA)
        torch.addmm(acc, g.t(), x, out_dtype=acc.dtype, out=acc)
    except (TypeError, RuntimeError, NotImplementedError):
        acc.addmm_(g.t().to(acc.dtype), x.to(acc.dtype))


def _class_blocks(num_classes, width):
    """Class blocks for the CPU bf16/fp16 matmuls: float32 copies of one block of W at a time (about 4 MB)."""
    block = max(64, (4 * 2**20) // (4 * max(1, width)))
    return [(c, min(c + block, num_classes)) for c in range(0, num_classes, block)]


class _Projection:
    """The three matmuls of a chunk. torch's own GEMM in the operands' dtype, except bf16/fp16 on CPU: there torch's
    low-precision GEMM is slow on CPUs without native bf16/fp16 math (100x float32's on AVX2), so the operands go
    through float32 one block of classes at a time (float32 accumulation, the same rounding as a bf16 GEMM's fp32
    accumulator; temporaries of a few MB)."""

    def __init__(self, weight, bias):
        self.weight, self.bias = weight, bias
        self.blocked = weight.device.type == "cpu" and weight.dtype in (torch.bfloat16, torch.float16)
        if self.blocked:
            self.blocks = _class_blocks(weight.shape[0], weight.shape[1])

    def logits(self, x):
        W, b = self.weight, self.bias
        if not self.blocked:
            return torch.addmm(b, x, W.t()) if b is not None else torch.mm(x, W.t())
        out = x.new_empty((x.shape[0], W.shape[0]))
        xf = x.float()
        for c0, c1 in self.blocks:
            Wf = W[c0:c1].float()
            block = torch.addmm(b[c0:c1].float(), xf, Wf.t()) if b is not None else torch.mm(xf, Wf.t())
            out[:, c0:c1] = block
        return out

    def input_grad(self, g, out):
        """out = g @ W (out: rows of grad_input, float32 in the blocked case)."""
        if not self.blocked:
            torch.mm(g, self.weight, out=out)
            return
        out.zero_()
        for c0, c1 in self.blocks:
            out.addmm_(g[:, c0:c1].float(), self.weight[c0:c1].float())

    def weight_grad(self, acc, g, x):
        """acc += g.T @ x."""
        if not self.blocked:
            _accumulate_weight_grad(acc, g, x)
            return
        xf = x.float()
        for c0, c1 in self.blocks:
            acc[c0:c1].addmm_(g[:, c0:c1].t().float(), xf)


def _chunked_pass(x, weight, bias, target, alpha, gamma, reduction_code, ignore_index, label_smoothing, chunk_rows,
                  want_input, want_weight, want_bias, row_weight=None):
    """Walks the rows of x (N, H) in chunks. With reduction_code 'none': returns the per-row losses (N,) and
    computes no gradient. With 'sum': returns (loss sum in opmath, grad_input (N, H) or None, grad_weight
    accumulator (C, H) or None, grad_bias accumulator (C,) or None), the gradients of sum_rows(row_weight * loss)
    with grad_scale applied, i.e. the true ones; the accumulators are in opmath (float32 for bf16/fp16)."""
    N, C = x.shape[0], weight.shape[0]
    opmath = opmath_dtype(x.dtype)
    projection = _Projection(weight, bias)
    compute_grad = want_input or want_weight or want_bias
    if reduction_code == _NONE:
        losses = x.new_empty((N,))
    else:
        loss_sum = torch.zeros((), dtype=opmath, device=x.device)
    grad_input = None
    if want_input:
        grad_input = torch.empty(x.shape, dtype=opmath if projection.blocked else x.dtype, device=x.device)
    grad_weight = torch.zeros((C, x.shape[1]), dtype=opmath, device=x.device) if want_weight else None
    grad_bias = torch.zeros((C,), dtype=opmath, device=x.device) if want_bias else None
    for start in range(0, N, chunk_rows):
        stop = min(start + chunk_rows, N)
        x_c = x[start:stop]
        logits = projection.logits(x_c)
        loss_c, g, grad_scale = _focal_chunk(
            logits, target[start:stop], alpha, gamma, reduction_code, ignore_index, label_smoothing, compute_grad,
            None if row_weight is None else row_weight[start:stop])
        del logits  # before the chunk's matmuls: one chunk of logits-sized memory besides g
        if reduction_code == _NONE:
            losses[start:stop] = loss_c
            continue
        loss_sum += loss_c.to(opmath)
        if not compute_grad:
            continue
        _apply_grad_scale_(g, grad_scale)
        if want_input:
            projection.input_grad(g, grad_input[start:stop])
        if want_weight:
            projection.weight_grad(grad_weight, g, x_c)
        if want_bias:
            grad_bias += g.sum(0, dtype=opmath)
        del g
    if reduction_code == _NONE:
        return losses
    return loss_sum, grad_input, grad_weight, grad_bias


def _scaled(grad, factor, dtype):
    """grad * factor computed in opmath (factor: 0-dim opmath tensor, never rounded to bf16/fp16), as `dtype`.
    A cast on the way goes one block of rows at a time: a multiply into a narrower `out` would otherwise take a
    full-size opmath temporary (TensorIterator computes in the common dtype, then copies)."""
    if grad is None:
        return None
    out = torch.empty(grad.shape, dtype=dtype, device=grad.device)
    if grad.dtype == factor.dtype == dtype:
        return torch.mul(grad, factor, out=out)
    rows = grad.reshape(grad.shape[0], -1) if grad.dim() else grad.reshape(1, 1)
    out_rows = out.view(rows.shape)
    step = max(1, (8 * 2**20) // (4 * max(1, rows.shape[1])))
    for start in range(0, rows.shape[0], step):
        out_rows[start:start + step] = rows[start:start + step].to(factor.dtype) * factor  # a block-sized temporary
    return out


class _LinearSoftmaxFocal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, target, alpha, normalizer, gamma, reduction_code, ignore_index, label_smoothing,
                chunk_rows, compute_dtype):
        want_input, want_weight, want_bias = ctx.needs_input_grad[:3]
        ctx.reduction_code = reduction_code
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        with torch.autocast(x.device.type, enabled=False):  # explicit casts: the autocast dtype, read as it is
            x_c, weight_c = x.to(compute_dtype), weight.to(compute_dtype)
            bias_c = None if bias is None else bias.to(compute_dtype)
            if reduction_code == _NONE:
                ctx.args = (alpha, gamma, ignore_index, label_smoothing, chunk_rows)
                ctx.compute_dtype = compute_dtype
                ctx.save_for_backward(x, weight, bias, target)
                return _chunked_pass(x_c, weight_c, bias_c, target, alpha, gamma, _NONE, ignore_index,
                                     label_smoothing, chunk_rows, False, False, False)
            loss_sum, grad_input, grad_weight, grad_bias = _chunked_pass(
                x_c, weight_c, bias_c, target, alpha, gamma, _SUM, ignore_index, label_smoothing, chunk_rows,
                want_input, want_weight, want_bias)
            del x_c, weight_c, bias_c
            if reduction_code == _MEAN:
                if normalizer is not None:
                    denominator = normalizer.to(loss_sum.dtype)
                else:  # a mean over nothing is 0 with zero gradient: every ignored row adds an exact 0
                    denominator = (target != ignore_index).sum().to(loss_sum.dtype).clamp_min(1)
            else:
                denominator = torch.ones((), dtype=loss_sum.dtype, device=loss_sum.device)
            ctx.save_for_backward(grad_input, grad_weight, grad_bias, denominator)
            return (loss_sum / denominator).to(compute_dtype)

    @staticmethod
    def backward(ctx, grad_output):
        with torch.no_grad():
            grads = _LinearSoftmaxFocal._gradients(ctx, grad_output)
        if torch.is_grad_enabled():  # create_graph=True: differentiating these gradients again raises, clearly
            grads = _no_double_backward(grads)
        return grads

    @staticmethod
    def _gradients(ctx, grad_output):
        x_dtype, weight_dtype, bias_dtype = ctx.dtypes
        want_input, want_weight, want_bias = ctx.needs_input_grad[:3]
        if ctx.reduction_code == _NONE:
            x, weight, bias, target = ctx.saved_tensors
            alpha, gamma, ignore_index, label_smoothing, chunk_rows = ctx.args
            dtype = ctx.compute_dtype
            row_weight = grad_output.reshape(-1).to(opmath_dtype(dtype)).contiguous()
            with torch.autocast(x.device.type, enabled=False):
                _, grad_input, grad_weight, grad_bias = _chunked_pass(
                    x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype), target, alpha, gamma,
                    _SUM, ignore_index, label_smoothing, chunk_rows, want_input, want_weight, want_bias, row_weight)
            return (None if grad_input is None else grad_input.to(x_dtype),
                    None if grad_weight is None else grad_weight.to(weight_dtype),
                    None if grad_bias is None else grad_bias.to(bias_dtype)) + (None,) * 9
        grad_input, grad_weight, grad_bias, denominator = ctx.saved_tensors
        factor = grad_output.to(denominator.dtype) / denominator
        return (_scaled(grad_input, factor, x_dtype), _scaled(grad_weight, factor, weight_dtype),
                _scaled(grad_bias, factor, bias_dtype)) + (None,) * 9


_DOUBLE_BACKWARD = (b"double backward of linear_softmax_focal_loss is not supported: its gradients are formed in the "
                    b"forward (first derivatives only) and cannot be differentiated again (create_graph=True, "
                    b"gradient penalties, MAML-style steps)")


def _no_double_backward(grads):
    """The gradients as tensors whose own backward raises a clear error (what @once_differentiable does, also
    when grad_output does not require grad: a silent 'does not require grad' would hide the missing term)."""
    present = [g for g in grads if g is not None]
    if not present:
        return grads
    wrapped = torch._C._functions.DelayedError(_DOUBLE_BACKWARD, len(present))(
        *[g.detach().requires_grad_(True) for g in present])
    it = iter((wrapped,) if isinstance(wrapped, torch.Tensor) else wrapped)
    return tuple(next(it) if g is not None else None for g in grads)


def _check_no_forward_ad(*tensors):
    """Forward-mode AD (torch.autograd.forward_ad dual tensors) is refused at the call: the loss has reverse-mode
    first derivatives only. (A custom jvp on the autograd.Function would do the same but stops torch.compile
    from tracing it.)"""
    if torch.compiler.is_compiling():
        return
    for t in tensors:
        if t is not None and torch.autograd.forward_ad.unpack_dual(t).tangent is not None:
            raise RuntimeError("linear_softmax_focal_loss does not support forward-mode AD (torch.autograd."
                               "forward_ad, torch.func.jvp / jacfwd): it computes reverse-mode first derivatives "
                               "only (loss.backward(), torch.autograd.grad)")


def _reduction(reduction):
    try:
        return _reduction_code(reduction)
    except ValueError:
        raise ValueError(f"Invalid reduction: expected one of 'none', 'mean', 'sum', got {reduction!r}") from None


def _chunk_rows(chunk_size, num_classes, dtype, device):
    if chunk_size is None:
        return default_chunk_rows(num_classes, dtype, device)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral):
        raise TypeError(f"chunk_size: expected a positive int (rows per chunk) or None, got "
                        f"{type(chunk_size).__name__}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive int (rows per chunk) or None, got {chunk_size}")
    return int(chunk_size)


def _compute_dtype(input, weight):
    """The logits' dtype: the autocast dtype for float32 operands under torch.autocast (what F.linear gives), else
    the common dtype of input and weight, which must agree as for F.linear."""
    device_type = input.device.type
    if torch.is_autocast_enabled(device_type) and input.dtype != torch.float64 and weight.dtype != torch.float64:
        return torch.get_autocast_dtype(device_type)
    if input.dtype != weight.dtype:
        raise TypeError(f"weight: expected the input's dtype {input.dtype} (as F.linear), got {weight.dtype}")
    return input.dtype


def linear_softmax_focal_loss(
    input: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    alpha: Optional[Union[float, Sequence[float], torch.Tensor]] = None,
    gamma: float = 2.0,
    reduction: str = "mean",
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    normalizer: Optional[Union[float, torch.Tensor]] = None,
    chunk_size: Optional[int] = None,
) -> torch.Tensor:
    """softmax_focal_loss(F.linear(input, weight, bias), target, alpha, gamma, reduction, ...) without ever holding
    the (N, C) logits or their gradient: the rows go through projection + fused loss kernel in chunks, and the
    gradients of input, weight (float32 accumulation for bf16/fp16) and bias are formed in the forward.

    input: (..., H), e.g. (N, H) or (B, T, H) hidden states; weight: (C, H) (an LM head, a classifier);
    bias: (C,) or None; target: integer class indices of shape input.shape[:-1] (ignore_index rows ignored).
    alpha, gamma, reduction, ignore_index, label_smoothing, normalizer: as softmax_focal_loss. With gamma=0 and
    alpha None it equals F.cross_entropy(F.linear(input, weight, bias), target, ...): a fused linear cross-entropy.
    reduction="none" returns one loss per row (target's shape); its backward recomputes the chunks.
    chunk_size: rows per chunk; default: a chunk's logits take at most 256 MB on GPU, 32 MB on CPU.
    Only first derivatives (reverse mode) of input, weight and bias; double backward and forward mode raise.
    """
    _check_floating_input(input, "input")
    _check_floating_input(weight, "weight")
    _check_tensor(target, "target")
    if weight.dim() != 2:
        raise ValueError(f"weight: expected a 2-D (C, H) tensor (classes x hidden), got shape {tuple(weight.shape)}")
    C, H = weight.shape
    if input.dim() < 1 or input.shape[-1] != H:
        raise ValueError(f"input: expected shape (..., {H}) (the last dim is weight's H = {H}), got "
                         f"{tuple(input.shape)}")
    if bias is not None:
        _check_floating_input(bias, "bias")
        if tuple(bias.shape) != (C,):
            raise ValueError(f"bias: expected shape ({C},) (one per class of weight), got {tuple(bias.shape)}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target: expected integer class indices, got {target.dtype}")
    if tuple(target.shape) != tuple(input.shape[:-1]):
        raise ValueError(f"target: expected shape {tuple(input.shape[:-1])} (input.shape[:-1]), got "
                         f"{tuple(target.shape)}")
    if target.requires_grad:  # unreachable for integer tensors, kept for subclasses
        raise ValueError("target: class indices cannot require grad")
    _check_no_forward_ad(input, weight, bias)
    code = _reduction(reduction)
    if normalizer is not None and code != _MEAN:
        raise ValueError(f"normalizer: only with reduction='mean' (it is the mean's denominator), got "
                         f"reduction={reduction!r}")
    compute_dtype = _compute_dtype(input, weight)
    class_like = torch.empty((0, C), dtype=compute_dtype, device=weight.device)  # what the normalisers read
    if isinstance(alpha, torch.Tensor) and alpha.requires_grad:
        raise ValueError("alpha: expected a constant tensor, got one that requires grad (the loss is not "
                         "differentiated with respect to alpha; pass alpha.detach())")
    alpha = _softmax_alpha(alpha, class_like)
    if alpha is not None and alpha.numel() != C:
        raise ValueError(f"alpha: expected {C} per-class weights (weight.shape[0]), got {alpha.numel()}")
    if isinstance(normalizer, torch.Tensor):
        if normalizer.requires_grad:
            raise ValueError("normalizer: expected a constant tensor, got one that requires grad (the loss is not "
                             "differentiated with respect to normalizer; pass normalizer.detach())")
        if normalizer.dim() != 0:
            raise ValueError(f"normalizer: expected a number or a 0-dim tensor, got a tensor of shape "
                             f"{tuple(normalizer.shape)}")
    normalizer = _normalizer(normalizer, class_like)
    chunk_rows = _chunk_rows(chunk_size, C, compute_dtype, input.device)
    x = input.reshape(-1, H)
    flat_target = target.reshape(-1).long().contiguous()
    loss = _LinearSoftmaxFocal.apply(x, weight, bias, flat_target, alpha, normalizer, _gamma(gamma), code,
                                     _ignore_index(ignore_index), _label_smoothing(label_smoothing), chunk_rows,
                                     compute_dtype)
    return loss.reshape(target.shape) if code == _NONE else loss
