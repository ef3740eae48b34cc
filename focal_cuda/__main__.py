"""`python -m focal_cuda`: what this install is (version, build, GPUs) and whether its kernels run here."""
import platform
import sys

import torch


def _build_description(ops_module):
    """CPU only, or CUDA with the architectures the extension was compiled for (when the build recorded them)."""
    if not ops_module.has_cuda_kernels():
        return "CPU only (no CUDA kernels in this build)"
    try:
        from . import _build_info
    except ImportError:
        return "CPU + CUDA (compiled architectures not recorded by this build)"
    archs = getattr(_build_info, "CUDA_ARCH_LIST", None) or "not recorded"
    cuda_version = getattr(_build_info, "CUDA_VERSION", None)
    return f"CPU + CUDA{' ' + cuda_version if cuda_version else ''}, architectures {archs}"


def _parallel_description():
    """torch's parallel backend and threads, and how many of them the extension's at::parallel_for used."""
    backend = next((line.split(":", 1)[1].strip() for line in torch.__config__.parallel_info().splitlines()
                    if line.startswith("ATen parallel backend")), "unknown")
    threads = torch.get_num_threads()
    used = torch.ops.focal_cuda.parallel_threads_used(threads)
    verdict = "" if used == threads else " (the extension runs serially: rebuild it with OpenMP)"
    return f"{backend} backend, {threads} threads, kernels ran on {used}{verdict}"


def _smoke_test(device):
    """One tiny forward+backward on `device` against the pure-PyTorch reference; returns a one-line verdict."""
    from . import reference, sigmoid_focal_loss

    logits = torch.linspace(-4.0, 4.0, 24, device=device).reshape(4, 6).requires_grad_()
    target = torch.tensor([0, 5, 6, 2], device=device)  # 6 == C is background
    try:
        loss = sigmoid_focal_loss(logits, target, reduction="mean")
        (grad,) = torch.autograd.grad(loss, logits)
        expected = reference.sigmoid_focal_loss(logits.detach(), target, reduction="mean")
        matches = torch.allclose(loss.detach(), expected, rtol=1e-5, atol=1e-6)
    except RuntimeError as error:  # e.g. "no kernel image is available for execution on the device"
        return f"FAILED ({str(error).splitlines()[0]})"
    if not matches or not bool(torch.isfinite(grad).all()):
        return f"WRONG RESULT (loss {loss.item():.6f}, reference {expected.item():.6f})"
    return "ok"


def main():
    import focal_cuda
    from focal_cuda import _ops

    print(f"focal_cuda {focal_cuda.__version__}")
    print(f"  location:  {focal_cuda.__file__.rsplit('/', 1)[0]}")
    print(f"  extension: {_ops.LIBRARY_PATH}")
    print(f"  build:     {_build_description(_ops)}")
    print(f"  torch:     {torch.__version__} (CUDA {torch.version.cuda or 'none'}), "
          f"Python {platform.python_version()}, {platform.machine()}")
    print(f"  CPU parallel: {_parallel_description()}")
    print(f"  CPU kernels: {_smoke_test('cpu')}")

    if not torch.cuda.is_available():
        print("  GPU: none visible")
        return 0
    for index in range(torch.cuda.device_count()):
        major, minor = torch.cuda.get_device_capability(index)
        print(f"  GPU {index}: {torch.cuda.get_device_name(index)} (sm_{major}{minor})")
    if _ops.has_cuda_kernels():
        print(f"  CUDA kernels on GPU 0: {_smoke_test('cuda:0')}")
    else:
        print("  CUDA kernels: not built (CUDA tensors will raise); rebuild with a CUDA toolkit present")
    return 0


if __name__ == "__main__":
    sys.exit(main())
