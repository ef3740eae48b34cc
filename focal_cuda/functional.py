"""Functional focal losses: Python-level argument checks and normalisation, then torch.ops.focal_cuda only.

Tensor-level checks (shapes, dtypes, devices, class-index ranges) live in csrc/ops.cpp.
"""
import math
import numbers
from typing import Optional, Sequence, Union

import torch

from ._ops import REDUCTIONS, anchor_input, opmath_dtype, ops_for, supported_autograd_message

Number = Union[int, float]


def _check_tensor(value, name):
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")


def _check_floating_input(value, name):
    _check_tensor(value, name)
    if not value.is_floating_point():
        raise TypeError(f"{name}: expected a floating tensor (float16, bfloat16, float32, float64), got {value.dtype}")


def _reduction_code(reduction):
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"Invalid reduction: expected one of 'none', 'mean', 'sum', got {reduction!r}")
    return REDUCTIONS[reduction]


def _no_grad_required(value, name, what="tensor"):
    """A tensor argument the losses are not differentiated with respect to must not require grad: its gradient
    would otherwise be None (or 0) in silence."""
    if isinstance(value, torch.Tensor) and value.requires_grad and torch.is_grad_enabled():
        raise ValueError(f"{name}: expected a constant {what}, got one that requires grad (focal_cuda losses are "
                         f"differentiated with respect to the input only, not {name}; pass {name}.detach())")


def _check_autograd_mode(input, *others):
    """Refuses, with a message a user can act on, the autograd modes the ops have no rule for: forward-mode AD
    (dual tensors of torch.autograd.forward_ad, torch.func.jvp / jacfwd), the torch.func transforms that
    differentiate (grad, vjp, jacrev, hessian), and vmap of a loss whose input requires grad. They would
    otherwise give a missing tangent (None, or 0) in silence or a message about autograd.Function internals.
    vmap of the loss value alone (nothing requires grad) works."""
    if torch.compiler.is_compiling():
        return  # torch.compile traces plain tensors (it has its own checks for what it cannot trace)
    functorch = torch._C._functorch
    tensors = [t for t in (input,) + others if isinstance(t, torch.Tensor)]
    for t in tensors:
        batched = False
        while functorch.is_gradtrackingtensor(t) or functorch.is_batchedtensor(t):
            if functorch.is_gradtrackingtensor(t):
                raise RuntimeError("focal_cuda losses do not support the torch.func transforms that differentiate "
                                   "(torch.func.grad, grad_and_value, vjp, jacrev, jvp, jacfwd, hessian); "
                                   + supported_autograd_message())
            batched = True
            t = functorch.get_unwrapped(t)
        if batched and t.requires_grad and torch.is_grad_enabled():
            raise RuntimeError("focal_cuda losses do not support torch.func transforms with a gradient: "
                               "torch.func.vmap of a loss whose input requires grad has no backward (vmap of "
                               "the loss value alone works, e.g. under torch.no_grad()); "
                               + supported_autograd_message())
    if torch.autograd.forward_ad._current_level >= 0:
        for t in tensors:
            if torch.autograd.forward_ad.unpack_dual(t).tangent is not None:
                raise RuntimeError("focal_cuda losses do not support forward-mode AD (dual tensors of "
                                   "torch.autograd.forward_ad, torch.func.jvp / jacfwd); "
                                   + supported_autograd_message())


