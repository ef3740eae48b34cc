"""Plain PyTorch focal losses: the ground truth the kernels are tested against.

Written for clarity and numerical stability, not speed. Every function computes in the
dtype of its input (upcast the input to float64 for a ground truth), validates its own
arguments, and is differentiable with ordinary autograd. Only ``torch`` is imported, so
this module works without the compiled extension.

Stability choices, each needed for finite values and gradients at extreme inputs:
- log p and log(1 - p) of a sigmoid come from ``F.logsigmoid(x)`` and ``F.logsigmoid(-x)``;
- 1 - p_t is formed as ``p * (1 - t) + (1 - p) * t`` (no cancellation near p_t = 1);
- 1 - p of a softmax is ``-expm1(log_softmax)`` (no cancellation near p = 1);
- (1 - p_t) ** gamma is taken only where 1 - p_t > 0, so 0 < gamma < 1 never forms
  an infinite derivative at 1 - p_t == 0;
- the probability-space loss clamps its logs at -100 as ``torch.nn.BCELoss`` does. Its gradient at
  p exactly 0 or 1 is a convention: here the clamp's (0), while BCELoss uses -1/max(p, 1e-12);
  compare gradients only for p inside (0, 1).
"""

import math
import numbers

import torch
import torch.nn.functional as F

__all__ = ["sigmoid_focal_loss", "softmax_focal_loss", "binary_focal_loss", "varifocal_loss", "quality_focal_loss",
           "asymmetric_loss"]

_REDUCTIONS = ("none", "mean", "sum")


def _check_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _check_floating(name, tensor):
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got dtype {tensor.dtype}")


def _check_gamma(gamma):
    gamma = float(gamma)
    if not gamma >= 0.0 or gamma == float("inf"):
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma}")
    return gamma


def _check_label_smoothing(label_smoothing):
    label_smoothing = float(label_smoothing)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    return label_smoothing


def _binary_alpha(alpha):
    """None or a negative alpha disables the positive/negative weighting."""
    if alpha is None:
        return None
    alpha = float(alpha)
    if alpha != alpha or alpha in (float("inf"), float("-inf")):
        raise ValueError(f"alpha must be finite, got {alpha}")
    return None if alpha < 0 else alpha


def _power(base, gamma):
    """base ** gamma for base >= 0, with a finite gradient where base == 0 (even for gamma < 1). gamma = 0 is the
    constant 1 (no gradient path: 0 * an infinite cross entropy would make the gradient NaN at infinite logits)."""
    if gamma == 0:
        return torch.ones_like(base).detach()
    positive = base > 0
    safe_base = torch.where(positive, base, torch.ones_like(base))
    value_at_zero = 1.0 if gamma == 0 else 0.0
    return torch.where(positive, safe_base**gamma, torch.full_like(base, value_at_zero))


def _power_tensor(base, exponent):
    """base ** exponent element-wise (exponent a tensor), finite gradient where base == 0 (as _power)."""
    positive = base > 0
    safe_base = torch.where(positive, base, torch.ones_like(base))
    return torch.where(positive, safe_base**exponent, (exponent == 0).to(base.dtype))


def _apply_weight(loss, weight, input):
    """weight (a constant): one per row of input.shape[:-1] (mmdet's per-anchor weight), or broadcastable."""
    if weight is None:
        return loss
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    weight = weight.to(device=loss.device, dtype=loss.dtype)
    if input.dim() >= 2 and weight.shape == input.shape[:-1] and loss.shape == input.shape:
        weight = weight.unsqueeze(-1)
    return loss * weight


