// Device helpers shared by the CUDA kernels: the launch macro, dtype dispatch, 128-bit vector access and
// occupancy-based grid sizing (reductions: reduce.cuh). Compiled by nvcc, or by g++ against the SIMT emulator
// (FOCAL_CUDA_EMULATE, docs/design.md §6).
#pragma once

#ifdef FOCAL_CUDA_EMULATE
#ifndef FOCAL_SIMT_EMULATOR
#error "the emulated build compiles csrc/cuda through csrc/emulate/*_emulated.cpp, which include simt.h first"
#endif
#else
#include <c10/cuda/CUDAException.h>
#endif

#include "focal_cuda_kernels.h"

// The kernels take focal_math.h's device build: float exp / log / reciprocal on the special-function unit.
#define FOCAL_DEVICE_APPROX_MATH
#include "../focal_math.h"
#include "../gamma_dispatch.h"

#include <ATen/OpMathType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif
#include <cstring>

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

// The digits a result stored as scalar_t needs (focal_math.h): fp16 / bf16 round to 11 / 8 significant bits.
template <typename scalar_t>
constexpr Precision precision_of() {
  return std::is_same_v<scalar_t, c10::BFloat16> ? Precision::kStorageBF16
         : std::is_same_v<scalar_t, c10::Half>   ? Precision::kStorage16
                                                 : Precision::kFull;
}

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

// A consecutive 128-bit vectors as one group of A * vector_width elements (A 16-byte loads or stores).
template <int A, typename scalar_t>
using VectorGroup = AlignedVector<scalar_t, A * vector_width<scalar_t>()>;

template <int A, typename scalar_t>
__device__ __forceinline__ VectorGroup<A, scalar_t> load_group(const scalar_t* p) {
  constexpr int V = vector_width<scalar_t>();
  if constexpr (A == 1) {
    return load_vector(p);
  } else {
    VectorGroup<A, scalar_t> g;
#pragma unroll
    for (int a = 0; a < A; ++a) store_vector(g.val + a * V, load_vector(p + a * V));
    return g;
  }
}

template <int A, typename scalar_t>
__device__ __forceinline__ void store_group(scalar_t* p, const VectorGroup<A, scalar_t>& g) {
  constexpr int V = vector_width<scalar_t>();
  if constexpr (A == 1) {
    store_vector(p, g);
  } else {
#pragma unroll
    for (int a = 0; a < A; ++a) store_vector(p + a * V, load_vector(g.val + a * V));
  }
}

// W elements to float (opmath) and back, two at a time for the 16-bit types on the device: a bf16 pair is one
// 32-bit word (low: word * 2**16, high: word & 0xffff0000; `keep` false zeroes both through the multiplier and the
// mask, no select), and one F2FP packs two rounded floats (round to nearest even, as the per-element conversion).
template <int W, typename scalar_t>
__device__ __forceinline__ void to_opmath(const scalar_t* in, opmath_t<scalar_t>* out, bool keep = true) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16> && W % 2 == 0) {
    const uint32_t low_scale = keep ? 0x10000u : 0u, high_mask = keep ? 0xffff0000u : 0u;
#pragma unroll
    for (int k = 0; k < W; k += 2) {
      uint32_t word;
      memcpy(&word, in + k, sizeof word);
      out[k] = __uint_as_float(word * low_scale);
      out[k + 1] = __uint_as_float(word & high_mask);
    }
    return;
  }
#endif
  // keep false: zeros
#pragma unroll
  for (int k = 0; k < W; ++k) out[k] = keep ? static_cast<opmath_t<scalar_t>>(in[k]) : opmath_t<scalar_t>(0);
}

template <int W, typename scalar_t>
__device__ __forceinline__ void from_opmath(const opmath_t<scalar_t>* in, scalar_t* out) {
#if defined(__CUDA_ARCH__)
  if constexpr ((std::is_same_v<scalar_t, c10::BFloat16> || std::is_same_v<scalar_t, c10::Half>) && W % 2 == 0) {
#pragma unroll
    for (int k = 0; k < W; k += 2) {
      if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
        const __nv_bfloat162 pair = __floats2bfloat162_rn(in[k], in[k + 1]);
        memcpy(out + k, &pair, sizeof pair);
      } else {
        const __half2 pair = __floats2half2_rn(in[k], in[k + 1]);
        memcpy(out + k, &pair, sizeof pair);
      }
    }
    return;
  }
#endif
#pragma unroll
  for (int k = 0; k < W; ++k) out[k] = static_cast<scalar_t>(in[k]);
}

C10_HOST_DEVICE inline bool is_vector_aligned(const void* p) {
  return p == nullptr || reinterpret_cast<uintptr_t>(p) % kVectorBytes == 0;
}

int sm_count(int device);

inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Resident blocks per SM of `kernel` at `block_threads` on `device`: queried once per (kernel, block size,
// device) and cached (launch.cu), so a launch costs no occupancy query after the first.
int occupancy_blocks_per_sm(const void* kernel, int block_threads, int device);

// Grid for `work_items` items handled `items_per_block` at a time by `kernel` at `block_threads` per block:
// no more blocks than can be resident at once (grid-stride loops do the rest), from the kernel's occupancy.
template <typename Kernel>
int grid_for(int64_t work_items, int64_t items_per_block, int device, Kernel kernel, int block_threads) {
  const int per_sm = occupancy_blocks_per_sm(reinterpret_cast<const void*>(kernel), block_threads, device);
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

}  // namespace focal::cuda
