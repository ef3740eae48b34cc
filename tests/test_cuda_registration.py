"""Every focal_cuda op has a CUDA kernel registered (checked without a GPU: the dispatcher knows it).

Skips only when the extension was built CPU-only (no CUDA device code in focal_cuda._C). A build that
has CUDA code but misses a registration fails. FOCAL_CUDA_REQUIRE_CUDA_BUILD=1 (CI on a machine with a
CUDA toolkit) turns the CPU-only skip into a failure.
"""
import os

import pytest
import torch

from focal_cuda import _ops

OPS = [
    "sigmoid_focal_fwd",
    "softmax_focal_fwd",
    "binary_focal_fwd",
    "focal_bwd",
    "focal_bwd_",
    "varifocal_fwd",
    "quality_focal_fwd",
    "asymmetric_fwd",
]


def _has_kernel(op, key):
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"focal_cuda::{op}", key)


def _built_with_cuda():
    """Whether focal_cuda._C carries CUDA device code (nvcc puts it in the .nv_fatbin ELF section)."""
    with open(_ops.LIBRARY_PATH, "rb") as library:
        return b".nv_fatbin" in library.read()


BUILT_WITH_CUDA = _built_with_cuda()
REQUIRE_CUDA_BUILD = os.environ.get("FOCAL_CUDA_REQUIRE_CUDA_BUILD", "").lower() in ("1", "true", "yes")


@pytest.mark.parametrize("op", OPS)
def test_cpu_kernel_registered(op):
    assert _has_kernel(op, "CPU"), f"focal_cuda::{op} has no CPU kernel"


def test_cuda_build_present_when_required():
    if not REQUIRE_CUDA_BUILD:
        pytest.skip("FOCAL_CUDA_REQUIRE_CUDA_BUILD is not set")
    assert BUILT_WITH_CUDA, f"{_ops.LIBRARY_PATH} was built without CUDA although FOCAL_CUDA_REQUIRE_CUDA_BUILD=1"


@pytest.mark.parametrize("op", OPS)
def test_cuda_kernel_registered(op):
    if not BUILT_WITH_CUDA:
        pytest.skip("focal_cuda._C was built CPU-only (no CUDA toolkit or FOCAL_CUDA_CPU_ONLY=1): no CUDA kernels")
    assert _has_kernel(op, "CUDA"), f"focal_cuda::{op} has no CUDA kernel although the extension was built with CUDA"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
@pytest.mark.parametrize("reduction", [0, 1, 2])
def test_cuda_forward_and_backward_run_on_device(reduction):
    """Each forward op returns its outputs on the input's GPU, and its backward runs there too."""
    ops = torch.ops.focal_cuda
    x = torch.randn(8, 5, device="cuda")
    calls = {
        "sigmoid": (ops.sigmoid_focal_fwd(x, torch.rand_like(x), 0.25, 2.0, reduction, -100, 0.0, None, True),
                    False),
        "softmax": (ops.softmax_focal_fwd(x, torch.randint(0, 5, (8,), device="cuda"), None, 2.0, reduction, -100,
                                          0.0, None, True), True),
        "binary": (ops.binary_focal_fwd(torch.rand_like(x), torch.rand_like(x), 0.25, 2.0, reduction, True),
                   False),
    }
    for name, ((loss, grad, grad_scale), class_dim_reduced) in calls.items():
        for what, tensor in (("loss", loss), ("grad", grad), ("grad_scale", grad_scale)):
            assert tensor.device == x.device, f"{name} {what}: on {tensor.device}, expected {x.device}"
        grad_input = ops.focal_bwd(grad, torch.ones_like(loss), grad_scale, reduction, class_dim_reduced)
        assert grad_input.shape == x.shape and grad_input.device == x.device, f"{name} backward"
        assert torch.isfinite(grad_input).all(), f"{name} backward: non-finite gradient"
