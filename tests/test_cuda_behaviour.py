"""CUDA-only behaviour: no host synchronisation, CUDA graph capture, device-side asserts, mixed devices."""

import pathlib
import subprocess
import sys

import pytest
import torch

import focal_cuda

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")

REPOSITORY_ROOT = pathlib.Path(__file__).resolve().parents[1]


def every_call(device):
    """(name, function of a leaf input, leaf input) for each loss, target form and reduction."""
    logits = torch.randn(6, 5, device=device)
    spatial = torch.randn(2, 5, 3, device=device)
    prob = torch.rand(6, 5, device=device)
    dense = torch.rand(6, 5, device=device)
    index = torch.tensor([0, 5, -100, 2, 4, 1], device=device)
    classes = torch.tensor([0, 4, -100, 2, 3, 1], device=device)
    spatial_classes = torch.tensor([[0, 1, 4], [-100, 2, 3]], device=device)
    alpha = torch.rand(5, device=device)
    normalizer = torch.tensor(3.0, device=device)
    calls = []
    for reduction in ["none", "mean", "sum"]:
        calls += [
            (f"sigmoid-dense-{reduction}", lambda x, r=reduction: focal_cuda.sigmoid_focal_loss(x, dense, 0.25, 2.0, r), logits),
            (f"sigmoid-index-{reduction}", lambda x, r=reduction: focal_cuda.sigmoid_focal_loss(x, index, 0.25, 0.5, r), logits),
            (f"softmax-{reduction}", lambda x, r=reduction: focal_cuda.softmax_focal_loss(x, classes, alpha, 2.0, r, label_smoothing=0.1), logits),
            (f"softmax-spatial-{reduction}", lambda x, r=reduction: focal_cuda.softmax_focal_loss(x, spatial_classes, None, 1.5, r), spatial),
            (f"binary-{reduction}", lambda x, r=reduction: focal_cuda.binary_focal_loss(x, dense, 0.25, 2.0, r), prob),
        ]
    calls += [
        ("sigmoid-normalizer", lambda x: focal_cuda.sigmoid_focal_loss(x, index, reduction="mean", normalizer=normalizer), logits),
        ("softmax-normalizer", lambda x: focal_cuda.softmax_focal_loss(x, classes, normalizer=normalizer), logits),
    ]
    return calls


def test_forward_and_backward_never_synchronise_with_the_host():
    calls = every_call("cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for name, function, input in calls:
            leaf = input.clone().requires_grad_(True)
            loss = function(leaf)
            loss.backward(torch.ones_like(loss))
            with torch.no_grad():
                function(input)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


@pytest.mark.parametrize("case", range(len(every_call("cpu"))))
def test_cuda_graph_capture_of_forward_and_backward_equals_eager(case):
    name, function, input = every_call("cuda")[case]
    static_input = input.clone().requires_grad_(True)

    def step():
        static_input.grad = None
        loss = function(static_input)
        loss.backward(torch.ones_like(loss))
        return loss

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm-up outside capture, as CUDA graphs require
            step()
    torch.cuda.current_stream().wait_stream(stream)

    graph = torch.cuda.CUDAGraph()
    static_input.grad = None
    with torch.cuda.graph(graph):
        static_loss = function(static_input)
        static_loss.backward(torch.ones_like(static_loss))

    new_values = torch.randn_like(input) if not name.startswith("binary") else torch.rand_like(input)
    with torch.no_grad():
        static_input.copy_(new_values)
    graph.replay()
    torch.cuda.synchronize()

    eager_input = new_values.clone().requires_grad_(True)
    eager_loss = function(eager_input)
    eager_loss.backward(torch.ones_like(eager_loss))
    assert torch.equal(static_loss, eager_loss), name
    assert torch.equal(static_input.grad, eager_input.grad), name


@pytest.mark.parametrize(
    "call",
    [
        "focal_cuda.sigmoid_focal_loss(torch.randn(4, 3, device='cuda'), torch.tensor([0, 9, 1, 2], device='cuda'), reduction='sum')",
        "focal_cuda.softmax_focal_loss(torch.randn(4, 3, device='cuda'), torch.tensor([0, 3, 1, 2], device='cuda'))",
        "focal_cuda.softmax_focal_loss(torch.randn(2, 3, 4, device='cuda'), torch.full((2, 4), -7, device='cuda'))",
    ],
    ids=["sigmoid", "softmax", "softmax-spatial"],
)
def test_out_of_range_class_index_is_a_device_side_assert(call):
    """Run in a child process: a device-side assert ends the CUDA context for the rest of the process."""
    code = f"import torch, focal_cuda\nloss = {call}\ntorch.cuda.synchronize()\nprint('no error')\n"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPOSITORY_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0 and "no error" not in result.stdout
    assert "assert" in result.stderr.lower(), result.stderr[-2000:]


@pytest.mark.parametrize(
    "argument,call",
    [
        ("target", lambda: focal_cuda.sigmoid_focal_loss(torch.randn(4, 3, device="cuda"), torch.rand(4, 3))),
        ("target", lambda: focal_cuda.sigmoid_focal_loss(torch.randn(4, 3, device="cuda"), torch.tensor([0, 1, 2, 3]))),
        ("target", lambda: focal_cuda.softmax_focal_loss(torch.randn(4, 3, device="cuda"), torch.tensor([0, 1, 2, 1]))),
        ("alpha", lambda: focal_cuda.softmax_focal_loss(
            torch.randn(4, 3, device="cuda"), torch.tensor([0, 1, 2, 1], device="cuda"), torch.ones(3))),
        ("normalizer", lambda: focal_cuda.softmax_focal_loss(
            torch.randn(4, 3, device="cuda"), torch.tensor([0, 1, 2, 1], device="cuda"), normalizer=torch.tensor(2.0))),
        ("target", lambda: focal_cuda.binary_focal_loss(torch.rand(4, 3, device="cuda"), torch.rand(4, 3))),
    ],
    ids=["sigmoid-dense", "sigmoid-index", "softmax-target", "softmax-alpha", "softmax-normalizer", "binary"],
)
def test_mixed_devices_raise_naming_the_argument(argument, call):
    with pytest.raises((ValueError, TypeError, RuntimeError), match=argument):
        call()
