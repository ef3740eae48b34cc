"""The focal-loss implementations people copy into their projects today, written out as they are
commonly used (same math, same sequence of tensor ops), so that the benchmark measures what
users actually run before switching to focal_cuda.

- ``FocalLoss``: the classic multi-class class (softmax -> one-hot mask -> sum -> log -> pow),
  constructed as ``FocalLoss(class_num, alpha=None, gamma=2, size_average=True)``.
- ``sigmoid_focal_loss``: torchvision.ops.sigmoid_focal_loss's formula (BCE-with-logits times the
  modulating factor, then the alpha weight).
- ``BCEFocalLoss``: the binary class on probabilities (output of a sigmoid).
- ``softmax_focal_loss_plain``: log_softmax + gather, the best plain formulation (what the benchmark compiles).
- the focal family as its original repositories write it: ``mmdet_varifocal_loss`` / ``varifocal_index_score``,
  ``mmdet_quality_focal_loss_tensor_target`` (mmdet's GFL), ``AsymmetricLoss`` (Alibaba-MIIL/ASL).

The one copy of these formulas: the benchmarks import it, and so do the tests that check focal_cuda against
the code it replaces (tests/test_independent_facts.py, tests/test_focal_family.py, by file path).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class FocalLoss(nn.Module):
    """Classic softmax focal loss on (N, C) logits and (N,) class indices."""

    def __init__(self, class_num, alpha=None, gamma=2, size_average=True):
        super().__init__()
        if alpha is None:
            # the classic class weights every class 1, stored as a (C, 1) column
            self.alpha = torch.ones(class_num, 1)
        else:
            self.alpha = alpha if isinstance(alpha, torch.Tensor) else torch.tensor(alpha)
        self.gamma = gamma
        self.class_num = class_num
        self.size_average = size_average

    def forward(self, inputs, targets):
        N = inputs.size(0)
        C = inputs.size(1)
        P = F.softmax(inputs, dim=1)

        class_mask = inputs.new_zeros(N, C)
        ids = targets.view(-1, 1)
        class_mask.scatter_(1, ids, 1.0)

        if self.alpha.device != inputs.device:
            self.alpha = self.alpha.to(inputs.device)
        alpha = self.alpha[ids.view(-1)]

        probs = (P * class_mask).sum(1).view(-1, 1)
        log_p = probs.log()
        batch_loss = -alpha * torch.pow(1 - probs, self.gamma) * log_p

        if self.size_average:
            loss = batch_loss.mean()
        else:
            loss = batch_loss.sum()
        return loss


def sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
    """torchvision.ops.sigmoid_focal_loss's formula: dense float targets of the input's shape."""
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)

    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss

    if reduction == "none":
        pass
    elif reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    else:
        raise ValueError(
            f"reduction: expected 'none', 'mean' or 'sum', given {reduction!r}"
        )
    return loss


class BCEFocalLoss(nn.Module):
    """Binary focal loss on probabilities (already passed through a sigmoid)."""

    def __init__(self, gamma=2, alpha=0.25, reduction="elementwise_mean"):
        super().__init__()
        self.gamma = gamma
        self.alpha = alpha
        self.reduction = reduction

    def forward(self, pt, target):
        alpha = self.alpha
        loss = (
            -alpha * (1 - pt) ** self.gamma * target * torch.log(pt)
            - (1 - alpha) * pt ** self.gamma * (1 - target) * torch.log(1 - pt)
        )
        if self.reduction in ("elementwise_mean", "mean"):
            loss = torch.mean(loss)
        elif self.reduction == "sum":
            loss = torch.sum(loss)
        return loss


def softmax_focal_loss_plain(inputs, targets, gamma=2.0, reduction="mean"):
    """The shortest correct plain-PyTorch softmax focal loss: log_softmax, gather the target class, focal
    factor from exp(log p_t). (N, C) or (N, C, d1, ...) logits, as F.cross_entropy. What torch.compile is
    given in the benchmark (not the float64-minded reference)."""
    logp_t = F.log_softmax(inputs, dim=1).gather(1, targets.unsqueeze(1)).squeeze(1)
    loss = -((1 - logp_t.exp()) ** gamma) * logp_t
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def mmdet_varifocal_loss(pred, target, alpha=0.75, gamma=2.0, iou_weighted=True, reduction="mean"):
    """mmdet's varifocal_loss (VarifocalNet) on a dense IoU-aware target, as written there."""
    pred_sigmoid = pred.sigmoid()
    target = target.type_as(pred)
    if iou_weighted:
        focal_weight = target * (target > 0.0).float() + \
            alpha * (pred_sigmoid - target).abs().pow(gamma) * (target <= 0.0).float()
    else:
        focal_weight = (target > 0.0).float() + alpha * (pred_sigmoid - target).abs().pow(gamma) * (target <= 0.0).float()
    loss = F.binary_cross_entropy_with_logits(pred, target, reduction="none") * focal_weight
    return loss.mean() if reduction == "mean" else (loss.sum() if reduction == "sum" else loss)


