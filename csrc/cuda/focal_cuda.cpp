// CUDA backend: checks arguments (the shared checks), allocates outputs on the current stream's device,
// launches the fused forward kernels and registers all six ops. The backward ops are the shared
// device-agnostic ATen glue (grad * grad_output * grad_scale): one elementwise pass, no host read.
#include "focal_cuda_kernels.h"

#include "../focal_math.h"
#include "../ops.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

namespace focal {
namespace {

using cuda::ElementwiseParams;
using cuda::ReductionBuffers;
using cuda::SoftmaxParams;

// Tensors behind a forward call's reduction: per-block partials and the two opmath scalars.
struct ReductionTensors {
  at::Tensor partials;
  at::Tensor sums;  // [loss_sum, count]
  ReductionBuffers buffers() const {
    ReductionBuffers b;
    if (!partials.defined()) return b;
    b.partials = partials.data_ptr<double>();
    b.slots = partials.numel() / 2;
    b.loss_sum = sums.data_ptr();
    b.count = static_cast<char*>(sums.data_ptr()) + sums.element_size();
    return b;
  }
  at::Tensor loss_sum() const { return sums.defined() ? sums.select(0, 0) : at::Tensor(); }
  at::Tensor count() const { return sums.defined() ? sums.select(0, 1) : at::Tensor(); }
};

ReductionTensors make_reduction(const at::Tensor& input, int64_t reduction, bool has_work) {
  ReductionTensors r;
  if (reduction == kNone) return r;  // finish_forward needs neither sum nor count
  const auto opmath = input.options().dtype(opmath_dtype(input));
  if (!has_work) {
    r.sums = at::zeros({2}, opmath);  // nothing is launched: sum 0 over 0 counted elements
    return r;
  }
  r.sums = at::empty({2}, opmath);
  r.partials = at::empty({2 * cuda::max_forward_blocks(input.get_device())}, input.options().dtype(at::kDouble));
  return r;
}

at::Tensor empty_if(bool wanted, at::IntArrayRef shape, const at::Tensor& like) {
  return wanted ? at::empty(shape, like.options()) : at::Tensor();
}

void* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr() : nullptr;
}

cudaStream_t current_stream(const at::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.get_device()).stream();
}

LossGradScale sigmoid_focal_fwd_cuda(const at::Tensor& input, const at::Tensor& target, double alpha, double gamma,
                                     int64_t reduction, int64_t ignore_index, double label_smoothing,
                                     const std::optional<at::Tensor>& normalizer, bool compute_grad) {
  check_sigmoid_args(input, target, reduction, normalizer);
  const c10::cuda::CUDAGuard device_guard(input.device());
  const at::Tensor x = input.contiguous();
  const at::Tensor t = target.contiguous();
  const at::Tensor loss_none = empty_if(reduction == kNone, x.sizes(), x);
  const at::Tensor grad = empty_if(compute_grad, x.sizes(), x);
  const bool index_target = t.scalar_type() == at::kLong;
  const ReductionTensors red = make_reduction(x, reduction, x.numel() > 0);

  ElementwiseParams p;
  p.dtype = x.scalar_type();
  p.input = x.data_ptr();
  p.target = t.data_ptr();
  p.loss = data_or_null(loss_none);
  p.grad = data_or_null(grad);
  p.numel = x.numel();
  p.classes = index_target ? x.size(-1) : 0;
  p.alpha = alpha;
  p.gamma = gamma;
  p.label_smoothing = label_smoothing;
  p.ignore_index = ignore_index;
  p.reduce = red.buffers();
  if (index_target) {
    cuda::launch_sigmoid_index_forward(p, x.get_device(), current_stream(x));
  } else {
    cuda::launch_sigmoid_dense_forward(p, x.get_device(), current_stream(x));
  }
  return finish_forward(x, loss_none, red.loss_sum(), red.count(), grad, normalizer, reduction);
}

LossGradScale softmax_focal_fwd_cuda(const at::Tensor& input, const at::Tensor& target,
                                     const std::optional<at::Tensor>& alpha, double gamma, int64_t reduction,
                                     int64_t ignore_index, double label_smoothing,
                                     const std::optional<at::Tensor>& normalizer, bool compute_grad) {
  check_softmax_args(input, target, alpha, reduction, normalizer);
  const c10::cuda::CUDAGuard device_guard(input.device());
  const at::Tensor x = input.contiguous();
  const at::Tensor t = target.contiguous();
  const at::Tensor alpha_c = alpha.has_value() ? alpha->contiguous() : at::Tensor();
  const bool unbatched = x.dim() == 1;
  const int64_t N = unbatched ? 1 : x.size(0);
  const int64_t C = unbatched ? x.size(0) : x.size(1);
  const int64_t S = (N == 0 || C == 0) ? 0 : x.numel() / (N * C);
  const at::Tensor loss_none = empty_if(reduction == kNone, t.sizes(), x);
  const at::Tensor grad = empty_if(compute_grad, x.sizes(), x);
  const ReductionTensors red = make_reduction(x, reduction, N * S > 0);

  SoftmaxParams p;
  p.dtype = x.scalar_type();
  p.input = x.data_ptr();
  p.target = t.data_ptr<int64_t>();
  p.alpha = data_or_null(alpha_c);
  p.loss = data_or_null(loss_none);
  p.grad = data_or_null(grad);
  p.batch = N;
  p.classes = C;
  p.spatial = S;
  p.gamma = gamma;
  p.label_smoothing = label_smoothing;
  p.ignore_index = ignore_index;
  p.reduce = red.buffers();
  cuda::launch_softmax_forward(p, x.get_device(), current_stream(x));
  return finish_forward(x, loss_none, red.loss_sum(), red.count(), grad, normalizer, reduction);
}

LossGradScale binary_focal_fwd_cuda(const at::Tensor& prob, const at::Tensor& target, double alpha, double gamma,
                                    int64_t reduction, bool compute_grad) {
  check_binary_args(prob, target, reduction);
  const c10::cuda::CUDAGuard device_guard(prob.device());
  const at::Tensor x = prob.contiguous();
  const at::Tensor t = target.contiguous();
  const at::Tensor loss_none = empty_if(reduction == kNone, x.sizes(), x);
  const at::Tensor grad = empty_if(compute_grad, x.sizes(), x);
  const ReductionTensors red = make_reduction(x, reduction, x.numel() > 0);

  ElementwiseParams p;
  p.dtype = x.scalar_type();
  p.input = x.data_ptr();
  p.target = t.data_ptr();
  p.loss = data_or_null(loss_none);
  p.grad = data_or_null(grad);
  p.numel = x.numel();
  p.alpha = alpha;
  p.gamma = gamma;
  p.reduce = red.buffers();
  cuda::launch_binary_forward(p, x.get_device(), current_stream(x));
  return finish_forward(x, loss_none, red.loss_sum(), red.count(), grad, std::nullopt, reduction);
}

}  // namespace
}  // namespace focal

TORCH_LIBRARY_IMPL(focal_cuda, CUDA, m) {
  m.impl("sigmoid_focal_fwd", &focal::sigmoid_focal_fwd_cuda);
  m.impl("softmax_focal_fwd", &focal::softmax_focal_fwd_cuda);
  m.impl("binary_focal_fwd", &focal::binary_focal_fwd_cuda);
  m.impl("sigmoid_focal_bwd", &focal::elementwise_focal_bwd);
  m.impl("softmax_focal_bwd", &focal::softmax_focal_bwd);
  m.impl("binary_focal_bwd", &focal::elementwise_focal_bwd);
}
