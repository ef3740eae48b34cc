// CPU forward kernels, declared once and compiled per instruction set (kernels_base.cpp everywhere;
// kernels_avx2.cpp and kernels_avx512.cpp on x86-64); the CPU backend picks one at run time.
#pragma once

#include "../loss_kinds.h"

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace focal::cpu {

// What a forward pass leaves besides the per-element outputs: the sum of all losses (in double, summed
// over fixed-size blocks in order, so it does not depend on the thread count) and the number of counted
// (non-ignored) elements or rows, the "mean" denominator.
struct ForwardSums {
  double loss_sum = 0.0;
  int64_t count = 0;
};

// Common arguments. Tensors are contiguous; loss_none / grad are undefined when not wanted.
struct ForwardArgs {
  at::Tensor input;
  at::Tensor target;
  at::Tensor loss_none;  // per-element (sigmoid, binary) or per-row (softmax) loss, input dtype
  at::Tensor grad;       // d(sum of losses)/d(input), input dtype
  double grad_scale = 1.0;  // grad is written pre-multiplied by this (the mean's 1/denominator)
  double gamma = 2.0;
  double label_smoothing = 0.0;
  int64_t ignore_index = -100;
  // The focal family (docs/design.md §5); all optional (undefined tensors), in the opmath dtype but score.
  at::Tensor score;        // class-index targets: the target class's value per row (input dtype)
  at::Tensor weight;       // see weight_mode
  WeightMode weight_mode = WeightMode::kNone;
  at::Tensor class_alpha;  // sigmoid focal: C per-class alphas
  double poly_epsilon = 0.0;  // softmax (the elementwise losses read ElementwiseConstants)
};

// An elementwise loss and its constants (ElementwiseLoss, focal_math.h).
struct ElementwiseLossArgs {
  ElementwiseLoss kind = ElementwiseLoss::kSigmoidFocal;
  ElementwiseConstants constants;
};

#define FOCAL_DECLARE_CPU_KERNELS(NS)                                                                     \
  namespace NS {                                                                                          \
  /* every elementwise loss: sigmoid focal, binary focal, varifocal, quality focal, asymmetric */         \
  ForwardSums elementwise_forward(const ForwardArgs& args, const ElementwiseLossArgs& loss);             \
  /* alpha: undefined or C weights in the opmath dtype */                                                 \
  ForwardSums softmax_focal_forward(const ForwardArgs& args, const at::Tensor& alpha);                   \
  }
FOCAL_DECLARE_CPU_KERNELS(base)
FOCAL_DECLARE_CPU_KERNELS(avx2)
FOCAL_DECLARE_CPU_KERNELS(avx512)
#undef FOCAL_DECLARE_CPU_KERNELS

}  // namespace focal::cpu