def _real_number(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:
        raise ValueError(f"{name}: expected a finite number, got {value}") from None
    if not -math.inf < value < math.inf:  # not math.isfinite: that breaks the graph on symbolic floats
        raise ValueError(f"{name}: expected a finite number, got {value}")
    return value


def _gamma(gamma):
    gamma = _real_number(gamma, "gamma")
    if gamma < 0:
        raise ValueError(f"gamma: expected gamma >= 0, got {gamma}")
    return gamma


def _label_smoothing(label_smoothing):
    label_smoothing = _real_number(label_smoothing, "label_smoothing")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing: expected a value in [0, 1], got {label_smoothing}")
    return label_smoothing


def _ignore_index(ignore_index):
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index: expected an int, got {type(ignore_index).__name__}")
    if not -(2**63) <= ignore_index < 2**63:
        raise ValueError(f"ignore_index: expected a 64-bit integer, got {ignore_index}")
    return int(ignore_index)


def _binary_alpha(alpha):
    """Binary alpha: None or a negative number disables it (encoded as -1 for the op)."""
    if alpha is None:
        return -1.0
    return _real_number(alpha, "alpha")


def _normalizer(normalizer, input, code=None):
    """None, a number, or a 0-dim tensor kept on the device (never read back to the host), in opmath; it is the
    mean's denominator, so it goes with reduction='mean' only (checked when the reduction's `code` is given)."""
    if normalizer is None:
        return None
    if code is not None and code != REDUCTIONS["mean"]:
        reduction = next(name for name, value in REDUCTIONS.items() if value == code)
        raise ValueError(f"normalizer: expected no normalizer with reduction={reduction!r} (the normalizer is the "
                         f"denominator of reduction='mean' and is used with it only), got {_describe(normalizer)}")
    if isinstance(normalizer, torch.Tensor):
        _no_grad_required(normalizer, "normalizer")  # its value is never read here: that would be a host sync
        return normalizer.to(opmath_dtype(input.dtype)) if normalizer.is_floating_point() else normalizer
    value = _real_number(normalizer, "normalizer")
    if not value > 0:
        raise ValueError(f"normalizer: expected a number > 0 (the mean's denominator), got {value}")
    return torch.full((), value, dtype=opmath_dtype(input.dtype), device=input.device)


def _describe(value):
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return repr(value)


def _compute_grad(input):
    return input.requires_grad and torch.is_grad_enabled()


def _num_classes(input):
    return input.shape[1] if input.dim() >= 2 else (input.shape[0] if input.dim() == 1 else 1)


def _softmax_alpha(alpha, input):
    """None, a number (all classes), or C weights in any shape (e.g. (C, 1)) -> None or a 1-D opmath tensor."""
    if alpha is None:
        return None
    opmath = opmath_dtype(input.dtype)
    if isinstance(alpha, torch.Tensor):
        if not (alpha.is_floating_point() or alpha.dtype in (torch.int8, torch.int16, torch.int32, torch.int64,
                                                              torch.uint8)):
            raise TypeError(f"alpha: expected a real-valued tensor of per-class weights, got {alpha.dtype}")
        _no_grad_required(alpha, "alpha")
        return alpha.reshape(-1).to(opmath)  # a different device is reported by the op
    if isinstance(alpha, numbers.Real) and not isinstance(alpha, bool):
        return torch.full((_num_classes(input),), _real_number(alpha, "alpha"), dtype=opmath, device=input.device)
    if isinstance(alpha, Sequence):
        values = [_real_number(a, "alpha") for a in _flatten(alpha)]
        return torch.tensor(values, dtype=opmath, device=input.device)
    raise TypeError(f"alpha: expected None, a number, a sequence or a tensor of per-class weights, "
                    f"got {type(alpha).__name__}")


def _elementwise_target(target, input):
    """Floating or bool targets are dense (in the input's dtype); integer targets are class indices."""
    _check_tensor(target, "target")
    if target.is_complex():
        raise TypeError(f"target: expected a floating (dense) or integer (class index) tensor, got {target.dtype}")
    _no_grad_required(target, "target")
    return target.to(input.dtype) if (target.is_floating_point() or target.dtype == torch.bool) else target.long()


def _constant_tensor(value, name):
    _check_tensor(value, name)
    if value.is_complex():
        raise TypeError(f"{name}: expected a real-valued tensor, got {value.dtype}")
    if value.requires_grad:
        raise ValueError(f"{name}: expected a constant tensor, got one that requires grad (the loss is not "
                         f"differentiated with respect to {name}; pass {name}.detach())")


def _elementwise_weight(weight, input):
    """None, or the weight in a shape the op reads without a full-size copy when it can: one weight per row
    (input.shape[:-1], mmdet's per-anchor weight) -> (..., 1); per class (..., 1, C) or a scalar -> (1, ..., C);
    anything else broadcastable to the input -> the input's shape."""
    if weight is None:
        return None
    _constant_tensor(weight, "weight")
    w = weight.to(opmath_dtype(input.dtype))
    shape = tuple(input.shape)
    if len(shape) >= 2 and tuple(w.shape) == shape[:-1]:
        return w.unsqueeze(-1)
    try:
        broadcast = torch.broadcast_shapes(tuple(w.shape), shape)
    except RuntimeError:
        broadcast = None
    if broadcast != shape:
        raise ValueError(f"weight: expected one weight per row (shape {shape[:-1]}) or a tensor broadcastable to "
                         f"the input's shape {shape}, got shape {tuple(w.shape)}")
    if not shape:
        return w.reshape(())
    w = w.reshape((1,) * (len(shape) - w.dim()) + tuple(w.shape))
    if tuple(w.shape) == shape:
        return w
    if all(d == 1 for d in w.shape[:-1]):
        return w.expand(w.shape[:-1] + (shape[-1],))  # per class (a (C,)-sized copy at most)
    if w.shape[-1] == 1:
        return w.expand(shape[:-1] + (1,)).contiguous()  # per row
    return w.expand(shape).contiguous()


def _softmax_weight(weight, input, target):
    """None, or one weight per row: the target's shape (anything broadcastable to it is expanded)."""
    if weight is None:
        return None
    _constant_tensor(weight, "weight")
    try:
        return weight.to(opmath_dtype(input.dtype)).expand(target.shape).contiguous()
    except RuntimeError:
        raise ValueError(f"weight: expected one weight per row, the target's shape {tuple(target.shape)} (or "
                         f"broadcastable to it), got shape {tuple(weight.shape)}") from None


def _sigmoid_alpha(alpha, input):
    """(alpha for the op, per-class alpha tensor or None): a number or None, or C per-class values."""
    if alpha is None or isinstance(alpha, numbers.Real) and not isinstance(alpha, bool):
        return _binary_alpha(alpha), None
    if isinstance(alpha, torch.Tensor):
        _constant_tensor(alpha, "alpha")
        return -1.0, alpha.reshape(-1).to(opmath_dtype(input.dtype))
    if isinstance(alpha, Sequence) and not isinstance(alpha, str):
        values = [_real_number(a, "alpha") for a in _flatten(alpha)]
        return -1.0, torch.tensor(values, dtype=opmath_dtype(input.dtype), device=input.device)
    raise TypeError(f"alpha: expected None, a number, or C per-class values, got {type(alpha).__name__}")


def _score(score, input):
    if score is None:
        return None
    _constant_tensor(score, "score")
    return score.to(input.dtype)


def _non_negative(value, name):
    value = _real_number(value, name)
    if value < 0:
        raise ValueError(f"{name}: expected a number >= 0, got {value}")
    return value


def _flag(value, name):
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")
    return value


def _flatten(values):
    for v in values:
        if isinstance(v, Sequence) and not isinstance(v, str):
            yield from _flatten(v)
        else:
            yield v


def sigmoid_focal_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    alpha: Optional[Union[float, Sequence[float], torch.Tensor]] = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    normalizer: Optional[Union[float, torch.Tensor]] = None,
    weight: Optional[torch.Tensor] = None,
    poly_epsilon: float = 0.0,
) -> torch.Tensor:
    """Focal loss on logits (binary / multi-label), a drop-in for torchvision.ops.sigmoid_focal_loss.

    target is either dense (floating, input's shape, values in [0, 1]) or class indices (integer, shape
    input.shape[:-1]; t == C is background, t == ignore_index ignores the row). alpha may also hold C
    per-class values; weight (constant) multiplies each element's loss: one per row (input.shape[:-1]) or
    broadcastable to the input; poly_epsilon adds Poly-1's term a_t * eps * (1 - p_t)**(gamma + 1).
    """
    _check_floating_input(input, "input")
    _check_autograd_mode(input, target, alpha, normalizer, weight)
    code = _reduction_code(reduction)
    target = _elementwise_target(target, input)
    alpha_value, class_alpha = _sigmoid_alpha(alpha, input)
    loss, _, _ = ops_for(input).sigmoid_focal_fwd(
        input, target, alpha_value, _gamma(gamma), code, _ignore_index(ignore_index),
        _label_smoothing(label_smoothing), _normalizer(normalizer, input, code), _compute_grad(input),
        _elementwise_weight(weight, input), class_alpha, _real_number(poly_epsilon, "poly_epsilon"))
    return anchor_input(loss, input)


