// CUDA backend: checks arguments (the shared checks), allocates outputs on the input's device, and issues
// exactly one kernel per pass: the fused forward (which also reduces and writes grad_scale), or the
// backward that applies grad_output. No other ATen op runs on these paths once the inputs are contiguous.
// Built twice: for real CUDA, and against the SIMT emulator on CPU tensors (FOCAL_CUDA_EMULATE, as the
// ops of the focal_cuda_emulated library).
#include "focal_cuda_kernels.h"

#include "../grad_prescale.h"
#include "../ops.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#ifndef FOCAL_CUDA_EMULATE
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace focal {
namespace {

using cuda::ElementwiseParams;
using cuda::ReductionBuffers;
using cuda::SoftmaxParams;

#ifdef FOCAL_CUDA_EMULATE
struct DeviceGuard {
  explicit DeviceGuard(const c10::Device&) {}
};
cudaStream_t current_stream(const at::Tensor&) {
  return nullptr;
}
int device_index(const at::Tensor&) {
  return 0;
}
#else
using DeviceGuard = c10::cuda::CUDAGuard;
cudaStream_t current_stream(const at::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.get_device()).stream();
}
int device_index(const at::Tensor& t) {
  return t.get_device();
}
#endif

// The outputs of a forward call and the workspace of its in-kernel reduction.
struct ForwardOutputs {
  at::Tensor loss;        // per element / per row ('none'), or 0-dim in the input dtype
  at::Tensor grad;        // the input's shape, or empty (compute_grad false)
  at::Tensor grad_scale;  // 0-dim opmath
  at::Tensor workspace;   // [partials (2 * slots doubles) | ticket], reduced losses only
  at::Tensor normalizer;  // opmath 0-dim, or undefined

  ForwardOutputs(const at::Tensor& x, at::IntArrayRef none_shape, int64_t reduction, bool compute_grad,
                 const std::optional<at::Tensor>& normalizer_arg) {
    const auto opmath = x.options().dtype(opmath_dtype(x));
    loss = reduction == kNone ? at::empty(none_shape, x.options()) : at::empty({}, x.options());
    grad = at::empty(compute_grad ? x.sizes() : at::IntArrayRef{0}, x.options());
    grad_scale = at::empty({}, opmath);
    if (reduction != kNone) {
      const int64_t slots = cuda::max_forward_blocks(device_index(x));
      workspace = at::empty({2 * slots + 1}, x.options().dtype(at::kDouble));
    }
    if (reduction == kMean && normalizer_arg.has_value()) {
      normalizer = normalizer_arg->scalar_type() == opmath_dtype(x) ? normalizer_arg->contiguous()
                                                                    : normalizer_arg->to(opmath_dtype(x));
    }
  }

  ReductionBuffers buffers(int64_t reduction, cudaStream_t stream) const {
    ReductionBuffers r;
    r.reduction = reduction;
    r.grad_scale = grad_scale.data_ptr();
    if (reduction == kNone) return r;
    r.slots = (workspace.numel() - 1) / 2;
    r.partials = workspace.data_ptr<double>();
    r.ticket = reinterpret_cast<unsigned int*>(r.partials + 2 * r.slots);
    C10_CUDA_CHECK(cudaMemsetAsync(r.ticket, 0, sizeof(unsigned int), stream));
    r.loss = loss.data_ptr();
    r.normalizer = normalizer.defined() ? normalizer.data_ptr() : nullptr;
    return r;
  }

  // No kernel runs for empty work: a reduced loss is 0 (a mean over nothing too) and grad_scale 0 / 1.
  LossGradScale empty_work(int64_t reduction) {
    if (reduction != kNone) loss.zero_();
    grad_scale.fill_(reduction == kMean && !normalizer.defined() ? 0.0 : 1.0);
    return {loss, grad, grad_scale};
  }
};

void* data_or_null(const at::Tensor& t, bool wanted) {
  return wanted ? t.data_ptr() : nullptr;
}

const void* data_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr() : nullptr;
}

