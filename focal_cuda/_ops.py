"""Loads the compiled operator library and teaches PyTorch about its ops: fake (meta) kernels for
torch.compile / FakeTensor, and autograd for the forward ops (backward = the matching *_bwd op, or
apply_grad_output_ over the saved gradient when autograd reads it no more: one gradient buffer, not two).

Autocast: the ops register no autocast rule, so under torch.autocast they run on the tensors as given
(bf16/fp16 logits are read natively, math in float32, loss in the logits' dtype; no upcast copy).
"""
import importlib.util
import os
import weakref

import torch

_BUILD_HINT = (
    "focal_cuda's compiled extension focal_cuda._C is missing or failed to load. Build it with\n"
    "    pip install --no-build-isolation .\n"
    "(or, in a source checkout, `python setup.py build_ext --inplace`); set FOCAL_CUDA_CPU_ONLY=1 to skip CUDA."
)


def _load_library():
    spec = importlib.util.find_spec("focal_cuda._C")
    if spec is None or spec.origin is None or not os.path.exists(spec.origin):
        raise ImportError(_BUILD_HINT)
    try:
        torch.ops.load_library(spec.origin)
    except OSError as exc:
        raise ImportError(f"{_BUILD_HINT}\nLoading {spec.origin} failed: {exc}") from exc
    return spec.origin


LIBRARY_PATH = _load_library()
ops = torch.ops.focal_cuda

REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}
_NONE = REDUCTIONS["none"]