def _dense_target(input, target, ignore_index, score=None):
    """(dense target of input's shape, valid-element mask) from a dense or class-index target; `score` gives the
    target class's value per row for class-index targets (1 when None)."""
    if target.is_floating_point():
        if target.shape != input.shape:
            raise ValueError(
                f"target (dense) must have the shape of input {tuple(input.shape)}, "
                f"got {tuple(target.shape)}"
            )
        if score is not None:
            raise ValueError("score is only for class-index targets")
        return target.to(input.dtype), torch.ones_like(input, dtype=torch.bool)
    if target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target must be a floating or integer tensor, got dtype {target.dtype}")
    if input.dim() == 0 or target.shape != input.shape[:-1]:
        raise ValueError(
            f"target (class index) must have shape input.shape[:-1] = {tuple(input.shape[:-1])}, "
            f"got {tuple(target.shape)}"
        )
    num_classes = input.shape[-1]
    target = target.long()
    ignored_rows = target == ignore_index
    in_range = (target >= 0) & (target <= num_classes)
    if bool((~(ignored_rows | in_range)).any()):
        raise ValueError(
            f"target class indices must be in [0, {num_classes}] or equal ignore_index "
            f"({ignore_index}), got values in [{int(target.min())}, {int(target.max())}]"
        )
    # class C (background) one-hot encodes to all zeros, an ignored row to zeros as well
    positive_class = torch.where(ignored_rows | (target == num_classes), num_classes, target)
    dense = F.one_hot(positive_class, num_classes + 1)[..., :num_classes].to(input.dtype)
    if score is not None:
        dense = dense * score.to(input.dtype).unsqueeze(-1)
    return dense, (~ignored_rows).unsqueeze(-1).expand(input.shape)


def _finish_elementwise(loss, valid, weight, input, reduction, normalizer):
    loss = torch.where(valid, _apply_weight(loss, weight, input), torch.zeros_like(loss))
    return _reduce(loss, reduction, valid.sum(), normalizer)


def _reduce(loss, reduction, count, normalizer):
    """Reduce per-element (or per-row) losses; a "mean" over nothing is 0 with zero gradient."""
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    if normalizer is not None:
        if isinstance(normalizer, torch.Tensor):
            if normalizer.dim() != 0:
                raise ValueError(
                    f"normalizer must be a float or a 0-dim tensor, got shape {tuple(normalizer.shape)}"
                )
            normalizer = normalizer.to(device=total.device, dtype=total.dtype)
        return (total / normalizer).to(loss.dtype)
    # every ignored entry contributes an exact 0 to total, so clamping the count keeps 0 / 0 -> 0
    return total / torch.clamp(count, min=1).to(total.dtype)


def _binary_focal_terms(prob, one_minus_prob, log_prob, log_one_minus_prob, target, alpha, gamma, poly_epsilon=0.0):
    """a_t * [(1 - p_t) ** gamma * CE + poly_epsilon * (1 - p_t) ** (gamma + 1)], element-wise, with
    CE = -[t * log p + (1 - t) * log(1 - p)]. alpha: None, a number, or per-class values (last dim)."""
    one_minus_pt = prob * (1 - target) + one_minus_prob * target
    cross_entropy = -(target * log_prob + (1 - target) * log_one_minus_prob)
    loss = _power(one_minus_pt, gamma) * cross_entropy
    if poly_epsilon:
        loss = loss + poly_epsilon * _power(one_minus_pt, gamma + 1)
    if alpha is not None:
        alpha_t = alpha * target + (1 - alpha) * (1 - target)
        loss = alpha_t * loss
    return loss


def sigmoid_focal_loss(
    input,
    target,
    alpha=0.25,
    gamma=2.0,
    reduction="none",
    *,
    ignore_index=-100,
    label_smoothing=0.0,
    normalizer=None,
    weight=None,
    poly_epsilon=0.0,
):
    """Focal loss on logits, element-wise binary (torchvision's argument order and defaults).

    ``target`` is either a floating tensor of ``input``'s shape (dense, soft targets allowed)
    or an integer tensor of shape ``input.shape[:-1]`` (class index: ``0 <= t < C`` positive
    class, ``t == C`` background, ``t == ignore_index`` ignores the whole row). ``alpha`` may also hold
    C per-class values; ``weight`` multiplies each element's loss; ``poly_epsilon`` adds Poly-1's term.
    """
    _check_floating("input", input)
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    _check_reduction(reduction)
    gamma = _check_gamma(gamma)
    label_smoothing = _check_label_smoothing(label_smoothing)
    if isinstance(alpha, torch.Tensor) or isinstance(alpha, (list, tuple)):
        alpha = torch.as_tensor(alpha).to(device=input.device, dtype=input.dtype).reshape(-1)
    else:
        alpha = _binary_alpha(alpha)
    dense_target, valid = _dense_target(input, target, ignore_index)

    if label_smoothing > 0:
        dense_target = dense_target * (1 - label_smoothing) + 0.5 * label_smoothing

    loss = _binary_focal_terms(
        _sigmoid(input),
        _sigmoid(-input),
        F.logsigmoid(input),
        F.logsigmoid(-input),
        dense_target,
        alpha,
        gamma,
        float(poly_epsilon),
    )
    return _finish_elementwise(loss, valid, weight, input, reduction, normalizer)


