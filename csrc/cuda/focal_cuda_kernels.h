// Launchers of the CUDA forward kernels. Plain pointers and sizes only, so the .cu files need no ATen
// tensor headers (compile time); focal_cuda.cpp allocates the tensors, checks arguments and registers the ops.
#pragma once

#include "../loss_kinds.h"

#include <c10/core/ScalarType.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace focal::cuda {

// How a forward kernel finishes (docs/design.md §2: one launch per pass). Every block adds its loss sum and
// counted elements/rows into partials[block] / partials[slots + block]; the last block to take a ticket
// adds all partials in block order (deterministic) and writes the reduced loss and the gradient scale.
struct ReductionBuffers {
  int64_t reduction = 0;           // focal::Reduction
  double* partials = nullptr;      // 2 * slots doubles ('mean' / 'sum')
  int64_t slots = 0;               // >= the launch's blocks
  unsigned int* ticket = nullptr;  // zero at launch ('mean' / 'sum')
  int64_t fixed_count = -1;        // >= 0: the mean's count is this (dense losses count every element)
  const void* normalizer = nullptr;  // opmath scalar replacing the mean's count, or null
  void* loss = nullptr;              // reduced loss: input-dtype scalar ('mean' / 'sum')
  void* grad_scale = nullptr;        // opmath scalar, always written: 1/denominator for 'mean', else 1; over
                                     // grad_prescale
  double grad_prescale = 1.0;        // a power of two the stored gradient carries (fp16: see half_grad_prescale)
};

// Elementwise losses (ElementwiseLoss, WeightMode: focal_math.h): one traversal, one point function each.
struct ElementwiseParams {
  ElementwiseLoss loss_kind = ElementwiseLoss::kSigmoidFocal;
  c10::ScalarType dtype = c10::ScalarType::Float;  // of input, dense target, score, loss, grad
  const void* input = nullptr;                     // contiguous, (rows, C)
  const void* target = nullptr;                    // input dtype (dense) or int64 per row (class index)
  bool index_target = false;
  const void* score = nullptr;        // class-index targets: the target class's value per row (null: 1)
  const void* weight = nullptr;       // opmath, see WeightMode
  WeightMode weight_mode = WeightMode::kNone;
  const void* class_alpha = nullptr;  // sigmoid focal: C opmath alphas, or null (use alpha)
  void* loss = nullptr;               // per-element loss, or null
  void* grad = nullptr;               // per-element gradient, or null
  int64_t numel = 0;
  int64_t classes = 1;  // C, the size of the last dim
  int64_t ignore_index = -100;
  ElementwiseConstants constants;
  ReductionBuffers reduce;
};

// Softmax forward over input (N, C, S) contiguous (S = product of spatial dims, 1 for (N, C) and (C,)).
struct SoftmaxParams {
  c10::ScalarType dtype = c10::ScalarType::Float;
  const void* input = nullptr;
  const int64_t* target = nullptr;  // (N, S)
  const void* alpha = nullptr;      // C opmath weights, or null
  void* loss = nullptr;             // per-row loss (N, S), or null
  void* grad = nullptr;             // (N, C, S), or null
  int64_t batch = 0;                // N
  int64_t classes = 0;              // C
  int64_t spatial = 1;              // S
  const void* row_weight = nullptr;  // (N, S) opmath weights multiplying each row's loss and gradient, or null
  double gamma = 2.0;
  double label_smoothing = 0.0;
  double poly_epsilon = 0.0;
  int64_t ignore_index = -100;
  ReductionBuffers reduce;
};

// Upper bound on the blocks of any forward launch on `device` (the size of ReductionBuffers::slots).
int64_t max_forward_blocks(int device);

// Counts a kernel launch (focal_cuda::kernel_launches); FOCAL_LAUNCH calls it.
void count_launch();
int64_t kernel_launches();
// Occupancy queries issued so far (focal_cuda::occupancy_queries): one per kernel instantiation and device.
int64_t occupancy_queries();

// Each launcher issues exactly one kernel on `stream`, the fused forward. Nothing is launched for empty
// work; the caller fills the outputs then.
void launch_elementwise_forward(const ElementwiseParams& params, int device, cudaStream_t stream);
void launch_softmax_forward(const SoftmaxParams& params, int device, cudaStream_t stream);

// Backward: out = grad * grad_output, in float (opmath). grad_output is one scalar times grad_scale for
// 'mean'/'sum'; for 'none' it has the loss's shape: per element, or per row (classes > 0: the softmax loss,
// element i of grad (N, C, S) takes grad_output[(i / (C S)) S + i % S], with no division per element).
struct BackwardParams {
  c10::ScalarType dtype = c10::ScalarType::Float;
  const void* grad = nullptr;
  const void* grad_output = nullptr;
  const void* grad_scale = nullptr;  // opmath scalar (with 'none' too: 1 / the forward's grad_prescale)
  void* out = nullptr;
  int64_t numel = 0;
  bool reduced = true;
  int64_t classes = 0;  // C for the softmax 'none' broadcast, else 0
  int64_t spatial = 1;  // S
};
void launch_apply_grad_output(const BackwardParams& params, int device, cudaStream_t stream);

}  // namespace focal::cuda