def softmax_focal_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    alpha: Optional[Union[float, Sequence[float], torch.Tensor]] = None,
    gamma: float = 2.0,
    reduction: str = "mean",
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    normalizer: Optional[Union[float, torch.Tensor]] = None,
    weight: Optional[torch.Tensor] = None,
    poly_epsilon: float = 0.0,
) -> torch.Tensor:
    """Multi-class focal loss on logits, shaped like F.cross_entropy: input (N, C), (N, C, d1, ..., dk) or
    (C,); target class indices (N), (N, d1, ..., dk) or (). weight (constant, the target's shape) multiplies
    each row's loss; poly_epsilon adds Poly-1's term."""
    _check_floating_input(input, "input")
    _check_tensor(target, "target")
    _check_autograd_mode(input, target, alpha, normalizer, weight)
    code = _reduction_code(reduction)
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target: expected integer class indices, got {target.dtype}")
    target = target.long()
    loss, _, _ = ops_for(input).softmax_focal_fwd(
        input, target, _softmax_alpha(alpha, input), _gamma(gamma), code, _ignore_index(ignore_index),
        _label_smoothing(label_smoothing), _normalizer(normalizer, input, code), _compute_grad(input),
        _softmax_weight(weight, input, target), _real_number(poly_epsilon, "poly_epsilon"))
    return anchor_input(loss, input)


