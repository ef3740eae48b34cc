// Declarations shared by ops.cpp and the backends: argument checks and the tensor-level glue that turns a
// kernel's loss sum and count into the op's outputs. Nothing here knows about a device.
#pragma once

#include "loss_kinds.h"

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

// The op library's namespace: focal_cuda, or focal_cuda_emulated for the build that runs the CUDA kernels
// through the SIMT emulator (design.md §6). The wrappers expand it before torch's macros paste it.
#ifndef FOCAL_OPS_NAMESPACE
#define FOCAL_OPS_NAMESPACE focal_cuda
#endif
#define FOCAL_TORCH_LIBRARY(ns, m) TORCH_LIBRARY(ns, m)
#define FOCAL_TORCH_LIBRARY_FRAGMENT(ns, m) TORCH_LIBRARY_FRAGMENT(ns, m)
#define FOCAL_TORCH_LIBRARY_IMPL(ns, key, m) TORCH_LIBRARY_IMPL(ns, key, m)

namespace focal {

// (loss, grad, grad_scale): see the schemas in ops.cpp.
using LossGradScale = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// Each throws a c10 error (ValueError/TypeError/RuntimeError in Python) naming the argument.
void check_sigmoid_args(const at::Tensor& input, const at::Tensor& target, int64_t reduction,
                        const std::optional<at::Tensor>& normalizer);
void check_softmax_args(const at::Tensor& input, const at::Tensor& target, const std::optional<at::Tensor>& alpha,
                        int64_t reduction, const std::optional<at::Tensor>& normalizer);
void check_binary_args(const at::Tensor& prob, const at::Tensor& target, int64_t reduction);
// grad_output of a backward op: a 0-dim tensor for 'mean'/'sum', else the loss's shape (the target's shape
// for the softmax loss, class_dim_reduced).
void check_backward_args(const at::Tensor& grad_output, const at::Tensor& grad, const at::Tensor& grad_scale,
                         int64_t reduction, bool class_dim_reduced);
// The in-place backward's: check_backward_args, and grad contiguous with grad_output's dtype (it holds the result).
void check_backward_in_place_args(const at::Tensor& grad, const at::Tensor& grad_output, const at::Tensor& grad_scale,
                                  int64_t reduction, bool class_dim_reduced);

// The optional inputs of the elementwise losses (design.md §5). check_elementwise_extras checks them against
// input/target and returns the weight's mode: a weight has the input's shape (per element),
// input.shape[:-1] + (1,) (per row) or (1, ..., 1, C) (per class); functional.py brings any broadcastable
// weight to one of these.
WeightMode check_elementwise_extras(const at::Tensor& input, const at::Tensor& target,
                                    const std::optional<at::Tensor>& score, const std::optional<at::Tensor>& weight,
                                    const std::optional<at::Tensor>& class_alpha);
// A softmax weight has the target's shape (one per row).
void check_softmax_weight(const at::Tensor& input, const at::Tensor& target, const std::optional<at::Tensor>& weight);

// One checked elementwise forward call: what every backend's elementwise kernel takes.
struct ElementwiseCall {
  ElementwiseLoss kind = ElementwiseLoss::kSigmoidFocal;
  ElementwiseConstants constants;
  at::Tensor input;
  at::Tensor target;
  std::optional<at::Tensor> score;
  std::optional<at::Tensor> weight;
  WeightMode weight_mode = WeightMode::kNone;
  std::optional<at::Tensor> class_alpha;
  std::optional<at::Tensor> normalizer;
  int64_t reduction = 1;
  int64_t ignore_index = -100;
  bool compute_grad = false;
};

// The elementwise ops' schemas (ops.cpp) turned into a checked ElementwiseCall, once for every backend.
ElementwiseCall sigmoid_focal_call(const at::Tensor& input, const at::Tensor& target, double alpha, double gamma,
                                   int64_t reduction, int64_t ignore_index, double label_smoothing,
                                   const std::optional<at::Tensor>& normalizer, bool compute_grad,
                                   const std::optional<at::Tensor>& weight,
                                   const std::optional<at::Tensor>& class_alpha, double poly_epsilon);
ElementwiseCall binary_focal_call(const at::Tensor& prob, const at::Tensor& target, double alpha, double gamma,
                                  int64_t reduction, bool compute_grad, const std::optional<at::Tensor>& weight);
ElementwiseCall varifocal_call(const at::Tensor& input, const at::Tensor& target,
                               const std::optional<at::Tensor>& score, double alpha, double gamma, bool iou_weighted,
                               int64_t reduction, int64_t ignore_index, const std::optional<at::Tensor>& normalizer,
                               bool compute_grad, const std::optional<at::Tensor>& weight);
ElementwiseCall quality_focal_call(const at::Tensor& input, const at::Tensor& target,
                                   const std::optional<at::Tensor>& score, double beta, int64_t reduction,
                                   int64_t ignore_index, const std::optional<at::Tensor>& normalizer,
                                   bool compute_grad, const std::optional<at::Tensor>& weight);
ElementwiseCall asymmetric_call(const at::Tensor& input, const at::Tensor& target, double gamma_pos,
                                double gamma_neg, double clip, double eps, bool detach_modulation, int64_t reduction,
                                int64_t ignore_index, const std::optional<at::Tensor>& normalizer, bool compute_grad,
                                const std::optional<at::Tensor>& weight);

// The op `make_call` builds a call for, run by a backend's elementwise `forward`: a backend registers
// &ElementwiseOp<&its_forward, &varifocal_call>::run, so the schema-to-call code exists once.
using ElementwiseForward = LossGradScale (*)(const ElementwiseCall&);
template <ElementwiseForward forward, auto make_call>
struct ElementwiseOp;
template <ElementwiseForward forward, typename... Args, ElementwiseCall (*make_call)(Args...)>
struct ElementwiseOp<forward, make_call> {
  static LossGradScale run(Args... args) { return forward(make_call(args...)); }
};

// float64 for double inputs, float32 otherwise: the dtype of the math, of alpha and of grad_scale.
at::ScalarType opmath_dtype(const at::Tensor& input);

// Half-precision gradients survive the loss scale (design.md §2): the forward stores an fp16 gradient times a
// power of two, the largest that keeps every unit-weight gradient below 2**13 (fp16's largest is 65504: room for
// weights up to 8), and grad_scale carries its inverse in float, so a gradient below fp16's range is still a
// normal fp16 when grad_output (a GradScaler's 2**15, a sum) arrives. 1 for other dtypes and for an unbounded
// gradient. The bounds are of |d loss / d x| per element for unit weight and alpha in [0, 1].
double grad_prescale(at::ScalarType dtype, double gradient_bound);
double elementwise_gradient_bound(ElementwiseLoss kind, const ElementwiseConstants& constants);
double softmax_gradient_bound(double gamma, double poly_epsilon);

// Finishes a forward pass from the kernel's per-element loss (reduction 'none') or its loss sum and counted
// elements (0-dim opmath tensors): returns (loss, grad, grad_scale) with grad_scale the factor backward applies
// (the mean's 1/denominator unless the kernel folded it into grad, over the gradient's prescale).
LossGradScale finish_forward(const at::Tensor& input, const at::Tensor& loss_none, const at::Tensor& loss_sum,
                             const at::Tensor& count, const at::Tensor& grad,
                             const std::optional<at::Tensor>& normalizer, int64_t reduction, double grad_scale);

// The backward ops: grad * grad_output (grad_output broadcast over dim 1 when class_dim_reduced, i.e. the
// softmax 'none' loss), or grad * (grad_output * grad_scale) for 'mean'/'sum'. One pass, no host read.
at::Tensor apply_grad_output(const at::Tensor& grad_output, const at::Tensor& grad, const at::Tensor& grad_scale,
                             int64_t reduction, bool class_dim_reduced);
// apply_grad_output's result written over grad (the apply_grad_output_ op).
void apply_grad_output_(const at::Tensor& grad, const at::Tensor& grad_output, const at::Tensor& grad_scale,
                        int64_t reduction, bool class_dim_reduced);
at::Tensor elementwise_focal_bwd(const at::Tensor& grad_output, const at::Tensor& grad, const at::Tensor& grad_scale,
                                 int64_t reduction);
at::Tensor softmax_focal_bwd(const at::Tensor& grad_output, const at::Tensor& grad, const at::Tensor& grad_scale,
                             int64_t reduction);

}  // namespace focal
