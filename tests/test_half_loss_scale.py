"""fp16 gradients survive the loss scale (docs/design.md §2).

The gradient is computed in the forward and stored in fp16 before grad_output is known. Under a GradScaler the
final gradient is (stored gradient) x 2**15 (x 1/N for 'mean'): many easy examples' gradients lie below fp16's
range before that scale and well inside it after. Each final element whose float64 value is a normal fp16 must
be right to fp16 rounding (2 %), on the CPU kernels and the emulated CUDA kernels.
"""
import pytest
import torch

import focal_cuda
from focal_cuda import reference

LOSS_SCALE = 2.0**15
FP16_NORMAL = torch.finfo(torch.float16).tiny
FP16_MAX = torch.finfo(torch.float16).max


def easy_negatives(n, classes):
    """Logits in [-8, -5] with all-negative targets: gradients of 1e-8..1e-5, mostly below fp16's normal range."""
    return -5.0 - 3.0 * torch.rand(n, classes, dtype=torch.float64)


def cases():
    """(name, focal_cuda call, reference call, input) on float64 inputs."""
    x = easy_negatives(64, 80)
    zeros = torch.zeros_like(x)
    background = torch.full((64,), 80, dtype=torch.long)
    return {
        "sigmoid_dense": (focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, x, zeros, {}),
        "sigmoid_index": (focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, x, background, {}),
        "varifocal": (focal_cuda.varifocal_loss, reference.varifocal_loss, x, zeros, {}),
        "quality_focal": (focal_cuda.quality_focal_loss, reference.quality_focal_loss, x, zeros, {}),
        "asymmetric": (focal_cuda.asymmetric_loss, reference.asymmetric_loss, x, zeros, {"clip": 0.0, "gamma_neg": 1.0}),
        # a confident softmax row: the other classes' gradients are p_j (1 - p_t)**2 ... tiny
        "softmax": (focal_cuda.softmax_focal_loss, reference.softmax_focal_loss,
                    torch.cat([torch.full((64, 1), 4.0, dtype=torch.float64), x[:, :20] + 2.0], dim=1),
                    torch.zeros(64, dtype=torch.long), {"gamma": 1.0}),
        "softmax_spatial": (focal_cuda.softmax_focal_loss, reference.softmax_focal_loss,
                            torch.cat([torch.full((2, 1, 40), 4.0, dtype=torch.float64),
                                       x[:2, :40].reshape(2, 1, 40).expand(2, 9, 40) + 2.0], dim=1),
                            torch.zeros(2, 40, dtype=torch.long), {"gamma": 1.0}),
    }


CASES = list(cases())


def final_gradients(function, x, target, reduction, scale, **kwargs):
    leaf = x.detach().clone().requires_grad_(True)
    loss = function(leaf, target, reduction=reduction, **kwargs)
    (loss.sum() * scale if reduction == "none" else loss * scale).backward()
    return leaf.grad


@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
@pytest.mark.parametrize("case", CASES)
def test_scaled_fp16_gradient_is_right_where_representable(backend, reduction, case):
    function, reference_function, x, target, kwargs = cases()[case]
    if reduction == "mean":  # 2 rows: 1/N would otherwise put every final gradient below fp16's range
        x, target = x[:2], target[:2]
    grad = final_gradients(function, x.half(), target, reduction, LOSS_SCALE, **kwargs)
    truth = final_gradients(reference_function, x.half().double(), target, reduction, LOSS_SCALE, **kwargs)
    assert grad.dtype == torch.float16
    representable = (truth.abs() >= FP16_NORMAL) & (truth.abs() <= FP16_MAX)
    assert representable.sum() >= 3, "the case must exercise representable gradients"
    relative = ((grad.double() - truth).abs() / truth.abs())[representable]
    wrong = relative > 0.02
    assert not wrong.any(), (f"{int(wrong.sum())} of {int(representable.sum())} representable fp16 gradients are off "
                             f"by more than 2 % (worst {relative.max().item():.3g})")


def test_unscaled_fp16_mean_over_many_elements_is_not_flushed(backend):
    """'mean' over 2**20 elements: each gradient is about 0.02 / 2**20 = 2e-8, below fp16's range, until GradScaler's
    2**15 arrives; the stored gradient must still carry it (the CPU kernels once folded 1/N into fp16)."""
    x = torch.full((1024, 1024), -2.0, dtype=torch.float16)
    grad = final_gradients(focal_cuda.sigmoid_focal_loss, x, torch.zeros_like(x), "mean", LOSS_SCALE)
    truth = final_gradients(reference.sigmoid_focal_loss, x[:1, :1].double(), torch.zeros(1, 1, dtype=torch.float64),
                            "sum", LOSS_SCALE / x.numel())
    assert torch.allclose(grad.double(), truth.expand_as(grad), rtol=0.02, atol=0)


def test_fp16_gradient_without_loss_scale_is_unchanged(backend):
    """The prescale is invisible: an ordinary backward (grad_output 1) gives the fp16 gradient of the math."""
    x = torch.randn(33, 7, dtype=torch.float16)
    t = (torch.rand(33, 7) > 0.8).half()
    grad = final_gradients(focal_cuda.sigmoid_focal_loss, x, t, "sum", 1.0)
    truth = final_gradients(reference.sigmoid_focal_loss, x.double(), t.double(), "sum", 1.0)
    torch.testing.assert_close(grad.double(), truth, rtol=2e-3, atol=2e-7)
