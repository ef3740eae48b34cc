"""torch.compile: a training step through every focal_cuda loss compiles without graph breaks
(fullgraph=True), with dynamic shapes, and on CUDA under CUDA graphs (mode="reduce-overhead");
the compiled losses and parameter gradients equal eager.

One small model whose forward calls all the ops (softmax via the FocalLoss module with alpha, sigmoid
with dense and class-index targets and a device-side normalizer, binary on probabilities), so each
mode costs one compile: CPU inductor compiles are slow.
"""

import copy

import pytest
import torch

import focal_cuda

from conftest import devices

FEATURES = 16
NUM_CLASSES = 5


class LossStep(torch.nn.Module):
    """Linear -> each focal_cuda loss; returns the losses stacked (their sum is what training minimises)."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(FEATURES, NUM_CLASSES)
        self.softmax_focal = focal_cuda.FocalLoss(NUM_CLASSES, alpha=torch.linspace(0.5, 1.5, NUM_CLASSES))

    def forward(self, features, class_target, dense_target):
        logits = self.linear(features)
        # number of positive rows (class index < C), kept on the device: no host sync
        num_positive = (class_target < NUM_CLASSES).sum().to(logits.dtype).clamp(min=1)
        softmax = self.softmax_focal(logits, class_target.clamp(max=NUM_CLASSES - 1))
        sigmoid_dense = focal_cuda.sigmoid_focal_loss(logits, dense_target, reduction="mean")
        sigmoid_index = focal_cuda.sigmoid_focal_loss(
            logits, class_target, gamma=1.5, reduction="mean", normalizer=num_positive
        )
        sigmoid_none = focal_cuda.sigmoid_focal_loss(logits, dense_target, alpha=-1, reduction="none").sum(dim=1).mean()
        binary = focal_cuda.binary_focal_loss(torch.sigmoid(logits), dense_target, reduction="sum")
        return torch.stack([softmax, sigmoid_dense, sigmoid_index, sigmoid_none, binary])


def make_batch(batch_size, device, seed):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch_size, FEATURES, generator=generator)
    class_target = torch.randint(0, NUM_CLASSES + 1, (batch_size,), generator=generator)  # C = background
    dense_target = (torch.rand(batch_size, NUM_CLASSES, generator=generator) < 0.3).float()
    return features.to(device), class_target.to(device), dense_target.to(device)


def run_step(forward, model, batch):
    """`forward` (model itself or its compiled wrapper), backward of the summed losses;
    returns (losses, {parameter name: gradient})."""
    model.zero_grad(set_to_none=True)
    losses = forward(*batch)
    losses.sum().backward()
    # clone: CUDA-graph outputs are overwritten by the next replay
    return losses.detach().clone(), {name: p.grad.clone() for name, p in model.named_parameters()}


def assert_step_equal(compiled_result, eager_result, what):
    compiled_losses, compiled_grads = compiled_result
    eager_losses, eager_grads = eager_result
    torch.testing.assert_close(compiled_losses, eager_losses, msg=lambda m: f"{what}: losses differ: {m}")
    for name, eager_grad in eager_grads.items():
        torch.testing.assert_close(
            compiled_grads[name], eager_grad, msg=lambda m: f"{what}: gradient of {name} differs: {m}"
        )


def make_models(device):
    torch.manual_seed(0)
    eager_model = LossStep().to(device)
    return eager_model, copy.deepcopy(eager_model)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("device", devices)
def test_fullgraph_training_steps_equal_eager(device):
    """Three optimiser steps through the compiled losses: losses, gradients and parameters equal eager training."""
    eager_model, compiled_model = make_models(device)
    compiled_forward = torch.compile(compiled_model, fullgraph=True, dynamic=False)
    eager_optimizer = torch.optim.SGD(eager_model.parameters(), lr=0.1)
    compiled_optimizer = torch.optim.SGD(compiled_model.parameters(), lr=0.1)
    for step in range(3):
        batch = make_batch(8, device, seed=step)
        compiled_result = run_step(compiled_forward, compiled_model, batch)
        assert torch.isfinite(compiled_result[0]).all() and (compiled_result[0] > 0).all(), compiled_result[0]
        assert_step_equal(compiled_result, run_step(eager_model, eager_model, batch), f"fullgraph, step {step}")
        eager_optimizer.step()
        compiled_optimizer.step()
    for (name, eager_parameter), compiled_parameter in zip(eager_model.named_parameters(), compiled_model.parameters()):
        torch.testing.assert_close(compiled_parameter, eager_parameter, msg=lambda m: f"parameter {name}: {m}")


@pytest.mark.parametrize("device", devices)
def test_fullgraph_dynamic_shapes_equal_eager_without_recompiling(device):
    eager_model, compiled_model = make_models(device)
    compiled_forward = torch.compile(compiled_model, fullgraph=True, dynamic=True)
    first = make_batch(8, device, seed=2)
    assert_step_equal(run_step(compiled_forward, compiled_model, first), run_step(eager_model, eager_model, first), "dynamic, batch 8")
    # a new batch size must reuse the symbolic-shape graph: the fake kernels propagate shapes
    with torch._dynamo.config.patch(error_on_recompile=True):
        for batch_size in (13, 32):
            batch = make_batch(batch_size, device, seed=batch_size)
            assert_step_equal(
                run_step(compiled_forward, compiled_model, batch), run_step(eager_model, eager_model, batch), f"dynamic, batch {batch_size}"
            )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_reduce_overhead_cuda_graphs_equal_eager():
    eager_model, compiled_model = make_models("cuda")
    compiled_forward = torch.compile(compiled_model, fullgraph=True, mode="reduce-overhead")
    # the first calls warm up and record the graph; later ones replay it on new data in the same buffers
    for step in range(4):
        torch.compiler.cudagraph_mark_step_begin()
        batch = make_batch(64, "cuda", seed=100 + step)
        assert_step_equal(run_step(compiled_forward, compiled_model, batch), run_step(eager_model, eager_model, batch), f"CUDA graphs, step {step}")