def _softmax_alpha(alpha, num_classes, input):
    """None, a float for every class, or anything holding C per-class weights -> tensor of shape (C,)."""
    if alpha is None:
        return None
    if isinstance(alpha, numbers.Number):
        return torch.full((num_classes,), float(alpha), dtype=input.dtype, device=input.device)
    alpha = torch.as_tensor(alpha)
    if alpha.numel() != num_classes:
        raise ValueError(
            f"alpha must hold one weight per class ({num_classes}), got {alpha.numel()} "
            f"(shape {tuple(alpha.shape)})"
        )
    return alpha.reshape(num_classes).to(dtype=input.dtype, device=input.device)


class _LogSoftmax(torch.autograd.Function):
    """log_softmax over dim 1 as (x - max) - log1p(excess), excess = sum exp(x - max) - 1 formed without the 1:
    F.log_softmax takes the log of a sum near 1 for confident rows, which loses the digits of their small losses
    (1e-10 relative in float64 at a margin of 14). Backward: grad_j (1 - p_j) - p_j sum_{c != j} grad_c with
    1 - p_j = -expm1(log p_j), where autograd's grad_j - p_j sum_c grad_c cancels for p_j near 1."""

    @staticmethod
    def forward(ctx, input):
        shifted = input - input.amax(dim=1, keepdim=True)
        at_max = shifted == 0
        terms = torch.where(at_max, torch.zeros_like(shifted), torch.exp(shifted))
        excess = terms.sum(dim=1, keepdim=True) + (at_max.sum(dim=1, keepdim=True) - 1).to(input.dtype)
        log_prob = shifted - torch.log1p(excess)
        ctx.save_for_backward(log_prob)
        return log_prob

    @staticmethod
    def backward(ctx, grad):
        (log_prob,) = ctx.saved_tensors
        others = grad.sum(dim=1, keepdim=True) - grad
        return grad * -torch.expm1(log_prob) - torch.exp(log_prob) * others


def _log_softmax(input):
    return _LogSoftmax.apply(input)


