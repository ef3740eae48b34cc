"""Functional focal losses: Python-level argument checks and normalisation, then torch.ops.focal_cuda only.

Tensor-level checks (shapes, dtypes, devices, class-index ranges) live in csrc/ops.cpp.
"""
import math
import numbers
from typing import Optional, Sequence, Union

import torch

from ._ops import REDUCTIONS, opmath_dtype, ops_for

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
        raise ValueError(f"reduction: expected one of 'none', 'mean', 'sum', got {reduction!r}")
    return REDUCTIONS[reduction]


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


def _normalizer(normalizer, input):
    """None, a number, or a 0-dim tensor kept on the device (never read back to the host), in opmath."""
    if normalizer is None:
        return None
    if isinstance(normalizer, torch.Tensor):  # its value is never read here: that would be a host sync
        return normalizer.to(opmath_dtype(input.dtype)) if normalizer.is_floating_point() else normalizer
    value = _real_number(normalizer, "normalizer")
    if not value > 0:
        raise ValueError(f"normalizer: expected a number > 0 (the mean's denominator), got {value}")
    return torch.full((), value, dtype=opmath_dtype(input.dtype), device=input.device)


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
        return alpha.reshape(-1).to(opmath)  # a different device is reported by the op
    if isinstance(alpha, numbers.Real) and not isinstance(alpha, bool):
        return torch.full((_num_classes(input),), _real_number(alpha, "alpha"), dtype=opmath, device=input.device)
    if isinstance(alpha, Sequence):
        values = [_real_number(a, "alpha") for a in _flatten(alpha)]
        return torch.tensor(values, dtype=opmath, device=input.device)
    raise TypeError(f"alpha: expected None, a number, a sequence or a tensor of per-class weights, "
                    f"got {type(alpha).__name__}")


def _flatten(values):
    for v in values:
        if isinstance(v, Sequence) and not isinstance(v, str):
            yield from _flatten(v)
        else:
            yield v


def sigmoid_focal_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    alpha: Optional[float] = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    normalizer: Optional[Union[float, torch.Tensor]] = None,
) -> torch.Tensor:
    """Focal loss on logits (binary / multi-label), a drop-in for torchvision.ops.sigmoid_focal_loss.

    target is either dense (floating, input's shape, values in [0, 1]) or class indices (integer, shape
    input.shape[:-1]; t == C is background, t == ignore_index ignores the row).
    """
    _check_floating_input(input, "input")
    _check_tensor(target, "target")
    code = _reduction_code(reduction)
    if target.is_complex():
        raise TypeError(f"target: expected a floating (dense) or integer (class index) tensor, got {target.dtype}")
    # Floating or bool targets are dense; integer targets are class indices.
    target = target.to(input.dtype) if (target.is_floating_point() or target.dtype == torch.bool) else target.long()
    loss, _, _ = ops_for(input).sigmoid_focal_fwd(input, target, _binary_alpha(alpha), _gamma(gamma), code,
                                       _ignore_index(ignore_index), _label_smoothing(label_smoothing),
                                       _normalizer(normalizer, input), _compute_grad(input))
    return loss


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
) -> torch.Tensor:
    """Multi-class focal loss on logits, shaped like F.cross_entropy: input (N, C), (N, C, d1, ..., dk) or
    (C,); target class indices (N), (N, d1, ..., dk) or ()."""
    _check_floating_input(input, "input")
    _check_tensor(target, "target")
    code = _reduction_code(reduction)
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target: expected integer class indices, got {target.dtype}")
    loss, _, _ = ops_for(input).softmax_focal_fwd(input, target.long(), _softmax_alpha(alpha, input), _gamma(gamma), code,
                                       _ignore_index(ignore_index), _label_smoothing(label_smoothing),
                                       _normalizer(normalizer, input), _compute_grad(input))
    return loss


def binary_focal_loss(
    prob: torch.Tensor,
    target: torch.Tensor,
    alpha: Optional[float] = 0.25,
    gamma: float = 2.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Focal loss on probabilities (after a sigmoid); logs clamp at -100 as torch.nn.BCELoss does."""
    _check_floating_input(prob, "prob")
    _check_tensor(target, "target")
    code = _reduction_code(reduction)
    if target.is_complex():
        raise TypeError(f"target: expected a real-valued tensor of the prob's shape, got {target.dtype}")
    loss, _, _ = ops_for(prob).binary_focal_fwd(prob, target.to(prob.dtype), _binary_alpha(alpha), _gamma(gamma), code,
                                      _compute_grad(prob))
    return loss
