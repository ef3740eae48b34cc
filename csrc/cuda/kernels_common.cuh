// Device helpers shared by the CUDA kernels: the launch macro, dtype/gamma dispatch, 128-bit vector access,
// deterministic block reductions and the last-block finish of a forward pass, occupancy-based grid sizing.
// Compiled by nvcc, or by g++ against the SIMT emulator (FOCAL_CUDA_EMULATE, design.md §6).
#pragma once

#ifdef FOCAL_CUDA_EMULATE
#include "../emulate/simt.h"
#else
#include <c10/cuda/CUDAException.h>
#endif

#include "focal_cuda_kernels.h"

// The kernels take focal_math.h's device build: float exp / log / reciprocal on the special-function unit.
#define FOCAL_DEVICE_APPROX_MATH
#include "../focal_math.h"

#include <ATen/OpMathType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

// The one way kernels are launched: FOCAL_LAUNCH(grid, block, smem, stream, kernel)(args...). It counts the
// launch, and runs the kernel through the emulator when built for it.
#ifdef FOCAL_CUDA_EMULATE
#define FOCAL_LAUNCH(grid, block, smem, stream, ...) \
  (::focal::cuda::count_launch(),                    \
   ::focal::emu::launch(grid, block, smem, stream, [](const auto&... args) { __VA_ARGS__(args...); }))
#else
#define FOCAL_LAUNCH(grid, block, smem, stream, ...) \
  ::focal::cuda::count_launch(), __VA_ARGS__<<<grid, block, smem, stream>>>
#endif

#include <algorithm>
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
// Most resident blocks per SM any launch can have: 2048 threads per SM / kThreads (sizes the partials).
constexpr int kMaxBlocksPerSm = 2048 / kThreads;
constexpr int kVectorBytes = 16;
constexpr int kWarpSize = 32;

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

C10_HOST_DEVICE inline bool is_vector_aligned(const void* p) {
  return p == nullptr || reinterpret_cast<uintptr_t>(p) % kVectorBytes == 0;
}

int sm_count(int device);

inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Grid for `work_items` items handled `items_per_block` at a time by `kernel` at `block_threads` per block:
// no more blocks than can be resident at once (grid-stride loops do the rest), from the kernel's occupancy.
template <typename Kernel>
int grid_for(int64_t work_items, int64_t items_per_block, int device, Kernel kernel, int block_threads) {
  int per_sm = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, reinterpret_cast<const void*>(kernel),
                                                               block_threads, 0));
  const int64_t cap = static_cast<int64_t>(sm_count(device)) * std::min(std::max(per_sm, 1), kMaxBlocksPerSm);
  const int64_t needed = std::max<int64_t>(ceil_div(work_items, items_per_block), 1);
  return static_cast<int>(std::min(needed, cap));
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

// ---- deterministic reductions ----------------------------------------------------------------------------

struct SumCount {
  double sum;
  double count;
};

template <typename T>
__device__ __forceinline__ T shuffle_xor(T v, int lane_mask) {
  return __shfl_xor_sync(0xffffffffu, v, lane_mask, kWarpSize);
}
__device__ __forceinline__ SumCount shuffle_xor(SumCount v, int lane_mask) {
  return {shuffle_xor(v.sum, lane_mask), shuffle_xor(v.count, lane_mask)};
}

struct SumOp {
  template <typename T>
  __device__ __forceinline__ T operator()(const T& a, const T& b) const {
    return a + b;
  }
  __device__ __forceinline__ SumCount operator()(const SumCount& a, const SumCount& b) const {
    return {a.sum + b.sum, a.count + b.count};
  }
};

struct MaxOp {
  template <typename T>
  __device__ __forceinline__ T operator()(const T& a, const T& b) const {
    return b > a ? b : a;
  }
};

// op over all threads of the block, returned to every thread (bitwise the same in all: the xor butterfly
// combines the same pairs in every lane, and every thread adds the warp results in the same order).
// `scratch` is __shared__ with BLOCK / kWarpSize entries; it may be reused right after the call.
template <int BLOCK, typename T, typename Op>
__device__ __forceinline__ T block_all_reduce(T v, const Op& op, T* scratch) {
  static_assert(BLOCK % kWarpSize == 0, "whole warps only");
  constexpr int kWarps = BLOCK / kWarpSize;
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v = op(v, shuffle_xor(v, offset));
  if (threadIdx.x % kWarpSize == 0) scratch[threadIdx.x / kWarpSize] = v;
  __syncthreads();
  T total = scratch[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) total = op(total, scratch[w]);
  __syncthreads();  // scratch is free again
  return total;
}

// The end of every forward kernel; all threads of the block call it. 'none': block 0 writes grad_scale
// 1 / grad_prescale.
// 'mean'/'sum': each block leaves its partial sum and count, and the last block to finish adds them all in
// block order and writes the loss and grad_scale (in opmath: never rounded to the input dtype first).
template <int BLOCK, typename scalar_t>
__device__ __forceinline__ void finish_forward_block(double thread_sum, double thread_count,
                                                     const ReductionBuffers& r) {
  using op_t = opmath_t<scalar_t>;
  if (r.reduction == kNone) {
    if (blockIdx.x == 0 && threadIdx.x == 0) *static_cast<op_t*>(r.grad_scale) = static_cast<op_t>(1.0 / r.grad_prescale);
    return;
  }
  __shared__ SumCount scratch[BLOCK / kWarpSize];
  __shared__ bool is_last_block;
  const SumCount block_total = block_all_reduce<BLOCK>(SumCount{thread_sum, thread_count}, SumOp{}, scratch);
  if (threadIdx.x == 0) {
    r.partials[blockIdx.x] = block_total.sum;
    r.partials[r.slots + blockIdx.x] = block_total.count;
    __threadfence();  // the partials are visible to whichever block takes the last ticket
    is_last_block = atomicAdd(r.ticket, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!is_last_block) return;
  __threadfence();
  const volatile double* partials = r.partials;  // written by other blocks: bypass stale caches
  SumCount acc{0.0, 0.0};
  for (int64_t b = threadIdx.x; b < gridDim.x; b += BLOCK) {
    acc.sum += partials[b];
    acc.count += partials[r.slots + b];
  }
  const SumCount total = block_all_reduce<BLOCK>(acc, SumOp{}, scratch);
  if (threadIdx.x != 0) return;
  double loss = total.sum, scale = 1.0;
  if (r.reduction == kMean) {
    const double count = r.fixed_count >= 0 ? static_cast<double>(r.fixed_count) : total.count;
    if (r.normalizer != nullptr) {
      const double denominator = static_cast<double>(*static_cast<const op_t*>(r.normalizer));
      loss /= denominator;
      scale = 1.0 / denominator;
    } else {
      // A mean over nothing is 0 with a zero gradient (design.md §2), not NaN.
      loss = count > 0 ? loss / count : 0.0;
      scale = count > 0 ? 1.0 / count : 0.0;
    }
  }
  *static_cast<scalar_t*>(r.loss) = static_cast<scalar_t>(static_cast<op_t>(loss));
  *static_cast<op_t*>(r.grad_scale) = static_cast<op_t>(scale / r.grad_prescale);
}

}  // namespace focal::cuda
