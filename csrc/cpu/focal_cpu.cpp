// CPU backend: prepares outputs, runs the kernels for the processor's instruction set, registers the ops.
#include "focal_cpu_kernels.h"
#include "backward.h"
#include "output_buffers.h"

#include "../grad_prescale.h"
#include "../ops.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Version.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <string>

namespace focal {
namespace {

// The kernels for the widest instruction set torch's own CPU kernels use here (so that they and the roofline
// torch.exp run the same vector width; ATEN_CPU_CAPABILITY lowers both), if the processor has it.
// FOCAL_CUDA_CPU_BASE=1 forces the portable kernels.
enum class KernelIsa { kBase, kAvx2, kAvx512 };

KernelIsa kernel_isa() {
#if defined(__x86_64__) || defined(_M_X64)
  static const KernelIsa isa = [] {
    if (std::getenv("FOCAL_CUDA_CPU_BASE") != nullptr) return KernelIsa::kBase;
    const std::string torch_isa = at::get_cpu_capability();
    if (torch_isa == "AVX512" && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
      return KernelIsa::kAvx512;
    }
    if ((torch_isa == "AVX512" || torch_isa == "AVX2") && __builtin_cpu_supports("avx2") &&
        __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
      return KernelIsa::kAvx2;
    }
    return KernelIsa::kBase;
  }();
  return isa;
#else
  return KernelIsa::kBase;
#endif
}

// Calls cpu::<isa>::name(args...) for kernel_isa().
#if defined(__x86_64__) || defined(_M_X64)
#define FOCAL_CPU_KERNEL(name, ...)                                                           \
  (kernel_isa() == KernelIsa::kAvx512 ? cpu::avx512::name(__VA_ARGS__)                        \
   : kernel_isa() == KernelIsa::kAvx2 ? cpu::avx2::name(__VA_ARGS__)                          \
                                      : cpu::base::name(__VA_ARGS__))
#else
#define FOCAL_CPU_KERNEL(name, ...) cpu::base::name(__VA_ARGS__)
#endif

// Output buffers of a forward call: per-element (or per-row) loss for 'none', gradient when asked.
cpu::ForwardArgs make_args(const at::Tensor& input, const at::Tensor& target, at::IntArrayRef loss_shape,
                           int64_t reduction, bool compute_grad) {
  cpu::ForwardArgs args;
  args.input = input.contiguous();
  args.target = target.contiguous();
  if (reduction == kNone) args.loss_none = cpu::empty_output(loss_shape, input.options());
  if (compute_grad) args.grad = cpu::empty_output(input.sizes(), input.options());
  return args;
}

// 'mean' folds 1/denominator into the gradient the kernel writes (reading a CPU value is no device sync),
// so backward with grad_output == 1 has nothing left to apply. The count comes from the targets alone.
template <typename CountFn>
double mean_grad_scale(int64_t reduction, const std::optional<at::Tensor>& normalizer, const CountFn& count) {
  if (reduction != kMean) return 1.0;
  if (normalizer.has_value()) return 1.0 / normalizer->item<double>();
  const int64_t n = count();
  return n > 0 ? 1.0 / static_cast<double>(n) : 0.0;
}

// A plain loop: a few microseconds, where target.ne(ignore_index).sum() costs milliseconds in ATen overhead.
int64_t counted_targets(const at::Tensor& target, int64_t ignore_index) {
  const at::Tensor t = target.contiguous();
  const int64_t* data = t.data_ptr<int64_t>();
  return std::count_if(data, data + t.numel(), [&](int64_t v) { return v != ignore_index; });
}

// The factor the kernel multiplies the gradient by (args.grad_scale) and the grad_scale backward applies: the
// mean's 1/denominator folded into the gradient, except for fp16, whose gradient carries its prescale instead
// (1/N in fp16 would flush small gradients to 0 before a loss scale arrives) and whose grad_scale holds both.
struct GradScales {
  double kernel;
  double backward;
};
GradScales grad_scales(const at::Tensor& input, double mean_scale, double prescale) {
  if (input.scalar_type() != at::kHalf) return {mean_scale, 1.0};
  return {prescale, mean_scale / prescale};
}

// (loss, grad, grad_scale) from the kernel's per-element loss ('none') or its loss sum and counted elements.
LossGradScale finish_forward(const cpu::ForwardArgs& args, const cpu::ForwardSums& sums,
                             const std::optional<at::Tensor>& normalizer, int64_t reduction, double backward_scale) {
  const at::Tensor& input = args.input;
  const auto opmath = input.options().dtype(opmath_dtype(input));
  const at::Tensor grad = args.grad.defined() ? args.grad : at::empty({0}, input.options());
  const at::Tensor scale = at::scalar_tensor(backward_scale, opmath);
  if (reduction == kNone) return {args.loss_none, grad, scale};
  const at::Tensor loss_sum = at::scalar_tensor(sums.loss_sum, opmath);
  if (reduction == kSum) return {loss_sum.to(input.scalar_type()), grad, scale};
  const at::Tensor denominator = normalizer.has_value()
                                     ? normalizer->to(opmath_dtype(input))
                                     : at::scalar_tensor(static_cast<double>(std::max<int64_t>(sums.count, 1)), opmath);
  return {(loss_sum / denominator).to(input.scalar_type()), grad, scale};
}

// prob must hold probabilities, as torch.nn.BCELoss requires on CPU: one read-only pass before any output is
// made (so a bad call changes nothing). NaN passes, and propagates to its own entry as a NaN logit does.
void check_prob_range(const at::Tensor& prob) {
  const at::Tensor p = prob.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "binary_focal_prob_check", [&] {
    const scalar_t* data = p.data_ptr<scalar_t>();
    const int64_t n = p.numel();
    using op_t = at::opmath_type<scalar_t>;
    const auto outside = [](scalar_t v) { return static_cast<op_t>(v) < op_t(0) || static_cast<op_t>(v) > op_t(1); };
    bool bad = false;
    for (int64_t i = 0; i < n; ++i) bad |= outside(data[i]);  // no early exit: the loop vectorises
    if (!bad) return;
    const int64_t i = std::find_if(data, data + n, outside) - data;
    TORCH_CHECK(false, "prob: expected probabilities in [0, 1] (as torch.nn.BCELoss), got ",
                static_cast<double>(data[i]), " at position ", i);
  });
}

// Every elementwise loss (ElementwiseOp registers the ops): counts the mean's denominator, runs the kernel.
LossGradScale elementwise_fwd_cpu(const ElementwiseCall& call) {
  const at::Tensor& input = call.input;
  if (call.kind == ElementwiseLoss::kBinaryFocal) check_prob_range(input);
  cpu::ForwardArgs args = make_args(input, call.target, input.sizes(), call.reduction, call.compute_grad);
  args.ignore_index = call.ignore_index;
  args.weight_mode = call.weight_mode;
  if (call.score.has_value()) args.score = call.score->contiguous();
  if (call.weight.has_value()) args.weight = call.weight->contiguous();
  if (call.class_alpha.has_value()) args.class_alpha = call.class_alpha->contiguous();
  const GradScales scales = grad_scales(input, mean_grad_scale(call.reduction, call.normalizer, [&] {
    const int64_t C = input.dim() == 0 ? 1 : input.size(-1);
    return call.target.scalar_type() == at::kLong ? counted_targets(call.target, call.ignore_index) * C
                                                  : input.numel();
  }), grad_prescale(call));
  args.grad_scale = scales.kernel;
  const auto sums = FOCAL_CPU_KERNEL(elementwise_forward, args, cpu::ElementwiseLossArgs{call.kind, call.constants});
  return finish_forward(args, sums, call.normalizer, call.reduction, scales.backward);
}

LossGradScale softmax_focal_fwd_cpu(const SoftmaxCall& call) {
  cpu::ForwardArgs args = make_args(call.input, call.target, call.target.sizes(), call.reduction, call.compute_grad);
  if (call.weight.has_value()) args.weight = call.weight->contiguous();
  args.poly_epsilon = call.poly_epsilon;
  args.gamma = call.gamma;
  args.label_smoothing = call.label_smoothing;
  args.ignore_index = call.ignore_index;
  const GradScales scales = grad_scales(call.input, mean_grad_scale(call.reduction, call.normalizer, [&] {
    return counted_targets(call.target, call.ignore_index);
  }), grad_prescale(call));
  args.grad_scale = scales.kernel;
  const at::Tensor alpha = call.class_alpha.has_value() ? call.class_alpha->contiguous() : at::Tensor();
  const auto sums = FOCAL_CPU_KERNEL(softmax_focal_forward, args, alpha);
  return finish_forward(args, sums, call.normalizer, call.reduction, scales.backward);
}

}  // namespace
}  // namespace focal

TORCH_LIBRARY_IMPL(focal_cuda, CPU, m) {
  using focal::ForwardOp;
  constexpr auto elementwise = &focal::elementwise_fwd_cpu;
  m.impl("sigmoid_focal_fwd", &ForwardOp<elementwise, &focal::sigmoid_focal_call>::run);
  m.impl("binary_focal_fwd", &ForwardOp<elementwise, &focal::binary_focal_call>::run);
  m.impl("varifocal_fwd", &ForwardOp<elementwise, &focal::varifocal_call>::run);
  m.impl("quality_focal_fwd", &ForwardOp<elementwise, &focal::quality_focal_call>::run);
  m.impl("asymmetric_fwd", &ForwardOp<elementwise, &focal::asymmetric_call>::run);
  m.impl("softmax_focal_fwd", &ForwardOp<&focal::softmax_focal_fwd_cpu, &focal::softmax_focal_call>::run);
  m.impl("focal_bwd", &focal::cpu::focal_bwd);
  m.impl("focal_bwd_", &focal::cpu::focal_bwd_);
}
