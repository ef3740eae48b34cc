"""Autograd is right or refuses in words (docs/design.md section 2, "Autograd"; issue 17, item 4): first derivatives with
respect to the input work; double backward, forward-mode AD, torch.func transforms and a target / normalizer /
alpha that requires grad raise a clear error at the point of use, never a dropped term, None or 0 in silence; the
backward writes its result over the forward's gradient only where nobody else can read it; `normalizer` goes with
reduction='mean' only, and a bad `reduction` says "Invalid reduction".

One behaviour per test, for every loss (`LOSSES`) on the CPU kernels and on the emulated CUDA kernels (`backend`;
tiny sizes, the emulator is slow).
"""
import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.utils.checkpoint import checkpoint

import focal_cuda
from focal_cuda import reference
from focal_cuda._ops import REDUCTIONS, ops_for
from conftest import assert_close, reductions, to_ground_truth

ROWS, CLASSES = 5, 4


class Loss:
    """One loss with tiny inputs: `call(input, **kwargs)` runs it, `reference(input, **kwargs)` is its float64
    reference, `dense_target` whether its target is floating (and could require grad)."""

    def __init__(self, name, function, reference_function, make_input, make_target, dense_target,
                 has_normalizer=True, has_alpha_tensor=False):
        self.name, self.function, self.reference_function = name, function, reference_function
        self.input = make_input()
        self.target = make_target()
        self.dense_target, self.has_normalizer, self.has_alpha_tensor = dense_target, has_normalizer, has_alpha_tensor

    def leaf(self):
        return self.input.clone().requires_grad_(True)

    def call(self, input, target=None, **kwargs):
        return self.function(input, self.target if target is None else target, **kwargs)

    def reference(self, input, **kwargs):
        return self.reference_function(input, to_ground_truth(self.target), **kwargs)

    def __repr__(self):
        return self.name


def _logits():
    return torch.randn(ROWS, CLASSES)


def _probs():
    return 0.05 + 0.9 * torch.rand(ROWS, CLASSES)


def make_loss(name):
    if name == "sigmoid_dense":
        return Loss(name, focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, _logits, _probs, True,
                    has_alpha_tensor=True)
    if name == "sigmoid_index":  # C = background
        return Loss(name, focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, _logits,
                    lambda: torch.randint(0, CLASSES + 1, (ROWS,)), False, has_alpha_tensor=True)
    if name == "softmax":
        return Loss(name, focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, _logits,
                    lambda: torch.randint(0, CLASSES, (ROWS,)), False, has_alpha_tensor=True)
    if name == "binary":
        return Loss(name, focal_cuda.binary_focal_loss, reference.binary_focal_loss, _probs, _probs, True,
                    has_normalizer=False)
    if name == "varifocal":
        return Loss(name, focal_cuda.varifocal_loss, reference.varifocal_loss, _logits, _probs, True)
    if name == "quality_focal":
        return Loss(name, focal_cuda.quality_focal_loss, reference.quality_focal_loss, _logits, _probs, True)
    assert name == "asymmetric"
    return Loss(name, focal_cuda.asymmetric_loss, reference.asymmetric_loss, _logits,
                lambda: torch.randint(0, 2, (ROWS, CLASSES)).float(), True)


LOSSES = ["sigmoid_dense", "sigmoid_index", "softmax", "binary", "varifocal", "quality_focal", "asymmetric"]


@pytest.fixture(params=LOSSES)
def loss(backend, request):
    return make_loss(request.param)


@pytest.fixture(params=reductions)
def reduction(request):
    return request.param


def random_grad_output(loss, reduction):
    """Not 1: the CPU backward of a reduced loss could otherwise return the saved gradient as it is."""
    return torch.rand(loss.call(loss.input, reduction=reduction).shape) + 0.5