def softmax_focal_loss(
    input,
    target,
    alpha=None,
    gamma=2.0,
    reduction="mean",
    *,
    ignore_index=-100,
    label_smoothing=0.0,
    normalizer=None,
    weight=None,
    poly_epsilon=0.0,
):
    """Multi-class focal loss shaped like ``F.cross_entropy``.

    ``input`` is ``(N, C)``, ``(N, C, d1, ..., dk)`` or ``(C,)``; ``target`` holds class
    indices of shape ``(N)``, ``(N, d1, ..., dk)`` or ``()``. With the smoothed target
    distribution q = (1 - s) * onehot + s / C and p = softmax(input) over dim 1:
    ``loss_row = -sum_c q_c * alpha_c * (1 - p_c) ** gamma * log p_c``; Poly-1 adds
    ``poly_epsilon * sum_c q_c * alpha_c * (1 - p_c) ** (gamma + 1)``; ``weight`` (target's shape, or
    broadcastable to it) multiplies each row's loss.
    """
    _check_floating("input", input)
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target must be an integer tensor of class indices, got dtype {target.dtype}")
    _check_reduction(reduction)
    gamma = _check_gamma(gamma)
    label_smoothing = _check_label_smoothing(label_smoothing)

    unbatched = input.dim() == 1
    if unbatched:
        if target.dim() != 0:
            raise ValueError(f"target must be 0-dim for an unbatched (C,) input, got shape {tuple(target.shape)}")
        input, target = input.unsqueeze(0), target.unsqueeze(0)
    if input.dim() < 2:
        raise ValueError(f"input must be (C,), (N, C) or (N, C, d1, ..., dk), got shape {tuple(input.shape)}")
    expected_target_shape = input.shape[:1] + input.shape[2:]
    if target.shape != expected_target_shape:
        raise ValueError(
            f"target must have shape {tuple(expected_target_shape)} for input of shape "
            f"{tuple(input.shape)}, got {tuple(target.shape)}"
        )
    num_classes = input.shape[1]
    alpha = _softmax_alpha(alpha, num_classes, input)

    target = target.long()
    ignored = target == ignore_index
    in_range = (target >= 0) & (target < num_classes)
    if bool((~(ignored | in_range)).any()):
        raise ValueError(
            f"target class indices must be in [0, {num_classes - 1}] or equal ignore_index "
            f"({ignore_index}), got values in [{int(target.min())}, {int(target.max())}]"
        )
    safe_target = torch.where(ignored, 0, target)

    log_prob = _log_softmax(input)
    one_minus_prob = -torch.expm1(log_prob)
    # per class: -alpha_c * (1 - p_c) ** gamma * log p_c, then weighted by q_c over dim 1
    class_loss = -_power(one_minus_prob, gamma) * log_prob
    if poly_epsilon:
        class_loss = class_loss + float(poly_epsilon) * _power(one_minus_prob, gamma + 1)
    if alpha is not None:
        class_shape = (1, num_classes) + (1,) * (input.dim() - 2)
        class_loss = class_loss * alpha.reshape(class_shape)
    target_loss = class_loss.gather(1, safe_target.unsqueeze(1)).squeeze(1)
    loss = (1 - label_smoothing) * target_loss
    if label_smoothing > 0:
        loss = loss + (label_smoothing / num_classes) * class_loss.sum(dim=1)
    if unbatched:
        loss, ignored = loss.squeeze(0), ignored.squeeze(0)
    if weight is not None:
        loss = loss * weight.to(device=loss.device, dtype=loss.dtype)
    loss = torch.where(ignored, torch.zeros_like(loss), loss)
    return _reduce(loss, reduction, (~ignored).sum(), normalizer)


def binary_focal_loss(prob, target, alpha=0.25, gamma=2.0, reduction="mean", *, weight=None):
    """Binary focal loss on probabilities; logs clamped at -100 as ``torch.nn.BCELoss`` does."""
    _check_floating("prob", prob)
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if not target.is_floating_point():
        raise TypeError(f"target must be a floating point tensor, got dtype {target.dtype}")
    if target.shape != prob.shape:
        raise ValueError(f"target must have the shape of prob {tuple(prob.shape)}, got {tuple(target.shape)}")
    _check_reduction(reduction)
    gamma = _check_gamma(gamma)
    alpha = _binary_alpha(alpha)
    target = target.to(prob.dtype)

    def clamped_log(x, log_fn, shift):
        # log(0) = -inf has an undefined gradient; clamp first so the gradient there is 0
        positive = x + shift > 0
        safe_x = torch.where(positive, x, torch.ones_like(x) - shift)
        return torch.where(positive, log_fn(safe_x).clamp(min=-100), torch.full_like(x, -100.0))

    log_p = clamped_log(prob, torch.log, 0.0)
    log_1mp = clamped_log(-prob, torch.log1p, 1.0)  # log1p(-p): exact for tiny p, where 1 - p rounds
    loss = _apply_weight(_binary_focal_terms(prob, 1 - prob, log_p, log_1mp, target, alpha, gamma), weight, prob)
    return _reduce(loss, reduction, torch.tensor(loss.numel(), device=loss.device), None)


def _sigmoid(x):
    """sigmoid(x) as exp(logsigmoid(x)): the same value, and a gradient without torch.sigmoid's backward y (1 - y),
    which cancels for y near 1 (1e-3 relative at |x| = 30 in float64)."""
    return torch.exp(F.logsigmoid(x))


