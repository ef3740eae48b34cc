"""nn.Module wrappers: store the arguments, forward calls focal_cuda.functional."""
import numbers
import warnings
from typing import Optional

import torch
from torch import nn

from . import functional as F
from ._arguments import _num_classes


def _size_average_reduction(size_average, reduction):
    if size_average is not None and not isinstance(size_average, bool):
        raise TypeError(f"size_average: expected a bool (True: mean, False: sum) or None, got "
                        f"{type(size_average).__name__} {size_average!r}; use reduction= for 'none'/'mean'/'sum'")
    if reduction is not None:
        return reduction  # an explicit reduction wins over the classic flag
    return "sum" if size_average is False else "mean"  # None: the classic default, as in torch.nn losses


def _alpha_weights(alpha, class_num):
    """FocalLoss's alpha as a 1-D float tensor (the buffer), from a number or per-class weights."""
    if isinstance(alpha, numbers.Real) and not isinstance(alpha, bool):
        return torch.full((class_num,), float(alpha))
    if isinstance(alpha, torch.Tensor):
        if alpha.is_complex() or alpha.dtype == torch.bool:
            raise TypeError(f"alpha: expected real-valued per-class weights, got a {alpha.dtype} tensor")
        return alpha.detach().to(torch.get_default_dtype()).clone().reshape(-1)
    try:
        return torch.as_tensor(alpha, dtype=torch.get_default_dtype()).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"alpha: expected None, a number, or per-class weights (a sequence of numbers or a "
                        f"tensor), got {type(alpha).__name__} ({exc})") from None


class FocalLoss(nn.Module):
    """Softmax focal loss with the classic constructor: FocalLoss(class_num, alpha=None, gamma=2, size_average=True).

    alpha: None, a number, or class_num per-class weights in any shape (e.g. torch.ones(C, 1)); stored as the
    buffer ``alpha`` (moves with .to(), saved in state_dict) when it is per-class or class_num is known.
    """

    def __init__(self, class_num: Optional[int] = None, alpha=None, gamma: float = 2.0, size_average: bool = True, *,
                 reduction: Optional[str] = None, ignore_index: int = -100, label_smoothing: float = 0.0):
        super().__init__()
        if class_num is not None and (isinstance(class_num, bool) or not isinstance(class_num, numbers.Integral)
                                      or class_num < 1):
            raise ValueError(f"class_num: expected a positive int or None, got {class_num!r}")
        self.class_num = class_num
        self.gamma = gamma
        self.reduction = _size_average_reduction(size_average, reduction)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self._alpha_scalar = None
        if alpha is None:
            self.register_buffer("alpha", None)
        elif isinstance(alpha, numbers.Real) and not isinstance(alpha, bool) and class_num is None:
            self.register_buffer("alpha", None)
            self._alpha_scalar = float(alpha)  # one weight for every class; the class count comes with the input
        else:
            weights = _alpha_weights(alpha, class_num)
            if class_num is not None and weights.numel() != class_num:
                raise ValueError(f"alpha: expected {class_num} per-class weights (class_num), got {weights.numel()}")
            self.register_buffer("alpha", weights)

    def forward(self, input: torch.Tensor, target: torch.Tensor, normalizer=None) -> torch.Tensor:
        if self.class_num is not None and isinstance(input, torch.Tensor) and input.dim() >= 1:
            if _num_classes(input) != self.class_num:
                raise ValueError(f"input: expected {self.class_num} classes (FocalLoss class_num) in dim "
                                 f"{1 if input.dim() >= 2 else 0}, got input of shape {tuple(input.shape)}")
        alpha = self.alpha if self.alpha is not None else self._alpha_scalar
        return F.softmax_focal_loss(input, target, alpha, self.gamma, self.reduction, ignore_index=self.ignore_index,
                                    label_smoothing=self.label_smoothing, normalizer=normalizer)

    def extra_repr(self) -> str:
        return (f"class_num={self.class_num}, gamma={self.gamma}, reduction={self.reduction!r}, "
                f"ignore_index={self.ignore_index}, label_smoothing={self.label_smoothing}")


class SigmoidFocalLoss(nn.Module):
    """Sigmoid (binary / multi-label) focal loss on logits; see focal_cuda.sigmoid_focal_loss."""

    def __init__(self, alpha: Optional[float] = 0.25, gamma: float = 2.0, reduction: str = "mean", *,
                 ignore_index: int = -100, label_smoothing: float = 0.0):
        super().__init__()
        self.alpha = alpha
        self.gamma = gamma
        self.reduction = reduction
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, input: torch.Tensor, target: torch.Tensor, normalizer=None) -> torch.Tensor:
        return F.sigmoid_focal_loss(input, target, self.alpha, self.gamma, self.reduction,
                                    ignore_index=self.ignore_index, label_smoothing=self.label_smoothing,
                                    normalizer=normalizer)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}, reduction={self.reduction!r}"


