// Launchers of the CUDA forward kernels. Plain pointers and sizes only, so the .cu files need no ATen
// tensor headers (compile time); focal_cuda.cpp allocates the tensors, checks arguments and registers the ops.
#pragma once

#include <c10/core/ScalarType.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace focal::cuda {

// Where a forward kernel leaves its reduction. Each block writes its loss sum to partials[block] and its
// counted elements/rows to partials[slots + block] (double); a second one-block kernel adds them in
// block order and writes loss_sum / count (0-dim, opmath dtype). All null for reduction 'none'.
struct ReductionBuffers {
  double* partials = nullptr;  // 2 * slots doubles
  int64_t slots = 0;           // >= max_forward_blocks(device)
  void* loss_sum = nullptr;    // opmath scalar
  void* count = nullptr;       // opmath scalar
};

// Elementwise forward: sigmoid (dense or class-index targets) and binary.
struct ElementwiseParams {
  c10::ScalarType dtype = c10::ScalarType::Float;  // of input, target (dense), loss, grad
  const void* input = nullptr;                     // contiguous
  const void* target = nullptr;                    // input dtype (dense) or int64 per row (class index)
  void* loss = nullptr;                            // per-element loss, or null
  void* grad = nullptr;                            // per-element gradient, or null
  int64_t numel = 0;
  int64_t classes = 0;  // C (class-index targets only)
  double alpha = -1.0;  // < 0: disabled
  double gamma = 2.0;
  double label_smoothing = 0.0;
  int64_t ignore_index = -100;
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
  double gamma = 2.0;
  double label_smoothing = 0.0;
  int64_t ignore_index = -100;
  ReductionBuffers reduce;
};

// Upper bound on the blocks of any forward launch on `device` (the size of ReductionBuffers::slots).
int64_t max_forward_blocks(int device);

// Each launcher issues the fused forward kernel and, when reduce.partials is set, the combine kernel, on
// `stream`. Nothing is launched for empty work; the caller fills loss_sum/count then.
void launch_sigmoid_dense_forward(const ElementwiseParams& params, int device, cudaStream_t stream);
void launch_sigmoid_index_forward(const ElementwiseParams& params, int device, cudaStream_t stream);
void launch_binary_forward(const ElementwiseParams& params, int device, cudaStream_t stream);
void launch_softmax_forward(const SoftmaxParams& params, int device, cudaStream_t stream);

}  // namespace focal::cuda