def _bce_with_logits(input, target):
    """t * softplus(-x) + (1 - t) * softplus(x): no cancellation for soft t at any |x|. softplus(x) is taken as
    -logsigmoid(-x): F.softplus returns x itself above its threshold (20), dropping log1p(e^-x)."""
    return -(target * F.logsigmoid(input) + (1 - target) * F.logsigmoid(-input))


def _target_minus_sigmoid(input, target):
    """t - sigmoid(x) without the rounding of sigmoid(x) near 1: (t - 1) + sigmoid(-x) for x >= 0."""
    return torch.where(input >= 0, (target - 1) + _sigmoid(-input), target - _sigmoid(input))


def varifocal_loss(input, target, alpha=0.75, gamma=2.0, reduction="mean", *, iou_weighted=True, score=None,
                   weight=None, normalizer=None, ignore_index=-100):
    """Varifocal loss (VarifocalNet; mmdet's formula) on logits with IoU-aware targets q:
    ``w * BCE(x, q)``, w = q (1 if not iou_weighted) where q > 0, else alpha * |p - q| ** gamma; the
    gradient flows through w. ``target``: dense q, or class indices with ``score`` the target class's q."""
    _check_floating("input", input)
    _check_reduction(reduction)
    gamma = _check_gamma(gamma)
    q, valid = _dense_target(input, target, ignore_index, score)
    p = _sigmoid(input)
    positive_weight = q if iou_weighted else torch.ones_like(q)
    focal_weight = torch.where(q > 0, positive_weight, float(alpha) * _power((p - q).abs(), gamma))
    return _finish_elementwise(_bce_with_logits(input, q) * focal_weight, valid, weight, input, reduction, normalizer)


def quality_focal_loss(input, target, beta=2.0, reduction="mean", *, score=None, weight=None, normalizer=None,
                       ignore_index=-100):
    """Quality focal loss (GFL; mmdet's formula): ``BCE(x, y) * |y - p| ** beta``, gradient through the factor."""
    _check_floating("input", input)
    _check_reduction(reduction)
    beta = _check_gamma(beta)
    y, valid = _dense_target(input, target, ignore_index, score)
    factor = _power(_target_minus_sigmoid(input, y).abs(), beta)
    return _finish_elementwise(_bce_with_logits(input, y) * factor, valid, weight, input, reduction, normalizer)


def asymmetric_loss(input, target, gamma_pos=0.0, gamma_neg=4.0, clip=0.05, reduction="mean", *, eps=1e-8,
                    detach_modulation=True, weight=None, normalizer=None, ignore_index=-100):
    """Asymmetric loss (ASL, Ridnik et al. 2021; Alibaba-MIIL's formula) on logits:
    p_neg = min(1 - p + clip, 1), pt = p t + p_neg (1 - t), w = (1 - pt) ** (gamma_pos t + gamma_neg (1 - t)),
    loss = -w [t log max(p, eps) + (1 - t) log max(p_neg, eps)]; detach_modulation treats w as a constant."""
    _check_floating("input", input)
    _check_reduction(reduction)
    t, valid = _dense_target(input, target, ignore_index)
    p, one_minus_p = _sigmoid(input), _sigmoid(-input)
    # log p and log(1 - p) from the logits (the log of a rounded sigmoid loses every digit at large |x|);
    # log max(v, eps) = max(log v, log eps); with a clip, log p_neg = log1p(min(clip - p, 0))
    log_eps = torch.tensor(math.log(eps), dtype=input.dtype, device=input.device)
    log_pos = torch.maximum(F.logsigmoid(input), log_eps)
    if clip > 0:
        log_neg = torch.maximum(torch.log1p((clip - p).clamp(max=0)), log_eps)
    else:
        log_neg = torch.maximum(F.logsigmoid(-input), log_eps)
    log_terms = t * log_pos + (1 - t) * log_neg
    # 1 - pt without cancellation: 1 - p_neg = max(p - clip, 0)
    one_minus_pt = t * one_minus_p + (1 - t) * (p - clip).clamp(min=0)
    modulation = _power_tensor(one_minus_pt, gamma_pos * t + gamma_neg * (1 - t))
    if detach_modulation:
        modulation = modulation.detach()
    return _finish_elementwise(-modulation * log_terms, valid, weight, input, reduction, normalizer)