def expected_gradient(loss, reduction, grad_output):
    truth = to_ground_truth(loss.input).requires_grad_(True)
    (grad,) = torch.autograd.grad(loss.reference(truth, reduction=reduction), truth, to_ground_truth(grad_output))
    return grad


# ---- double backward -----------------------------------------------------------------------------------------------

def test_double_backward_raises_a_clear_error(loss, reduction):
    leaf = loss.leaf()
    (grad,) = torch.autograd.grad(loss.call(leaf, reduction=reduction), leaf, random_grad_output(loss, reduction),
                                  create_graph=True)
    # the first derivative has no derivative of its own: asking for one raises, not a dropped second-order term
    assert grad.requires_grad, "the gradient does not require grad: its second-order term would be dropped"
    with pytest.raises(RuntimeError, match="double backward .* is not supported"):
        torch.autograd.grad((grad * grad).sum(), leaf)


def test_gradient_penalty_raises_instead_of_returning_none_under_allow_unused(loss):
    leaf = loss.leaf()
    (grad,) = torch.autograd.grad(loss.call(leaf, reduction="sum"), leaf, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(grad.square().sum(), leaf, allow_unused=True)


def test_gradient_under_create_graph_is_right(loss, reduction):
    leaf, grad_output = loss.leaf(), random_grad_output(loss, reduction)
    (grad,) = torch.autograd.grad(loss.call(leaf, reduction=reduction), leaf, grad_output, create_graph=True)
    assert_close(grad, expected_gradient(loss, reduction, grad_output), torch.float32, "gradient")


def test_maml_step_raises_instead_of_dropping_the_second_order_term(loss):
    # one inner step input - lr * grad(create_graph), then the outer loss differentiated through it
    leaf = loss.leaf()
    (grad,) = torch.autograd.grad(loss.call(leaf, reduction="mean"), leaf, create_graph=True)
    adapted = leaf - 0.1 * grad
    if loss.name == "binary":
        adapted = adapted.clamp(0.01, 0.99)
    with pytest.raises(RuntimeError, match="double backward"):
        loss.call(adapted, reduction="mean").backward()


# ---- arguments the losses are not differentiated with respect to ---------------------------------------------------

def test_target_that_requires_grad_raises_value_error_naming_it(loss):
    if not loss.dense_target:
        pytest.skip("class-index targets are integer tensors, which cannot require grad")
    target = loss.target.clone().requires_grad_(True)
    with pytest.raises(ValueError, match=r"target: .*requires grad.*target\.detach\(\)"):
        loss.call(loss.leaf(), target, reduction="mean")


def test_target_that_requires_grad_raises_even_when_the_input_does_not(loss):
    # the op then runs with compute_grad=False: the error must name the target, not compute_grad
    if not loss.dense_target:
        pytest.skip("class-index targets are integer tensors, which cannot require grad")
    target = loss.target.clone().requires_grad_(True)
    with pytest.raises(ValueError, match=r"target: .*requires grad"):
        loss.call(loss.input, target, reduction="mean")


def test_normalizer_that_requires_grad_raises_value_error_naming_it(loss):
    if not loss.has_normalizer:
        pytest.skip(f"{loss.name} takes no normalizer")
    normalizer = torch.tensor(3.0, requires_grad=True)
    with pytest.raises(ValueError, match=r"normalizer: .*requires grad.*normalizer\.detach\(\)"):
        loss.call(loss.leaf(), reduction="mean", normalizer=normalizer)


def test_alpha_tensor_that_requires_grad_raises_value_error_naming_it(loss):
    if not loss.has_alpha_tensor:
        pytest.skip(f"{loss.name} takes no per-class alpha tensor")
    alpha = torch.rand(CLASSES, requires_grad=True)
    with pytest.raises(ValueError, match=r"alpha: .*requires grad.*alpha\.detach\(\)"):
        loss.call(loss.leaf(), alpha=alpha, reduction="mean")


def test_arguments_that_require_grad_are_fine_under_no_grad(loss):
    if not loss.dense_target:
        pytest.skip("class-index targets are integer tensors, which cannot require grad")
    with torch.no_grad():
        value = loss.call(loss.input, loss.target.clone().requires_grad_(True), reduction="mean")
    assert torch.equal(value, loss.call(loss.input, reduction="mean"))


def test_direct_op_caller_with_a_target_that_requires_grad_gets_an_error_naming_it(backend):
    leaf, target = torch.randn(ROWS, CLASSES, requires_grad=True), torch.rand(ROWS, CLASSES, requires_grad=True)
    loss, _, _ = ops_for(leaf).sigmoid_focal_fwd(leaf, target, 0.25, 2.0, REDUCTIONS["mean"], -100, 0.0, None, True)
    with pytest.raises(RuntimeError, match=r"not target; pass target\.detach\(\)"):
        loss.backward()


# ---- forward mode and torch.func ------------------------------------------------------------------------------------

def test_forward_mode_ad_raises_a_clear_error(loss, reduction):
    with fwAD.dual_level():
        dual = fwAD.make_dual(loss.input.clone(), torch.randn(ROWS, CLASSES))
        with pytest.raises(RuntimeError, match="do not support forward-mode AD"):
            loss.call(dual, reduction=reduction)


def test_func_jvp_raises_a_clear_error(loss):
    with pytest.raises(RuntimeError, match="torch.func"):
        torch.func.jvp(lambda x: loss.call(x, reduction="mean"), (loss.input.clone(),), (torch.randn(ROWS, CLASSES),))


def test_func_grad_raises_an_error_saying_what_is_supported(loss):
    with pytest.raises(RuntimeError, match=r"torch.func transforms.*loss.backward\(\) and torch.autograd.grad"):
        torch.func.grad(lambda x: loss.call(x, reduction="mean"))(loss.input.clone())


def test_vmap_of_an_input_that_requires_grad_raises_an_error_saying_what_is_supported(loss):
    # (it used to fail only at backward, with a message about compute_grad=False)
    batch = torch.stack([loss.input, loss.input]).requires_grad_(True)
    with pytest.raises(RuntimeError, match=r"torch.func transforms.*loss.backward\(\) and torch.autograd.grad"):
        torch.func.vmap(lambda x: loss.call(x, reduction="mean"))(batch)


def test_vmap_of_the_loss_value_alone_works(loss):
    batch = torch.stack([loss.input, loss.input.flip(0)])
    values = torch.func.vmap(lambda x: loss.call(x, reduction="mean"))(batch)
    assert torch.equal(values, torch.stack([loss.call(x, reduction="mean") for x in batch]))


# ---- the in-place backward writes only where nobody else can read ---------------------------------------------------

def test_backward_leaves_grad_fn_saved_tensors_unchanged(loss, reduction):
    leaf, grad_output = loss.leaf(), random_grad_output(loss, reduction)
    value = loss.call(leaf, reduction=reduction)
    saved = value.grad_fn.saved_tensors  # a user may hold these
    before = [t.clone() for t in saved]
    value.backward(grad_output)
    for kept, was in zip(saved, before):
        assert torch.equal(kept, was), "backward wrote over a tensor grad_fn.saved_tensors handed out"
    assert_close(leaf.grad, expected_gradient(loss, reduction, grad_output), torch.float32, "gradient")


def test_backward_leaves_a_tensor_a_pack_hook_kept_unchanged(loss, reduction):
    leaf, grad_output = loss.leaf(), random_grad_output(loss, reduction)
    kept = []

    def pack(tensor):
        kept.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        value = loss.call(leaf, reduction=reduction)
    before = [t.clone() for t in kept]
    value.backward(grad_output)
    for tensor, was in zip(kept, before):
        assert torch.equal(tensor, was), "backward wrote over a tensor a saved_tensors_hooks pack hook kept"
    assert_close(leaf.grad, expected_gradient(loss, reduction, grad_output), torch.float32, "gradient")


@pytest.mark.parametrize("alias", ["detach", "data", "view"])
def test_backward_leaves_an_alias_of_the_gradient_output_a_direct_op_caller_kept(backend, alias):
    leaf = torch.randn(ROWS, CLASSES, requires_grad=True)
    loss, grad, _ = ops_for(leaf).sigmoid_focal_fwd(leaf, torch.rand(ROWS, CLASSES), 0.25, 2.0, REDUCTIONS["mean"],
                                                     -100, 0.0, None, True)
    kept = {"detach": grad.detach, "data": lambda: grad.data, "view": lambda: grad.view(-1)}[alias]()
    del grad  # the output itself is gone; the alias is not
    before = kept.clone()
    torch.autograd.grad(loss, leaf, torch.tensor(3.0))
    assert torch.equal(kept, before), f"backward wrote over a {alias} alias of the gradient output"


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_gradient_under_checkpoint_is_right(loss, reduction, use_reentrant):
    leaf, grad_output = loss.leaf(), random_grad_output(loss, reduction)
    value = checkpoint(lambda x: loss.call(x * 1.0, reduction=reduction), leaf, use_reentrant=use_reentrant)
    value.backward(grad_output)
    assert_close(leaf.grad, expected_gradient(loss, reduction, grad_output), torch.float32, "gradient")


def test_gradient_under_save_on_cpu_is_right(loss, reduction):
    leaf, grad_output = loss.leaf(), random_grad_output(loss, reduction)
    with torch.autograd.graph.save_on_cpu():
        value = loss.call(leaf, reduction=reduction)
    value.backward(grad_output)
    assert_close(leaf.grad, expected_gradient(loss, reduction, grad_output), torch.float32, "gradient")


def test_backward_after_the_graph_was_freed_raises_autograds_error(loss):
    leaf = loss.leaf()
    value = loss.call(leaf, reduction="sum")
    value.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        value.backward()


# ---- normalizer and reduction ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["sum", "none"])
@pytest.mark.parametrize("normalizer", [2.0, "tensor"])
def test_normalizer_without_mean_raises_value_error(loss, reduction, normalizer):
    if not loss.has_normalizer:
        pytest.skip(f"{loss.name} takes no normalizer")
    normalizer = torch.tensor(2.0) if normalizer == "tensor" else normalizer
    with pytest.raises(ValueError, match=rf"normalizer: .*reduction='{reduction}'"):
        loss.call(loss.leaf(), reduction=reduction, normalizer=normalizer)


@pytest.mark.parametrize("module, arguments", [
    (focal_cuda.FocalLoss, dict(class_num=CLASSES, size_average=False)),
    (focal_cuda.SigmoidFocalLoss, dict(reduction="sum")),
    (focal_cuda.VarifocalLoss, dict(reduction="none")),
    (focal_cuda.QualityFocalLoss, dict(reduction="sum")),
    (focal_cuda.AsymmetricLoss, dict(reduction="none")),
], ids=lambda v: getattr(v, "__name__", None) or str(v))
def test_module_normalizer_without_mean_raises_value_error(module, arguments):
    input = torch.randn(ROWS, CLASSES, requires_grad=True)
    target = torch.randint(0, CLASSES, (ROWS,)) if module is focal_cuda.FocalLoss else torch.rand(ROWS, CLASSES)
    with pytest.raises(ValueError, match="normalizer: "):
        module(**arguments)(input, target, normalizer=4.0)


@pytest.mark.parametrize("bad", ["avg", "MEAN", None, 1])
def test_invalid_reduction_message_starts_with_invalid_reduction(loss, bad):
    with pytest.raises(ValueError, match=r"^Invalid reduction: expected one of 'none', 'mean', 'sum', got "):
        loss.call(loss.leaf(), reduction=bad)