std::optional<at::Tensor> contiguous_or_none(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(t->contiguous()) : std::nullopt;
}

// Every elementwise loss (ElementwiseOp registers the ops): one launch.
LossGradScale elementwise_fwd_cuda(const ElementwiseCall& call) {
  const DeviceGuard device_guard(call.input.device());
  const at::Tensor x = call.input.contiguous();
  const at::Tensor t = call.target.contiguous();
  const std::optional<at::Tensor> score = contiguous_or_none(call.score), weight = contiguous_or_none(call.weight),
                                  class_alpha = contiguous_or_none(call.class_alpha);
  ForwardOutputs out(x, x.sizes(), call.reduction, call.compute_grad, call.normalizer);
  if (x.numel() == 0) return out.empty_work(call.reduction);
  const cudaStream_t stream = current_stream(x);
  ElementwiseParams p;
  p.loss_kind = call.kind;
  p.constants = call.constants;
  p.dtype = x.scalar_type();
  p.input = x.data_ptr();
  p.target = t.data_ptr();
  p.index_target = t.scalar_type() == at::kLong;
  p.score = data_or_null(score);
  p.weight = data_or_null(weight);
  p.weight_mode = call.weight_mode;
  p.class_alpha = data_or_null(class_alpha);
  p.loss = data_or_null(out.loss, call.reduction == kNone);
  p.grad = data_or_null(out.grad, call.compute_grad);
  p.numel = x.numel();
  p.classes = x.dim() == 0 ? 1 : x.size(-1);
  p.ignore_index = call.ignore_index;
  p.reduce = out.buffers(call.reduction, stream);
  p.reduce.grad_prescale = grad_prescale(call);
  cuda::launch_elementwise_forward(p, device_index(x), stream);
  return {out.loss, out.grad, out.grad_scale};
}

LossGradScale softmax_focal_fwd_cuda(const SoftmaxCall& call) {
  const DeviceGuard device_guard(call.input.device());
  const at::Tensor x = call.input.contiguous();
  const at::Tensor t = call.target.contiguous();
  const at::Tensor alpha_c = call.class_alpha.has_value() ? call.class_alpha->contiguous() : at::Tensor();
  const at::Tensor weight_c = call.weight.has_value() ? call.weight->contiguous() : at::Tensor();
  const bool unbatched = x.dim() == 1;
  const int64_t N = unbatched ? 1 : x.size(0);
  const int64_t C = unbatched ? x.size(0) : x.size(1);
  const int64_t S = (N == 0 || C == 0) ? 0 : x.numel() / (N * C);
  const int64_t reduction = call.reduction;
  ForwardOutputs out(x, t.sizes(), reduction, call.compute_grad, call.normalizer);
  if (N * S == 0) return out.empty_work(reduction);
  const cudaStream_t stream = current_stream(x);

  SoftmaxParams p;
  p.dtype = x.scalar_type();
  p.input = x.data_ptr();
  p.target = t.data_ptr<int64_t>();
  p.alpha = alpha_c.defined() ? alpha_c.data_ptr() : nullptr;
  p.loss = data_or_null(out.loss, reduction == kNone);
  p.grad = data_or_null(out.grad, call.compute_grad);
  p.batch = N;
  p.classes = C;
  p.spatial = S;
  p.row_weight = weight_c.defined() ? weight_c.data_ptr() : nullptr;
  p.gamma = call.gamma;
  p.poly_epsilon = call.poly_epsilon;
  p.label_smoothing = call.label_smoothing;
  p.ignore_index = call.ignore_index;
  p.reduce = out.buffers(reduction, stream);
  p.reduce.grad_prescale = grad_prescale(call);
  cuda::launch_softmax_forward(p, device_index(x), stream);
  return {out.loss, out.grad, out.grad_scale};
}

