"""Backward memory: when autograd reads the forward's saved gradient no more (no retain_graph, no create_graph,
nothing tracing) and nobody else can (no saved_tensors_hooks, no alias of it), the backward applies grad_output
in place over it (the focal_bwd_ op), so a forward + backward holds one gradient-sized buffer, as
F.cross_entropy does; otherwise it takes the out-of-place focal_bwd op and leaves the saved gradient as it was.

Each test states one behaviour, on the CPU kernels and on the emulated CUDA kernels (`backend`): gradients equal
the out-of-place result exactly (same kernel, same rounding) and focal_cuda.reference within the tolerance table,
however often and in whatever shape of graph the loss is differentiated; and the in-place path is taken exactly
when it is safe.
"""
import pytest
import torch

import focal_cuda
from focal_cuda import reference
from focal_cuda._ops import REDUCTIONS, ops_for
from conftest import assert_close, reductions, to_ground_truth

LOSSES = ["sigmoid", "softmax", "softmax_spatial", "binary", "varifocal"]


def make_case(name, rows):
    """(function, reference function, input, target) of a float32 case of loss `name` with `rows` rows."""
    if name == "sigmoid":
        return focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, torch.randn(rows, 7), torch.rand(rows, 7)
    if name == "softmax":
        x, t = torch.randn(rows, 7), torch.randint(0, 7, (rows,))
        return focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, x, t
    if name == "softmax_spatial":  # grad_output (N, S) is broadcast over the class dim of grad (N, C, S)
        x, t = torch.randn(rows, 5, 4), torch.randint(0, 5, (rows, 4))
        return focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, x, t
    if name == "binary":
        prob = 0.05 + 0.9 * torch.rand(rows, 7)
        return focal_cuda.binary_focal_loss, reference.binary_focal_loss, prob, torch.rand(rows, 7)
    assert name == "varifocal"
    return focal_cuda.varifocal_loss, reference.varifocal_loss, torch.randn(rows, 7), torch.rand(rows, 7)


class Case:
    """One loss with its inputs: builds fresh graphs, and knows the gradients they must give."""

    def __init__(self, name, reduction, rows=13):
        self.function, self.reference_function, self.input, self.target = make_case(name, rows)
        self.reduction = reduction

    def leaf(self):
        return self.input.clone().requires_grad_(True)

    def loss(self, leaf):
        return self.function(leaf, self.target, reduction=self.reduction)

    def grad_output(self):
        """Random: a reduced loss's grad_output is not 1, so the CPU backward cannot skip applying it."""
        shape = self.loss(self.input).shape
        return torch.randn(shape)

    def out_of_place_gradient(self, grad_output):
        """d(loss)/d(input) under grad_output from the out-of-place op (retain_graph keeps the saved gradient)."""
        leaf = self.leaf()
        (grad,) = torch.autograd.grad(self.loss(leaf), leaf, grad_output, retain_graph=True)
        return grad

    def reference_gradient(self, grad_output):
        truth = to_ground_truth(self.input).requires_grad_(True)
        loss = self.reference_function(truth, to_ground_truth(self.target), reduction=self.reduction)
        (grad,) = torch.autograd.grad(loss, truth, to_ground_truth(grad_output))
        return grad


@pytest.fixture(params=LOSSES)
def loss_name(request):
    return request.param


@pytest.fixture(params=reductions)
def case(backend, loss_name, request):
    return Case(loss_name, request.param)


def expect_gradient(actual, case, grad_output, times=1):
    """`actual` is `times` x the out-of-place gradient under grad_output, exactly, and matches the reference."""
    expected = case.out_of_place_gradient(grad_output)
    assert torch.equal(actual, expected * times), "differs from the out-of-place backward's result"
    assert_close(actual, case.reference_gradient(grad_output) * times, torch.float32, "gradient")


def saved_gradients(leaf):
    """A saved_tensors_hooks context and the list it fills with the input-shaped tensors saved for backward
    that are not the input itself: the forward's gradient."""
    saved = []

    def pack(tensor):
        if tensor.shape == leaf.shape and tensor.untyped_storage().data_ptr() != leaf.untyped_storage().data_ptr():
            saved.append(tensor)
        return tensor

    return torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), saved


def forward_gradient(loss):
    """The gradient the forward computed, as the loss's backward node keeps it (not saved for backward, so
    neither grad_fn.saved_tensors nor a saved_tensors_hooks pack hook hands it out; focal_cuda._ops' ctx)."""
    gradient = loss.grad_fn.focal_grad
    assert gradient is not None, "the forward's gradient is not kept on the backward node"
    return gradient


def shares_storage(a, b):
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


# ---- gradients are right in every way of differentiating ----------------------------------------------------------

def test_backward_equals_out_of_place_result(case):
    leaf, grad_output = case.leaf(), case.grad_output()
    case.loss(leaf).backward(grad_output)
    expect_gradient(leaf.grad, case, grad_output)


