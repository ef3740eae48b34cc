"""The focal-loss implementations people copy into their projects today, written out as they are
commonly used (same math, same sequence of tensor ops), so that the benchmark measures what
users actually run before switching to focal_cuda.

- ``FocalLoss``: the classic multi-class class (softmax -> one-hot mask -> sum -> log -> pow),
  constructed as ``FocalLoss(class_num, alpha=None, gamma=2, size_average=True)``.
- ``sigmoid_focal_loss``: torchvision.ops.sigmoid_focal_loss's formula (BCE-with-logits times the
  modulating factor, then the alpha weight).
- ``BCEFocalLoss``: the binary class on probabilities (output of a sigmoid).
- ``softmax_focal_loss_plain``: log_softmax + gather, the best plain formulation (what the benchmark compiles).
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