def varifocal_index_score(pred, labels, score, alpha=0.75, gamma=2.0, reduction="mean"):
    """What mmdet users run for class-index labels (C = background) + IoU scores: a dense target first."""
    C = pred.shape[-1]
    target = F.one_hot(labels, C + 1)[..., :C].to(pred.dtype) * score.unsqueeze(-1).to(pred.dtype)
    return mmdet_varifocal_loss(pred, target, alpha, gamma, True, reduction)


def mmdet_quality_focal_loss_tensor_target(pred, target, beta=2.0, reduction="mean"):
    """mmdet/models/losses/gfocal_loss.py, quality_focal_loss_tensor_target (activated=False), as written there."""
    pred_sigmoid = pred.sigmoid()
    scale_factor = (pred_sigmoid - target).abs().pow(beta)
    loss = F.binary_cross_entropy_with_logits(pred, target, reduction="none") * scale_factor
    return loss.mean() if reduction == "mean" else (loss.sum() if reduction == "sum" else loss)


class AsymmetricLoss(nn.Module):
    """Alibaba-MIIL/ASL's AsymmetricLoss (multi-label, logits), as written there; reduction added ("sum", the
    original's, "mean" or "none")."""

    def __init__(self, gamma_neg=4, gamma_pos=1, clip=0.05, eps=1e-8, disable_torch_grad_focal_loss=True,
                 reduction="sum"):
        super().__init__()
        self.gamma_neg = gamma_neg
        self.gamma_pos = gamma_pos
        self.clip = clip
        self.disable_torch_grad_focal_loss = disable_torch_grad_focal_loss
        self.eps = eps
        self.reduction = reduction

    def forward(self, x, y):
        x_sigmoid = torch.sigmoid(x)
        xs_pos = x_sigmoid
        xs_neg = 1 - x_sigmoid
        if self.clip is not None and self.clip > 0:
            xs_neg = (xs_neg + self.clip).clamp(max=1)
        los_pos = y * torch.log(xs_pos.clamp(min=self.eps))
        los_neg = (1 - y) * torch.log(xs_neg.clamp(min=self.eps))
        loss = los_pos + los_neg
        if self.gamma_neg > 0 or self.gamma_pos > 0:
            if self.disable_torch_grad_focal_loss:
                torch.set_grad_enabled(False)
            pt0 = xs_pos * y
            pt1 = xs_neg * (1 - y)
            pt = pt0 + pt1
            one_sided_gamma = self.gamma_pos * y + self.gamma_neg * (1 - y)
            one_sided_w = torch.pow(1 - pt, one_sided_gamma)
            if self.disable_torch_grad_focal_loss:
                torch.set_grad_enabled(True)
            loss *= one_sided_w
        if self.reduction == "none":
            return -loss
        return -loss.mean() if self.reduction == "mean" else -loss.sum()
