"""The Python-level argument checks and normalisation of the functional losses (functional.py): types, Python
numbers, defaults, the weight's layout (weight_mode) and the alpha forms, decided here once for every loss.
Tensor-level checks (shapes, dtypes, devices, class-index ranges) live in csrc/ops.cpp.
"""
import math
import numbers
from typing import Sequence

import torch

from ._ops import REDUCTIONS, WEIGHT_MODES, opmath_dtype, supported_autograd_message


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
    """Binary alpha: None or a negative number disables it (None for the op)."""
    if alpha is None:
        return None
    alpha = _real_number(alpha, "alpha")
    return None if alpha < 0 else alpha


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
    """(weight, weight_mode) for the op: None, or the weight in the layout the op reads without a full-size copy when
    it can: one weight per row (input.shape[:-1], mmdet's per-anchor weight, or (..., 1)) -> "row", of shape
    input.shape[:-1]; per class ((..., 1, C), (C,)) or a scalar -> "class", of shape (C,); anything else
    broadcastable to the input -> "element", the input's shape. This is the one place the layout is decided."""
    if weight is None:
        return None, WEIGHT_MODES["element"]
    _constant_tensor(weight, "weight")
    w = weight.to(opmath_dtype(input.dtype))
    shape = tuple(input.shape)
    if len(shape) >= 2 and tuple(w.shape) == shape[:-1]:
        return w, WEIGHT_MODES["row"]
    try:
        broadcast = torch.broadcast_shapes(tuple(w.shape), shape)
    except RuntimeError:
        broadcast = None
    if broadcast != shape:
        raise ValueError(f"weight: expected one weight per row (shape {shape[:-1]}) or a tensor broadcastable to "
                         f"the input's shape {shape}, got shape {tuple(w.shape)}")
    if not shape:
        return w.reshape(()), WEIGHT_MODES["element"]
    w = w.reshape((1,) * (len(shape) - w.dim()) + tuple(w.shape))
    if tuple(w.shape) == shape:
        return w, WEIGHT_MODES["element"]
    if all(d == 1 for d in w.shape[:-1]):
        return w.reshape(-1).expand(shape[-1]), WEIGHT_MODES["class"]  # a (C,)-sized copy at most
    if w.shape[-1] == 1:
        return w.expand(shape[:-1] + (1,)).reshape(shape[:-1]), WEIGHT_MODES["row"]
    return w.expand(shape).contiguous(), WEIGHT_MODES["element"]


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
        return None, alpha.reshape(-1).to(opmath_dtype(input.dtype))
    if isinstance(alpha, Sequence) and not isinstance(alpha, str):
        values = [_real_number(a, "alpha") for a in _flatten(alpha)]
        return None, torch.tensor(values, dtype=opmath_dtype(input.dtype), device=input.device)
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