def test_backward_with_grad_output_one(case):
    # for a reduced loss the CPU backend returns the saved gradient as it is (its forward folded the mean in)
    leaf = case.leaf()
    case.loss(leaf).sum().backward()
    expect_gradient(leaf.grad, case, torch.ones(case.loss(case.input).shape))


def test_retain_graph_then_second_backward_accumulates_exactly_twice(case):
    leaf, grad_output = case.leaf(), case.grad_output()
    loss = case.loss(leaf)
    loss.backward(grad_output, retain_graph=True)
    loss.backward(grad_output)
    expect_gradient(leaf.grad, case, grad_output, times=2)


def test_three_backward_passes_with_grad_output_one_accumulate_exactly_three_times(case):
    # the saved gradient must not become leaf.grad (accumulated in place) while the graph is retained
    leaf = case.leaf()
    loss = case.loss(leaf).sum()
    loss.backward(retain_graph=True)
    loss.backward(retain_graph=True)
    loss.backward()
    expect_gradient(leaf.grad, case, torch.ones(case.loss(case.input).shape), times=3)


def test_autograd_grad_twice_with_retain_graph_gives_equal_untouched_gradients(case):
    leaf, grad_output = case.leaf(), case.grad_output()
    loss = case.loss(leaf)
    (first,) = torch.autograd.grad(loss, leaf, grad_output, retain_graph=True)
    first_values = first.clone()
    (second,) = torch.autograd.grad(loss, leaf, grad_output, retain_graph=True)
    assert torch.equal(first, first_values), "the second backward changed the first one's gradient"
    expect_gradient(second, case, grad_output)


def test_gradient_returned_while_the_graph_is_kept_is_the_callers_own(case):
    # changing it must not change what the next backward of the same graph gives
    leaf = case.leaf()
    loss = case.loss(leaf).sum()
    (first,) = torch.autograd.grad(loss, leaf, retain_graph=True)
    first.zero_()
    (second,) = torch.autograd.grad(loss, leaf)
    expect_gradient(second, case, torch.ones(case.loss(case.input).shape))


def test_loss_used_twice_in_one_graph(case):
    leaf = case.leaf()
    loss = case.loss(leaf)
    (loss * 2 + loss.detach() * 0 + loss).sum().backward()
    expect_gradient(leaf.grad, case, torch.full(loss.shape, 3.0))


def test_none_loss_feeding_two_branches(backend, loss_name):
    case = Case(loss_name, "none")
    leaf = case.leaf()
    loss = case.loss(leaf)
    branch_weight = torch.rand(loss.shape)
    (loss.sum() + (loss * branch_weight).sum()).backward()
    expect_gradient(leaf.grad, case, 1 + branch_weight)


def test_batched_grad_outputs_give_one_gradient_each(case):
    # autograd.grad(is_grads_batched=True) runs the backward under vmap, which has no rule for an in-place op
    leaf = case.leaf()
    grad_outputs = torch.stack([case.grad_output() for _ in range(3)])
    (grads,) = torch.autograd.grad(case.loss(leaf), leaf, grad_outputs, is_grads_batched=True)
    for grad, grad_output in zip(grads, grad_outputs):
        expect_gradient(grad, case, grad_output)


def test_create_graph_gives_the_gradient_and_keeps_the_graph(case):
    leaf, grad_output = case.leaf(), case.grad_output()
    loss = case.loss(leaf)
    (grad,) = torch.autograd.grad(loss, leaf, grad_output, create_graph=True)
    expect_gradient(grad, case, grad_output)
    loss.backward(grad_output)
    expect_gradient(leaf.grad, case, grad_output)


# ---- the in-place path is taken exactly when it is safe -----------------------------------------------------------

def test_backward_writes_its_result_over_the_saved_gradient_when_the_graph_is_freed(case):
    leaf, grad_output = case.leaf(), case.grad_output()
    loss = case.loss(leaf)
    address = forward_gradient(loss).data_ptr()  # not a reference: holding one would be another reader
    (grad,) = torch.autograd.grad(loss, leaf, grad_output)
    assert grad.data_ptr() == address, "backward allocated a second gradient-sized buffer"


def test_backward_leaves_alone_a_gradient_saved_under_saved_tensors_hooks(case):
    # a pack hook may keep what the forward saves (where anyone can read it): then it is not written over
    leaf, grad_output = case.leaf(), case.grad_output()
    hooks, saved = saved_gradients(leaf)
    with hooks:
        loss = case.loss(leaf)
    assert len(saved) == 1, f"expected the forward to save one gradient, found {len(saved)}"
    saved_values = saved[0].clone()
    (grad,) = torch.autograd.grad(loss, leaf, grad_output)
    assert not shares_storage(grad, saved[0]), "the gradient aliases the gradient a pack hook kept"
    assert torch.equal(saved[0], saved_values), "backward changed the gradient a pack hook kept"
    expect_gradient(grad, case, grad_output)


