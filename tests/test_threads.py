"""The CPU kernels run on every thread torch is given, and their results do not depend on how many."""

import pytest
import torch

import focal_cuda


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("blocks", [1, 2, 64])
def test_parallel_for_uses_the_threads_torch_is_given(restore_threads, threads, blocks):
    """at::parallel_for is inlined into the extension: without OpenMP in its build it runs on one thread."""
    torch.set_num_threads(threads)
    used = torch.ops.focal_cuda.parallel_threads_used(blocks)
    assert used == min(torch.get_num_threads(), blocks), (
        f"parallel_for ran {blocks} blocks on {used} thread(s) with torch.get_num_threads() == "
        f"{torch.get_num_threads()}; was the extension built with OpenMP? ({torch.__config__.parallel_info()})"
    )


def _cases():
    """(name, function, input, target, kwargs): each spans many reduction blocks, with ignored rows."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3000, 83, generator=generator) * 3
    dense = torch.rand(3000, 83, generator=generator)
    rows = torch.randint(0, 84, (3000,), generator=generator)  # 83 = background
    rows[::7] = -100
    classes = torch.randint(0, 83, (3000,), generator=generator)
    classes[::5] = -100
    spatial = torch.randn(3, 19, 37, 41, generator=generator) * 3
    spatial_target = torch.randint(0, 19, (3, 37, 41), generator=generator)
    spatial_target[:, ::4] = -100
    prob = torch.rand(3000, 83, generator=generator).clamp(1e-3, 1 - 1e-3)
    return [
        ("sigmoid dense", focal_cuda.sigmoid_focal_loss, logits, dense, {}),
        ("sigmoid index", focal_cuda.sigmoid_focal_loss, logits, rows, {}),
        ("softmax", focal_cuda.softmax_focal_loss, logits, classes, {}),
        ("softmax smoothed", focal_cuda.softmax_focal_loss, logits, classes, {"label_smoothing": 0.1}),
        ("softmax spatial", focal_cuda.softmax_focal_loss, spatial, spatial_target, {}),
        ("binary", focal_cuda.binary_focal_loss, prob, dense, {}),
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_results_are_bitwise_independent_of_thread_count(restore_threads, dtype, reduction):
    for name, function, input, target, kwargs in _cases():
        x = input.to(dtype)
        t = target.to(dtype) if target.is_floating_point() else target
        results = {}
        for threads in (1, 2, 4):
            torch.set_num_threads(threads)
            leaf = x.clone().requires_grad_(True)
            loss = function(leaf, t, reduction=reduction, **kwargs)
            (grad,) = torch.autograd.grad(loss, leaf, torch.ones_like(loss))
            results[threads] = (loss.detach(), grad)
        for threads in (2, 4):
            for what, index in (("loss", 0), ("gradient", 1)):
                assert torch.equal(results[threads][index], results[1][index]), (
                    f"{name} {dtype} {reduction}: {what} with {threads} threads differs from 1 thread")