// One launch writing grad * grad_output (* grad_scale for 'mean'/'sum', in opmath) to `out`, which may be `grad`
// itself (each element is read, then written, by one thread). grad and out are contiguous.
void launch_backward(const at::Tensor& grad_output, const at::Tensor& grad, const at::Tensor& grad_scale,
                     int64_t reduction, bool class_dim_reduced, const at::Tensor& out) {
  const DeviceGuard device_guard(grad.device());
  const at::Tensor go = grad_output.to(grad.scalar_type()).contiguous();
  cuda::BackwardParams p;
  p.dtype = grad.scalar_type();
  p.grad = grad.data_ptr();
  p.grad_output = go.data_ptr();
  p.grad_scale = grad_scale.data_ptr();
  p.out = out.data_ptr();
  p.numel = grad.numel();
  p.reduced = reduction != kNone;
  if (!p.reduced && class_dim_reduced) {
    const bool unbatched = grad.dim() == 1;
    p.classes = unbatched ? grad.size(0) : grad.size(1);
    p.spatial = unbatched ? 1 : (grad.size(0) * p.classes == 0 ? 1 : grad.numel() / (grad.size(0) * p.classes));
  }
  cuda::launch_apply_grad_output(p, device_index(grad), current_stream(grad));
}

at::Tensor focal_bwd_cuda(const at::Tensor& grad, const at::Tensor& grad_output, const at::Tensor& grad_scale,
                          int64_t reduction, bool class_dim_reduced) {
  check_backward_args(grad, grad_output, grad_scale, reduction, class_dim_reduced, /*in_place=*/false);
  const at::Tensor g = grad.contiguous();
  at::Tensor out = at::empty_like(g, at::MemoryFormat::Contiguous);
  launch_backward(grad_output, g, grad_scale, reduction, class_dim_reduced, out);
  return out;
}

void focal_bwd_cuda_(const at::Tensor& grad, const at::Tensor& grad_output, const at::Tensor& grad_scale,
                     int64_t reduction, bool class_dim_reduced) {
  check_backward_args(grad, grad_output, grad_scale, reduction, class_dim_reduced, /*in_place=*/true);
  launch_backward(grad_output, grad, grad_scale, reduction, class_dim_reduced, /*out=*/grad);
}

}  // namespace
}  // namespace focal

#ifdef FOCAL_CUDA_EMULATE
#define FOCAL_CUDA_BACKEND_KEY CPU  // the emulated library runs on CPU tensors
#else
#define FOCAL_CUDA_BACKEND_KEY CUDA
#endif

FOCAL_TORCH_LIBRARY_IMPL(FOCAL_OPS_NAMESPACE, FOCAL_CUDA_BACKEND_KEY, m) {
  using focal::ForwardOp;
  constexpr auto elementwise = &focal::elementwise_fwd_cuda;
  m.impl("sigmoid_focal_fwd", &ForwardOp<elementwise, &focal::sigmoid_focal_call>::run);
  m.impl("binary_focal_fwd", &ForwardOp<elementwise, &focal::binary_focal_call>::run);
  m.impl("varifocal_fwd", &ForwardOp<elementwise, &focal::varifocal_call>::run);
  m.impl("quality_focal_fwd", &ForwardOp<elementwise, &focal::quality_focal_call>::run);
  m.impl("asymmetric_fwd", &ForwardOp<elementwise, &focal::asymmetric_call>::run);
  m.impl("softmax_focal_fwd", &ForwardOp<&focal::softmax_focal_fwd_cuda, &focal::softmax_focal_call>::run);
  m.impl("focal_bwd", &focal::focal_bwd_cuda);
  m.impl("focal_bwd_", &focal::focal_bwd_cuda_);
}

FOCAL_TORCH_LIBRARY_FRAGMENT(FOCAL_OPS_NAMESPACE, m) {
  // Launches issued by this library's CUDA launchers so far (emulated ones in the emulated library).
  m.def("kernel_launches() -> int", [] { return focal::cuda::kernel_launches(); });
  // Occupancy queries issued so far: once per kernel instantiation and device, not per launch (host overhead).
  m.def("occupancy_queries() -> int", [] { return focal::cuda::occupancy_queries(); });
}
