"""focal_cuda: fused focal losses for PyTorch (CUDA and vectorised CPU kernels, autograd, torch.compile)."""
from ._version import __version__
from . import _ops  # noqa: F401  (loads the compiled ops; fails with build instructions when missing)
from .functional import (asymmetric_loss, binary_focal_loss, quality_focal_loss, sigmoid_focal_loss,
                         softmax_focal_loss, varifocal_loss)
from .linear import linear_softmax_focal_loss
from .modules import (AsymmetricLoss, BCEFocalLoss, FocalLoss, LinearSoftmaxFocalLoss, QualityFocalLoss,
                      SigmoidFocalLoss, VarifocalLoss)
from . import reference  # noqa: F401  (focal_cuda.reference: the pure-PyTorch versions)

__all__ = [
    "sigmoid_focal_loss",
    "softmax_focal_loss",
    "binary_focal_loss",
    "varifocal_loss",
    "quality_focal_loss",
    "asymmetric_loss",
    "linear_softmax_focal_loss",
    "FocalLoss",
    "SigmoidFocalLoss",
    "BCEFocalLoss",
    "VarifocalLoss",
    "QualityFocalLoss",
    "AsymmetricLoss",
    "LinearSoftmaxFocalLoss",
    "__version__",
]