class BCEFocalLoss(nn.Module):
    """Binary focal loss on probabilities, with the classic constructor order BCEFocalLoss(gamma=2, alpha=0.25)."""

    def __init__(self, gamma: float = 2, alpha: Optional[float] = 0.25, reduction: str = "mean"):
        super().__init__()
        if isinstance(reduction, str) and reduction == "elementwise_mean":
            # The classic class's default, PyTorch's spelling of "mean" before 1.0; warned about as
            # torch.nn.functional does for it (torch.nn._reduction.get_enum): a UserWarning saying it is deprecated.
            warnings.warn("reduction='elementwise_mean' is deprecated. Please use reduction='mean' instead.",
                          stacklevel=2)
            reduction = "mean"
        self.gamma = gamma
        self.alpha = alpha
        self.reduction = reduction

    def forward(self, prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_focal_loss(prob, target, self.alpha, self.gamma, self.reduction)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, alpha={self.alpha}, reduction={self.reduction!r}"


class VarifocalLoss(nn.Module):
    """Varifocal loss (VarifocalNet); see focal_cuda.varifocal_loss."""

    def __init__(self, alpha: float = 0.75, gamma: float = 2.0, reduction: str = "mean", *, iou_weighted: bool = True,
                 ignore_index: int = -100):
        super().__init__()
        self.alpha = alpha
        self.gamma = gamma
        self.reduction = reduction
        self.iou_weighted = iou_weighted
        self.ignore_index = ignore_index

    def forward(self, input: torch.Tensor, target: torch.Tensor, weight=None, normalizer=None,
                score=None) -> torch.Tensor:
        return F.varifocal_loss(input, target, self.alpha, self.gamma, self.reduction, iou_weighted=self.iou_weighted,
                                score=score, weight=weight, normalizer=normalizer, ignore_index=self.ignore_index)

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, gamma={self.gamma}, reduction={self.reduction!r}, "
                f"iou_weighted={self.iou_weighted}")


class QualityFocalLoss(nn.Module):
    """Quality focal loss (GFL); see focal_cuda.quality_focal_loss."""

    def __init__(self, beta: float = 2.0, reduction: str = "mean", *, ignore_index: int = -100):
        super().__init__()
        self.beta = beta
        self.reduction = reduction
        self.ignore_index = ignore_index

    def forward(self, input: torch.Tensor, target: torch.Tensor, weight=None, normalizer=None,
                score=None) -> torch.Tensor:
        return F.quality_focal_loss(input, target, self.beta, self.reduction, score=score, weight=weight,
                                    normalizer=normalizer, ignore_index=self.ignore_index)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, reduction={self.reduction!r}"


class AsymmetricLoss(nn.Module):
    """Asymmetric loss (ASL) for multi-label classification; see focal_cuda.asymmetric_loss."""

    def __init__(self, gamma_pos: float = 0.0, gamma_neg: float = 4.0, clip: float = 0.05, reduction: str = "mean", *,
                 eps: float = 1e-8, detach_modulation: bool = True, ignore_index: int = -100):
        super().__init__()
        self.gamma_pos = gamma_pos
        self.gamma_neg = gamma_neg
        self.clip = clip
        self.reduction = reduction
        self.eps = eps
        self.detach_modulation = detach_modulation
        self.ignore_index = ignore_index

    def forward(self, input: torch.Tensor, target: torch.Tensor, weight=None, normalizer=None,
                score=None) -> torch.Tensor:
        if score is not None:
            raise ValueError("score: AsymmetricLoss takes hard or dense soft targets, not a per-row score")
        return F.asymmetric_loss(input, target, self.gamma_pos, self.gamma_neg, self.clip, self.reduction,
                                 eps=self.eps, detach_modulation=self.detach_modulation, weight=weight,
                                 normalizer=normalizer, ignore_index=self.ignore_index)

    def extra_repr(self) -> str:
        return (f"gamma_pos={self.gamma_pos}, gamma_neg={self.gamma_neg}, clip={self.clip}, "
                f"reduction={self.reduction!r}, detach_modulation={self.detach_modulation}")


from .linear import linear_softmax_focal_loss  # noqa: E402  (the fused linear + loss; imports functional only)


class LinearSoftmaxFocalLoss(nn.Module):
    """Fused linear + softmax focal loss for large class counts (LM heads, extreme classification); see
    focal_cuda.linear_softmax_focal_loss. forward(input, weight, target, bias=None, normalizer=None) never holds
    the (N, C) logits. alpha: None, a number, or C per-class weights (then the buffer ``alpha``)."""

    def __init__(self, alpha=None, gamma: float = 2.0, reduction: str = "mean", *, ignore_index: int = -100,
                 label_smoothing: float = 0.0, chunk_size: Optional[int] = None):
        super().__init__()
        self.gamma = gamma
        self.reduction = reduction
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.chunk_size = chunk_size
        self._alpha_scalar = None
        if alpha is None:
            self.register_buffer("alpha", None)
        elif isinstance(alpha, numbers.Real) and not isinstance(alpha, bool):
            self.register_buffer("alpha", None)
            self._alpha_scalar = float(alpha)
        else:
            self.register_buffer("alpha", _alpha_weights(alpha, None))

    def forward(self, input: torch.Tensor, weight: torch.Tensor, target: torch.Tensor,
                bias: Optional[torch.Tensor] = None, normalizer=None) -> torch.Tensor:
        alpha = self.alpha if self.alpha is not None else self._alpha_scalar
        return linear_softmax_focal_loss(input, weight, target, bias, alpha, self.gamma, self.reduction,
                                         ignore_index=self.ignore_index, label_smoothing=self.label_smoothing,
                                         normalizer=normalizer, chunk_size=self.chunk_size)

    def extra_repr(self) -> str:
        return (f"gamma={self.gamma}, reduction={self.reduction!r}, ignore_index={self.ignore_index}, "
                f"label_smoothing={self.label_smoothing}, chunk_size={self.chunk_size}")
