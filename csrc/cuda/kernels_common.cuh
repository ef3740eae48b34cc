// Device helpers shared by the CUDA forward kernels: dtype/gamma dispatch, 128-bit vector access, the
// deterministic two-stage reduction (per-block partials, then one block adds them in order), launch sizing.
#pragma once

#include "focal_cuda_kernels.h"

#include "../focal_math.h"

#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cub/block/block_reduce.cuh>

#include <cstdint>
#include <limits>
#include <type_traits>

namespace focal::cuda {

template <typename scalar_t>
using opmath_t = at::opmath_type<scalar_t>;

// Threads per block of the elementwise, warp-per-row and spatial kernels.
constexpr int kThreads = 256;
// Threads per block of the block-per-row softmax kernel (large C).
constexpr int kRowBlockThreads = 512;
// Resident-block budget per SM used to size grid-stride grids (and the partials buffer).
constexpr int kBlocksPerSm = 8;
constexpr int kVectorBytes = 16;

// Elements of scalar_t in one 128-bit access.
template <typename scalar_t>
constexpr int vector_width() {
  return kVectorBytes / static_cast<int>(sizeof(scalar_t));
}

template <typename scalar_t, int N>
struct alignas(sizeof(scalar_t) * N) AlignedVector {
  scalar_t val[N];
};

template <typename scalar_t>
using Vector = AlignedVector<scalar_t, vector_width<scalar_t>()>;

template <typename scalar_t>
__device__ __forceinline__ Vector<scalar_t> load_vector(const scalar_t* p) {
  return *reinterpret_cast<const Vector<scalar_t>*>(p);
}

template <typename scalar_t>
__device__ __forceinline__ void store_vector(scalar_t* p, const Vector<scalar_t>& v) {
  *reinterpret_cast<Vector<scalar_t>*>(p) = v;
}

inline bool is_vector_aligned(const void* p) {
  return p == nullptr || reinterpret_cast<uintptr_t>(p) % kVectorBytes == 0;
}

int sm_count(int device);

inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Grid for `work_items` items handled `items_per_block` at a time, capped for grid-stride loops.
inline int grid_for(int64_t work_items, int64_t items_per_block, int device, int blocks_per_sm = kBlocksPerSm) {
  const int64_t needed = ceil_div(work_items, items_per_block);
  const int64_t cap = static_cast<int64_t>(sm_count(device)) * blocks_per_sm;
  return static_cast<int>(needed < cap ? (needed < 1 ? 1 : needed) : cap);
}

// Calls f(scalar_t{}) for the four floating dtypes.
template <typename F>
void dispatch_floating(c10::ScalarType dtype, const char* name, const F& f) {
  switch (dtype) {
    case c10::ScalarType::Float:
      f(float{});
      break;
    case c10::ScalarType::Double:
      f(double{});
      break;
    case c10::ScalarType::Half:
      f(c10::Half{});
      break;
    case c10::ScalarType::BFloat16:
      f(c10::BFloat16{});
      break;
    default:
      TORCH_CHECK_TYPE(false, name, ": expected float16, bfloat16, float32 or float64 input, got ", dtype);
  }
}

// ---- deterministic reduction -------------------------------------------------------------------------------

struct SumCount {
  double sum;
  double count;
};

struct SumCountAdd {
  __device__ __forceinline__ SumCount operator()(const SumCount& a, const SumCount& b) const {
    return {a.sum + b.sum, a.count + b.count};
  }
};

// Every thread of the block calls this once at the end of a forward kernel; thread 0 stores the block's
// loss sum and count into its own slot (no atomics, so the result is the same on every run).
template <int BLOCK, typename acc_t>
__device__ __forceinline__ void store_block_partial(acc_t thread_sum, int64_t thread_count, double* partials,
                                                    int64_t slots) {
  using BlockReduce = cub::BlockReduce<SumCount, BLOCK>;
  __shared__ typename BlockReduce::TempStorage temp;
  const SumCount total =
      BlockReduce(temp).Reduce(SumCount{static_cast<double>(thread_sum), static_cast<double>(thread_count)},
                               SumCountAdd{});
  if (threadIdx.x == 0) {
    partials[blockIdx.x] = total.sum;
    partials[slots + blockIdx.x] = total.count;
  }
}

// Adds the `blocks` partials in a fixed order and writes loss_sum and count (opmath dtype). A count of
// fixed_count >= 0 replaces the summed one (elementwise dense losses count every element).
void launch_combine_partials(const ReductionBuffers& reduce, int blocks, bool opmath_is_double, int64_t fixed_count,
                             cudaStream_t stream);

}  // namespace focal::cuda
