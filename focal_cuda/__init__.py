"""focal_cuda: fused focal losses for PyTorch (CUDA and vectorised CPU kernels, autograd, torch.compile)."""
from ._version import __version__
from . import _ops  # noqa: F401  (loads the compiled ops; fails with build instructions when missing)
from .functional import binary_focal_loss, sigmoid_focal_loss, softmax_focal_loss
from .modules import BCEFocalLoss, FocalLoss, SigmoidFocalLoss
from . import reference  # noqa: F401  (focal_cuda.reference: the pure-PyTorch versions)

__all__ = [
    "sigmoid_focal_loss",
    "softmax_focal_loss",
    "binary_focal_loss",
    "FocalLoss",
    "SigmoidFocalLoss",
    "BCEFocalLoss",
    "__version__",
]