@pytest.mark.parametrize("keep_graph", ["retain_graph", "create_graph"])
def test_backward_leaves_the_saved_gradient_alone_while_the_graph_is_kept(case, keep_graph):
    leaf, grad_output = case.leaf(), case.grad_output()
    loss = case.loss(leaf)
    saved = forward_gradient(loss)
    saved_values = saved.clone()
    (grad,) = torch.autograd.grad(loss, leaf, grad_output, **{keep_graph: True})
    assert not shares_storage(grad, saved), "the gradient aliases the saved gradient of a kept graph"
    assert torch.equal(saved, saved_values), "backward changed the saved gradient of a kept graph"


def test_backward_leaves_alone_a_gradient_output_the_forward_op_caller_holds(backend):
    # the public functions drop it; a direct caller of the op may keep it, and it stays as the forward wrote it
    leaf = torch.randn(13, 7, requires_grad=True)
    forward_op = ops_for(leaf).sigmoid_focal_fwd
    loss, grad, _ = forward_op(leaf, torch.rand(13, 7), 0.25, 2.0, REDUCTIONS["mean"], -100, 0.0, None, True)
    grad_values = grad.clone()
    torch.autograd.grad(loss, leaf, torch.tensor(3.0))
    assert torch.equal(grad, grad_values), "backward overwrote the gradient output its caller holds"


def peak_allocated_bytes(step):
    """The most CPU memory allocated at once while step() runs, above what was allocated before (the PyTorch
    profiler's allocation and free events, replayed in time order)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profiler:
        step()
    events = sorted((e for e in profiler.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak


@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("loss_name", ["sigmoid", "softmax"])
def test_forward_and_backward_hold_one_gradient_sized_buffer(backend, loss_name, reduction):
    case = Case(loss_name, reduction, rows=8192)
    leaf, grad_output = case.leaf(), case.grad_output() * 3  # not 1: the backward has a product to form
    gradient_bytes = leaf.numel() * leaf.element_size()
    loss_bytes = case.loss(case.input).numel() * leaf.element_size()  # 'none' sigmoid: gradient-sized too
    peak = peak_allocated_bytes(lambda: torch.autograd.grad(case.loss(leaf), leaf, grad_output))
    # grad_scale and the CUDA kernels' reduction workspace (a few KiB) are small next to the gradient
    assert gradient_bytes <= peak <= loss_bytes + 1.25 * gradient_bytes, (
        f"peak {peak} B for a {gradient_bytes} B gradient and a {loss_bytes} B loss")


# ---- the op --------------------------------------------------------------------------------------------------------

def forward_outputs(case):
    """(loss, saved gradient, grad_scale) of the case's forward op, and the op library that ran it."""
    leaf = case.leaf()
    hooks, saved = saved_gradients(leaf)
    with hooks:
        loss = case.loss(leaf)
    return loss.detach(), saved[0], ops_for(leaf)


def test_in_place_op_equals_the_backward_op(case, loss_name):
    loss, grad, ops = forward_outputs(case)
    # grad_scale 2: a 'mean'/'sum' factor the op must apply (the CPU forward folds the mean in and saves 1)
    grad_scale = torch.tensor(2.0)
    grad_output = torch.randn(loss.shape)
    class_dim_reduced = loss_name.startswith("softmax")
    expected = ops.focal_bwd(grad, grad_output, grad_scale, REDUCTIONS[case.reduction], class_dim_reduced)
    ops.focal_bwd_(grad, grad_output, grad_scale, REDUCTIONS[case.reduction], class_dim_reduced)
    assert torch.equal(grad, expected)


def test_in_place_op_passes_opcheck(case, loss_name):
    loss, grad, ops = forward_outputs(case)
    args = (grad, torch.randn(loss.shape), torch.tensor(0.5), REDUCTIONS[case.reduction], loss_name.startswith("softmax"))
    torch.library.opcheck(ops.focal_bwd_.default, args)


def test_in_place_op_rejects_a_non_contiguous_grad(backend):
    ops = ops_for(torch.empty(0))
    grad = torch.randn(7, 13).t()
    with pytest.raises(ValueError, match=r"grad: expected a contiguous tensor .* got strides \[1, 13\]"):
        ops.focal_bwd_(grad, torch.randn(13, 7), torch.tensor(1.0), REDUCTIONS["none"], False)


def test_in_place_op_rejects_a_grad_output_of_another_dtype(backend):
    ops = ops_for(torch.empty(0))
    grad = torch.randn(13, 7, dtype=torch.float16)
    with pytest.raises(TypeError, match="grad_output: expected dtype Half .* got Float"):
        ops.focal_bwd_(grad, torch.randn(13, 7), torch.tensor(1.0), REDUCTIONS["none"], False)
    assert grad.dtype == torch.float16


# ---- torch.compile -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("loss_name", ["sigmoid", "softmax_spatial"])
def test_compiled_loss_backward_matches_eager(loss_name, reduction):
    case = Case(loss_name, reduction)
    grad_output = case.grad_output()
    compiled = torch.compile(case.loss, fullgraph=True, backend="inductor")
    leaf = case.leaf()
    compiled(leaf).backward(grad_output)
    expect_gradient(leaf.grad, case, grad_output)
