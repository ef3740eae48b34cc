"""Loads the compiled operator library and teaches PyTorch about its ops: fake (meta) kernels for
torch.compile / FakeTensor, and autograd for the forward ops (backward = the focal_bwd op, or focal_bwd_ over the
saved gradient when autograd reads it no more: one gradient buffer, not two).

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


# The schemas' weight_mode codes (csrc/ops.h WeightModeCode).
WEIGHT_MODES = {"element": 0, "row": 1, "class": 2}


def _focal_bwd_fake(grad, grad_output, grad_scale, reduction, class_dim_reduced):
    return torch.empty_like(grad, memory_format=torch.contiguous_format)


def _focal_bwd_inplace_fake(grad, grad_output, grad_scale, reduction, class_dim_reduced):
    return None


# The forward ops. Softmax's 'none' loss has the target's shape (its grad_output lacks the class dim); the focal
# family's ops are elementwise.
FORWARD_OPS = ("sigmoid_focal_fwd", "softmax_focal_fwd", "binary_focal_fwd", "varifocal_fwd", "quality_focal_fwd",
               "asymmetric_fwd")
_CLASS_DIM_REDUCED = {"softmax_focal_fwd"}


def _fwd_fake(argument_names, loss_has_target_shape):
    # positions found once, at registration: reduction and compute_grad have no defaults, so a call passes them
    reduction_index, compute_grad_index = argument_names.index("reduction"), argument_names.index("compute_grad")

    def fake(*args, **kwargs):
        input, target = args[0], args[1]
        shape = target.shape if loss_has_target_shape else input.shape
        reduction = args[reduction_index] if reduction_index < len(args) else kwargs["reduction"]
        compute_grad = args[compute_grad_index] if compute_grad_index < len(args) else kwargs["compute_grad"]
        return _fake_outputs(input, shape, reduction, compute_grad)
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
_top_saved_tensors_hooks = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)


def supported_autograd_message():
    """What focal_cuda's autograd supports, for the errors that refuse the rest."""
    return ("focal_cuda losses support first derivatives with respect to the input (logits / probabilities) in "
            "reverse mode: loss.backward() and torch.autograd.grad, with retain_graph, under torch.compile and "
            "torch.utils.checkpoint")


def _saved_tensors_hooks_active():
    """True while torch.autograd.graph.saved_tensors_hooks (checkpoint, save_on_cpu, a user's hooks) are active:
    what the forward saves then goes through a pack hook that may keep it where anyone can read it."""
    if _top_saved_tensors_hooks is None:
        return True  # cannot tell: assume they are
    return _top_saved_tensors_hooks(True) is not None


def _storage_use_count(t):
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


# The use count a tensor's storage reports when that tensor is its only holder (the call holds one reference).
_SOLE_STORAGE_USE_COUNT = _storage_use_count(torch.empty(1))


def _may_overwrite_saved_grad(grad, grad_loss, forward_grad_output):
    """True when this backward is the saved gradient's last reader, so it may take the result in place: the graph
    is freed after this backward (no retain_graph / create_graph), nothing traces it (AOTAutograd may trace a
    backward once and replay it with retain_graph), nobody else can read the buffer (the forward op's caller no
    longer holds the gradient output, which the public functions drop and a direct caller of the op may keep: a
    weak reference tells; and no other tensor shares its storage: a .detach() / .data / view alias of it), and
    the buffer can hold the result (contiguous, its dtype)."""
    return (_get_keep_graph is not None and not _get_keep_graph() and forward_grad_output() is None
            and not torch.compiler.is_compiling()
            and _is_plain_tensor(grad) and _is_plain_tensor(grad_loss)
            and grad.is_contiguous() and grad.dtype == grad_loss.dtype and grad.device == grad_loss.device
            and _storage_use_count(grad) == _SOLE_STORAGE_USE_COUNT)


DOUBLE_BACKWARD_MESSAGE = (
    "focal_cuda: double backward (differentiating the gradient of a focal_cuda loss, e.g. after "
    "torch.autograd.grad(..., create_graph=True) or loss.backward(create_graph=True): MAML steps, gradient "
    "penalties) is not supported; the first derivative was computed, but it has no derivative of its own. "
    + supported_autograd_message())


class _NoDoubleBackward(torch.autograd.Function):
    """Passes the gradient on under create_graph; differentiating it raises (as @once_differentiable does, but
    the result requires grad even when grad_output does not, so a second-order term is never dropped in silence:
    the gradient depends on the input, through the forward's saved gradient that autograd does not see)."""

    @staticmethod
    def forward(ctx, compute, anchor):
        return compute()

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(DOUBLE_BACKWARD_MESSAGE)


def anchor_input(loss, input):
    """Gives the forward node of `loss` an empty tensor computed from `input` (no copy of it, nothing that keeps its
    memory alive), through which a gradient computed under create_graph is connected to the input in autograd's
    graph: differentiating it with respect to the input (or anything before it) then reaches the error above,
    instead of being pruned as unused (an unclear error, or None under allow_unused=True)."""
    if (torch.compiler.is_compiling() or not torch.is_grad_enabled()
            or not (input.requires_grad and _is_plain_tensor(input))):
        return loss  # (a compiled graph's backward is not differentiable again: AOTAutograd refuses it itself)
    node = loss.grad_fn
    if node is not None:
        # an empty copy: its backward node keeps sizes only, never the input's memory
        node.focal_anchor = (torch.narrow_copy(input, 0, 0, 0) if input.dim() > 0
                             else input.as_strided((0,), (1,)).clone())
    return loss