def binary_focal_loss(
    prob: torch.Tensor,
    target: torch.Tensor,
    alpha: Optional[float] = 0.25,
    gamma: float = 2.0,
    reduction: str = "mean",
    *,
    weight: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Focal loss on probabilities (after a sigmoid); logs clamp at -100 as torch.nn.BCELoss does. weight
    (constant) multiplies each element's loss, as in sigmoid_focal_loss."""
    _check_floating_input(prob, "prob")
    _check_tensor(target, "target")
    _check_autograd_mode(prob, target, weight)
    code = _reduction_code(reduction)
    if target.is_complex():
        raise TypeError(f"target: expected a real-valued tensor of the prob's shape, got {target.dtype}")
    _no_grad_required(target, "target")
    loss, _, _ = ops_for(prob).binary_focal_fwd(prob, target.to(prob.dtype), _binary_alpha(alpha), _gamma(gamma), code,
                                                _compute_grad(prob), _elementwise_weight(weight, prob))
    return anchor_input(loss, prob)


def varifocal_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 0.75,
    gamma: float = 2.0,
    reduction: str = "mean",
    *,
    iou_weighted: bool = True,
    score: Optional[torch.Tensor] = None,
    weight: Optional[torch.Tensor] = None,
    normalizer: Optional[Union[float, torch.Tensor]] = None,
    ignore_index: int = -100,
) -> torch.Tensor:
    """Varifocal loss (VarifocalNet; mmdet's formula) on logits with IoU-aware targets q in [0, 1]:
    w * BCE(x, q), w = q (1 if not iou_weighted) where q > 0, else alpha * p**gamma; gradient through w.
    target: dense q (input's shape), or class indices (shape input.shape[:-1]; C = background) with
    score (same shape) the q of the target class (1 when None)."""
    _check_floating_input(input, "input")
    _check_autograd_mode(input, target, score, weight, normalizer)
    code = _reduction_code(reduction)
    target = _elementwise_target(target, input)
    loss, _, _ = ops_for(input).varifocal_fwd(
        input, target, _score(score, input), _real_number(alpha, "alpha"), _gamma(gamma),
        _flag(iou_weighted, "iou_weighted"), code, _ignore_index(ignore_index), _normalizer(normalizer, input, code),
        _compute_grad(input), _elementwise_weight(weight, input))
    return anchor_input(loss, input)


def quality_focal_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    beta: float = 2.0,
    reduction: str = "mean",
    *,
    score: Optional[torch.Tensor] = None,
    weight: Optional[torch.Tensor] = None,
    normalizer: Optional[Union[float, torch.Tensor]] = None,
    ignore_index: int = -100,
) -> torch.Tensor:
    """Quality focal loss (GFL; mmdet's formula) on logits: BCE(x, y) * |y - p|**beta, gradient through the
    factor; targets as in varifocal_loss."""
    _check_floating_input(input, "input")
    _check_autograd_mode(input, target, score, weight, normalizer)
    code = _reduction_code(reduction)
    target = _elementwise_target(target, input)
    loss, _, _ = ops_for(input).quality_focal_fwd(
        input, target, _score(score, input), _non_negative(beta, "beta"), code, _ignore_index(ignore_index),
        _normalizer(normalizer, input, code), _compute_grad(input), _elementwise_weight(weight, input))
    return anchor_input(loss, input)


def asymmetric_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    gamma_pos: float = 0.0,
    gamma_neg: float = 4.0,
    clip: float = 0.05,
    reduction: str = "mean",
    *,
    eps: float = 1e-8,
    detach_modulation: bool = True,
    weight: Optional[torch.Tensor] = None,
    normalizer: Optional[Union[float, torch.Tensor]] = None,
    ignore_index: int = -100,
) -> torch.Tensor:
    """Asymmetric loss (ASL, Ridnik et al. 2021; Alibaba-MIIL's code) on logits for multi-label
    classification: p_neg = min(1 - p + clip, 1), pt = p t + p_neg (1 - t),
    loss = -(1 - pt)**(gamma_pos t + gamma_neg (1 - t)) [t log max(p, eps) + (1 - t) log max(p_neg, eps)];
    detach_modulation treats the modulating factor as a constant in the gradient (the original's default).
    target: dense (input's shape) or class indices (shape input.shape[:-1]; C = background)."""
    _check_floating_input(input, "input")
    _check_autograd_mode(input, target, weight, normalizer)
    code = _reduction_code(reduction)
    target = _elementwise_target(target, input)
    clip = _real_number(clip, "clip")
    if not 0.0 <= clip <= 1.0:
        raise ValueError(f"clip: expected a value in [0, 1], got {clip}")
    eps = _real_number(eps, "eps")
    if not eps > 0:
        raise ValueError(f"eps: expected a number > 0, got {eps}")
    loss, _, _ = ops_for(input).asymmetric_fwd(
        input, target, _non_negative(gamma_pos, "gamma_pos"), _non_negative(gamma_neg, "gamma_neg"), clip, eps,
        _flag(detach_modulation, "detach_modulation"), code, _ignore_index(ignore_index),
        _normalizer(normalizer, input, code), _compute_grad(input), _elementwise_weight(weight, input))
    return anchor_input(loss, input)