def opmath_dtype(dtype):
    """The dtype the kernels compute in (and of alpha, normalizer and grad_scale) for input `dtype`."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _fake_outputs(input, loss_shape, reduction, compute_grad):
    loss = input.new_empty(loss_shape if reduction == _NONE else ())
    grad = input.new_empty(input.shape if compute_grad else (0,))
    return loss, grad, input.new_empty((), dtype=opmath_dtype(input.dtype))


def _bwd_fake(grad_output, grad, grad_scale, reduction):
    return torch.empty_like(grad)


def _apply_grad_output_fake(grad, grad_output, grad_scale, reduction, class_dim_reduced):
    return None


# Forward op -> (its backward op, the index of its reduction and compute_grad arguments, whether the
# 'none' loss has the target's shape rather than the input's). The focal family's ops are elementwise.
FORWARD_OPS = {
    "sigmoid_focal_fwd": ("sigmoid_focal_bwd", 4, 8, False),
    "softmax_focal_fwd": ("softmax_focal_bwd", 4, 8, True),
    "binary_focal_fwd": ("binary_focal_bwd", 4, 5, False),
    "varifocal_fwd": ("sigmoid_focal_bwd", 6, 9, False),
    "quality_focal_fwd": ("sigmoid_focal_bwd", 4, 7, False),
    "asymmetric_fwd": ("sigmoid_focal_bwd", 7, 10, False),
}


def _fwd_fake(reduction_index, compute_grad_index, loss_has_target_shape):
    def fake(*args, **kwargs):
        input, target = args[0], args[1]
        shape = target.shape if loss_has_target_shape else input.shape
        return _fake_outputs(input, shape, args[reduction_index], args[compute_grad_index])
    return fake


def _is_plain_tensor(t):
    """Not a tensor subclass (fake, functional) nor wrapped by a transform (torch.func, or the legacy vmap of
    autograd.grad(is_grads_batched=True)), which have no rule for an in-place op."""
    return (type(t) is torch.Tensor and not torch._C._functorch.is_functorch_wrapped_tensor(t)
            and not torch._C._functorch.is_legacy_batchedtensor(t))


def _applies_nothing(grad_loss, grad_scale):
    """True when backward would multiply the saved gradient by exactly 1 (loss.backward() of a reduced
    loss on CPU, whose forward folded the mean into the gradient): it is then returned as it is, saving a
    full pass over it. Only plain CPU tensors are read; traced or device tensors always take the op."""
    return (_is_plain_tensor(grad_loss) and _is_plain_tensor(grad_scale)
            and grad_loss.device.type == "cpu" and grad_scale.device.type == "cpu" and grad_loss.dim() == 0
            and not torch.compiler.is_compiling() and bool(grad_loss == 1) and bool(grad_scale == 1))


_get_keep_graph = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)


def _may_overwrite_saved_grad(grad, grad_loss, forward_grad_output):
    """True when this backward is the saved gradient's last reader, so it may take the result in place: the graph
    is freed after this backward (no retain_graph / create_graph), nothing traces it (AOTAutograd may trace a
    backward once and replay it with retain_graph), the forward op's caller no longer holds the gradient output
    (the public functions drop it; a direct caller of the op may keep it: a weak reference tells), and the buffer
    can hold the result (contiguous, its dtype)."""
    return (_get_keep_graph is not None and not _get_keep_graph() and forward_grad_output() is None
            and not torch.compiler.is_compiling()
            and _is_plain_tensor(grad) and _is_plain_tensor(grad_loss)
            and grad.is_contiguous() and grad.dtype == grad_loss.dtype and grad.device == grad_loss.device)


def _register_autograd(namespace, fwd_name, bwd_op, apply_in_place_op, class_dim_reduced, reduction_index,
                       compute_grad_index, num_inputs, cpu_shortcut):
    def setup_context(ctx, inputs, output):
        _, grad, grad_scale = output
        ctx.reduction = inputs[reduction_index]
        ctx.has_grad = inputs[compute_grad_index]
        # an alias: while the op's caller holds the output itself (the public functions never do), the weak
        # reference stays alive and backward leaves the buffer alone
        ctx.save_for_backward(grad.detach(), grad_scale)
        ctx.forward_grad_output = weakref.ref(grad)
        ctx.mark_non_differentiable(grad, grad_scale)
        ctx.set_materialize_grads(False)  # no zero-filled gradients for the non-differentiable outputs

    def backward(ctx, grad_loss, _grad_of_grad, _grad_of_scale):
        if not ctx.has_grad:
            raise RuntimeError(f"{namespace}::{fwd_name} was called with compute_grad=False; "
                               "call it with compute_grad=True to differentiate it")
        grad, grad_scale = ctx.saved_tensors
        if grad_loss is None:
            return (None,) * num_inputs
        no_grads = (None,) * (num_inputs - 1)
        if _may_overwrite_saved_grad(grad, grad_loss, ctx.forward_grad_output):
            # Nobody else holds the saved gradient (the public functions never hand it to users), and autograd
            # drops it after this backward: the result may live in it (and be handed out).
            if not (cpu_shortcut and _applies_nothing(grad_loss, grad_scale)):
                apply_in_place_op(grad, grad_loss, grad_scale, ctx.reduction, class_dim_reduced)
            return (grad,) + no_grads
        return (bwd_op(grad_loss, grad, grad_scale, ctx.reduction),) + no_grads

    torch.library.register_autograd(f"{namespace}::{fwd_name}", backward, setup_context=setup_context)


def _register_library(namespace, cpu_shortcut):
    """Fake kernels and autograd for the ops of `namespace` (focal_cuda, or focal_cuda_emulated)."""
    library_ops = getattr(torch.ops, namespace)
    for name in ("sigmoid_focal_bwd", "softmax_focal_bwd", "binary_focal_bwd"):
        torch.library.register_fake(f"{namespace}::{name}")(_bwd_fake)
    torch.library.register_fake(f"{namespace}::apply_grad_output_")(_apply_grad_output_fake)
    for name, (bwd_name, reduction_index, compute_grad_index, target_shaped) in FORWARD_OPS.items():
        torch.library.register_fake(f"{namespace}::{name}")(
            _fwd_fake(reduction_index, compute_grad_index, target_shaped))
        num_inputs = len(getattr(library_ops, name).default._schema.arguments)
        # the 'none' loss of target shape (softmax) is the one whose grad_output lacks the class dim
        _register_autograd(namespace, name, getattr(library_ops, bwd_name), library_ops.apply_grad_output_,
                           target_shaped, reduction_index, compute_grad_index, num_inputs, cpu_shortcut)
    return library_ops


# The CPU forward folds the mean into the gradient (grad_scale 1), so its backward may skip the multiply; the
# CUDA kernels (real or emulated) never do, and always take their backward kernel.
_register_library("focal_cuda", cpu_shortcut=True)

# focal_cuda.testing.emulated_cuda() sets this to the focal_cuda_emulated ops while active.
_emulated_ops = None
_EMULATED_LIBRARY = None


def load_emulated():
    """Loads focal_cuda._emulated (the CUDA kernels on the SIMT emulator) once; returns its ops."""
    global _EMULATED_LIBRARY
    if _EMULATED_LIBRARY is None:
        spec = importlib.util.find_spec("focal_cuda._emulated")
        if spec is None or spec.origin is None or not os.path.exists(spec.origin):
            raise RuntimeError("focal_cuda was built without CUDA emulation: rebuild with FOCAL_CUDA_EMULATE=1 "
                               "(e.g. FOCAL_CUDA_EMULATE=1 python setup.py build_ext --inplace) to run the CUDA "
                               "kernels on CPU tensors")
        torch.ops.load_library(spec.origin)
        _EMULATED_LIBRARY = _register_library("focal_cuda_emulated", cpu_shortcut=False)
    return _EMULATED_LIBRARY


def ops_for(input):
    """The op library for `input`: the emulated CUDA kernels for CPU tensors inside emulated_cuda(), else
    focal_cuda's own (dispatching to the CPU or CUDA kernels by device)."""
    if _emulated_ops is not None and input.device.type == "cpu":
        return _emulated_ops
    return ops


def has_cuda_kernels():
    """True when this build of the extension contains the CUDA kernels."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("focal_cuda::sigmoid_focal_fwd", "CUDA")