def _refuse_double_backward(ctx, compute, *tensors):
    """compute() (the backward's out-of-place result); when autograd is building a graph of the backward
    (create_graph), computed under a node that raises a clear error if anything differentiates it."""
    if (not torch.is_grad_enabled() or torch.compiler.is_compiling()
            or not all(_is_plain_tensor(t) for t in tensors)):
        return compute()
    anchor = getattr(ctx, "focal_anchor", None)
    if anchor is None:  # a direct caller of the op: a leaf of its own, so that the result still requires grad
        anchor = torch.empty(0, requires_grad=True)
    return _NoDoubleBackward.apply(compute, anchor)


def _register_autograd(namespace, fwd_name, bwd_op, apply_in_place_op, class_dim_reduced, cpu_shortcut,
                       argument_names):
    num_inputs = len(argument_names)
    reduction_index = argument_names.index("reduction")
    compute_grad_index = argument_names.index("compute_grad")

    def setup_context(ctx, inputs, output):
        _, grad, grad_scale = output
        ctx.reduction = inputs[reduction_index]
        ctx.has_grad = inputs[compute_grad_index]
        ctx.mark_non_differentiable(grad, grad_scale)
        ctx.set_materialize_grads(False)  # no zero-filled gradients for the non-differentiable outputs
        if _saved_tensors_hooks_active():
            # the pack hooks see the gradient (checkpoint may drop and recompute it, save_on_cpu move it, a
            # user's hook keep it): it is theirs, and backward never writes over it
            ctx.save_for_backward(grad.detach(), grad_scale)
            ctx.focal_grad = None
        else:
            # kept on ctx, not saved: neither grad_fn.saved_tensors nor a hook hands it out, so backward may write
            # its result over it when autograd is done with the graph. An alias: while the op's caller holds the
            # output itself (the public functions never do), the weak reference stays alive and backward leaves
            # the buffer alone.
            ctx.save_for_backward(grad_scale)
            ctx.focal_grad = grad.detach()
            ctx.forward_grad_output = weakref.ref(grad)

    def backward(ctx, grad_loss, _grad_of_grad, _grad_of_scale):
        for name, needs in zip(argument_names[1:], ctx.needs_input_grad[1:]):
            if needs:
                raise RuntimeError(f"{namespace}::{fwd_name}: the loss is differentiated with respect to the input "
                                   f"only, not {name}; pass {name}.detach()")
        if not ctx.has_grad:
            raise RuntimeError(f"{namespace}::{fwd_name} was called with compute_grad=False; "
                               "call it with compute_grad=True to differentiate it")
        saved = ctx.saved_tensors  # after a backward that freed the graph, autograd's own error
        stashed = ctx.focal_grad is not None  # else saved under saved-tensor hooks: theirs, never written over
        grad, grad_scale = (ctx.focal_grad,) + saved if stashed else saved
        frees_graph = _get_keep_graph is not None and not _get_keep_graph()
        if frees_graph:
            ctx.focal_grad = ctx.focal_anchor = None  # released with the graph, as autograd releases what it saved
        may_overwrite = stashed and frees_graph
        if grad_loss is None:
            return (None,) * num_inputs
        no_grads = (None,) * (num_inputs - 1)
        if may_overwrite and _may_overwrite_saved_grad(grad, grad_loss, ctx.forward_grad_output):
            # Nobody else can read the forward's gradient, and autograd drops it after this backward: the result
            # may live in it (and be handed out).
            if not (cpu_shortcut and _applies_nothing(grad_loss, grad_scale)):
                apply_in_place_op(grad, grad_loss, grad_scale, ctx.reduction, class_dim_reduced)
            return (grad,) + no_grads
        result = _refuse_double_backward(
            ctx, lambda: bwd_op(grad, grad_loss, grad_scale, ctx.reduction, class_dim_reduced), grad_loss, grad,
            grad_scale)
        return (result,) + no_grads

    torch.library.register_autograd(f"{namespace}::{fwd_name}", backward, setup_context=setup_context)


def _register_library(namespace, cpu_shortcut):
    """Fake kernels and autograd for the ops of `namespace` (focal_cuda, or focal_cuda_emulated)."""
    library_ops = getattr(torch.ops, namespace)
    torch.library.register_fake(f"{namespace}::focal_bwd")(_focal_bwd_fake)
    torch.library.register_fake(f"{namespace}::focal_bwd_")(_focal_bwd_inplace_fake)
    for name in FORWARD_OPS:
        argument_names = [argument.name for argument in getattr(library_ops, name).default._schema.arguments]
        class_dim_reduced = name in _CLASS_DIM_REDUCED
        torch.library.register_fake(f"{namespace}::{name}")(_fwd_fake(argument_names, class_dim_reduced))
        _register_autograd(namespace, name, library_ops.focal_bwd, library_ops.focal_bwd_, class_dim_reduced,
                           cpu_shortcut, argument_names)
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
