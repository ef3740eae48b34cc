"""Functional focal losses: Python-level argument checks and normalisation, then torch.ops.focal_cuda only.

The argument helpers are in _arguments.py; tensor-level checks (shapes, dtypes, devices, class-index ranges) live
in csrc/ops.cpp.
"""
from typing import Optional, Sequence, Union

import torch

from ._arguments import (_check_tensor, _check_floating_input, _reduction_code, _no_grad_required,
                         _check_autograd_mode, _real_number, _gamma, _label_smoothing, _ignore_index, _binary_alpha,
                         _normalizer, _compute_grad, _softmax_alpha, _elementwise_target, _elementwise_weight,
                         _softmax_weight, _sigmoid_alpha, _score, _non_negative, _flag)
from ._ops import anchor_input, ops_for

Number = Union[int, float]


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
        *_elementwise_weight(weight, input), class_alpha, _real_number(poly_epsilon, "poly_epsilon"))
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
                                                _compute_grad(prob), *_elementwise_weight(weight, prob))
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
        _compute_grad(input), *_elementwise_weight(weight, input))
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
        _normalizer(normalizer, input, code), _compute_grad(input), *_elementwise_weight(weight, input))
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
        _normalizer(normalizer, input, code), _compute_grad(input), *_elementwise_weight(weight, input))
    return anchor_input(loss, input)
