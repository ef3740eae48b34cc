// What ops.cpp gives every backend: the checked call of each forward op and the backward's argument check.
// Nothing here knows about a device or a formula.
#pragma once

#include "loss_kinds.h"

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

// The op library's namespace: focal_cuda, or focal_cuda_emulated for the build that runs the CUDA kernels
// through the SIMT emulator (docs/design.md §6). The wrappers expand it before torch's macros paste it.
#ifndef FOCAL_OPS_NAMESPACE
#define FOCAL_OPS_NAMESPACE focal_cuda
#endif
#define FOCAL_TORCH_LIBRARY(ns, m) TORCH_LIBRARY(ns, m)
#define FOCAL_TORCH_LIBRARY_FRAGMENT(ns, m) TORCH_LIBRARY_FRAGMENT(ns, m)
#define FOCAL_TORCH_LIBRARY_IMPL(ns, key, m) TORCH_LIBRARY_IMPL(ns, key, m)

namespace focal {

// (loss, grad, grad_scale): see the schemas in ops.cpp.
using LossGradScale = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// float64 for double inputs, float32 otherwise: the dtype of the math, of alpha, weight and grad_scale.
at::ScalarType opmath_dtype(const at::Tensor& input);

// The schemas' weight_mode codes (functional.py decides the layout; the op checks the weight's shape against it).
enum WeightModeCode : int64_t { kWeightPerElement = 0, kWeightPerRow = 1, kWeightPerClass = 2 };

// One checked elementwise forward call (sigmoid focal, binary focal, varifocal, quality focal, asymmetric): what
// every backend's elementwise forward takes.
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

// One checked softmax forward call: input (N, C, d1..dk) or (C,), class-index target of the other dims.
struct SoftmaxCall {
  at::Tensor input;
  at::Tensor target;
  std::optional<at::Tensor> class_alpha;  // C per-class alphas
  std::optional<at::Tensor> weight;       // one per row: the target's shape
  std::optional<at::Tensor> normalizer;
  double gamma = 2.0;
  double label_smoothing = 0.0;
  double poly_epsilon = 0.0;
  int64_t reduction = 1;
  int64_t ignore_index = -100;
  bool compute_grad = false;
};

// The forward ops' schemas (ops.cpp) turned into checked calls, once for every backend. Each check throws a c10
// error (ValueError/TypeError/RuntimeError in Python) naming the argument, what was expected and what was given.
ElementwiseCall sigmoid_focal_call(const at::Tensor& input, const at::Tensor& target, std::optional<double> alpha,
                                   double gamma, int64_t reduction, int64_t ignore_index, double label_smoothing,
                                   const std::optional<at::Tensor>& normalizer, bool compute_grad,
                                   const std::optional<at::Tensor>& weight, int64_t weight_mode,
                                   const std::optional<at::Tensor>& class_alpha, double poly_epsilon);
ElementwiseCall binary_focal_call(const at::Tensor& prob, const at::Tensor& target, std::optional<double> alpha,
                                  double gamma, int64_t reduction, bool compute_grad,
                                  const std::optional<at::Tensor>& weight, int64_t weight_mode);
ElementwiseCall varifocal_call(const at::Tensor& input, const at::Tensor& target,
                               const std::optional<at::Tensor>& score, double alpha, double gamma, bool iou_weighted,
                               int64_t reduction, int64_t ignore_index, const std::optional<at::Tensor>& normalizer,
                               bool compute_grad, const std::optional<at::Tensor>& weight, int64_t weight_mode);
ElementwiseCall quality_focal_call(const at::Tensor& input, const at::Tensor& target,
                                   const std::optional<at::Tensor>& score, double beta, int64_t reduction,
                                   int64_t ignore_index, const std::optional<at::Tensor>& normalizer,
                                   bool compute_grad, const std::optional<at::Tensor>& weight, int64_t weight_mode);
ElementwiseCall asymmetric_call(const at::Tensor& input, const at::Tensor& target, double gamma_pos,
                                double gamma_neg, double clip, double eps, bool detach_modulation, int64_t reduction,
                                int64_t ignore_index, const std::optional<at::Tensor>& normalizer, bool compute_grad,
                                const std::optional<at::Tensor>& weight, int64_t weight_mode);
SoftmaxCall softmax_focal_call(const at::Tensor& input, const at::Tensor& target,
                               const std::optional<at::Tensor>& class_alpha, double gamma, int64_t reduction,
                               int64_t ignore_index, double label_smoothing,
                               const std::optional<at::Tensor>& normalizer, bool compute_grad,
                               const std::optional<at::Tensor>& weight, double poly_epsilon);

// A forward op as a backend registers it: &ForwardOp<&its_forward, &varifocal_call>::run takes the schema's
// arguments, builds the checked call and runs the backend's forward on it.
template <auto forward, auto make_call>
struct ForwardOp;
template <typename Call, LossGradScale (*forward)(const Call&), typename... Args, Call (*make_call)(Args...)>
struct ForwardOp<forward, make_call> {
  static LossGradScale run(Args... args) { return forward(make_call(args...)); }
};

// Checks the focal_bwd / focal_bwd_ arguments: grad_output is 0-dim for 'mean'/'sum', else the loss's shape (the
// gradient's without dim 1 for the softmax loss: class_dim_reduced); grad_scale a 0-dim opmath tensor. in_place:
// also grad contiguous and grad_output of grad's dtype (grad holds the result).
void check_backward_args(const at::Tensor& grad, const at::Tensor& grad_output, const at::Tensor& grad_scale,
                         int64_t reduction, bool class_dim_reduced, bool in_place);

}  // namespace focal
