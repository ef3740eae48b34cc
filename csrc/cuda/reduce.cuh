// Deterministic reductions of the CUDA kernels: the value types and their ops (sum and count, the softmax row's
// (max, excess) pair, two sums at once), the thread groups that share a row (a few lanes, a group of the block, a
// block column) with reduce(value, op) returned to every member, and the last-block finish of a forward pass.
// Every reduction folds in a fixed order: the result does not depend on timing.
#pragma once

#include "kernels_common.cuh"

namespace focal::cuda {

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


// ---- (max, excess) pairs: the row's log-sum-exp in one reduction ------------------------------------------------
// excess = sum exp(x - max) - 1, kept without the 1 the max adds: log_sum = log1p(excess) keeps every digit of a
// confident row's loss (log of a sum near 1 would lose them, and device lg2 is 2**-22 off near 1).

template <typename T>
struct MaxSum {
  T max;
  T excess;
};

// a's share of the sum at the max `to_max` >= a.max: its excess when a holds the max, else its whole sum rescaled.
template <typename T>
__device__ __forceinline__ T excess_at_max(const MaxSum<T>& a, T to_max) {
  return a.max == to_max ? a.excess : (T(1) + a.excess) * fm_exp(a.max - to_max);
}

// Commutative bitwise (max is, and the two shares are added), so xor butterflies agree in every lane.
struct MaxSumOp {
  template <typename T>
  __device__ __forceinline__ MaxSum<T> operator()(const MaxSum<T>& a, const MaxSum<T>& b) const {
    const T m = b.max > a.max ? b.max : a.max;
    // both at the max: each excess lacks its max's 1, the pair lacks one
    return {m, excess_at_max(a, m) + excess_at_max(b, m) + (a.max == m && b.max == m ? T(1) : T(0))};
  }
};

// Two sums at once (label smoothing: the loss and sum_c q_c h_c).
template <typename T>
struct SumPair {
  T a;
  T b;
};
struct SumPairOp {
  template <typename T>
  __device__ __forceinline__ SumPair<T> operator()(const SumPair<T>& x, const SumPair<T>& y) const {
    return {x.a + y.a, x.b + y.b};
  }
};

template <typename T>
__device__ __forceinline__ MaxSum<T> shuffle_xor(MaxSum<T> v, int lane_mask) {
  return {cuda::shuffle_xor(v.max, lane_mask), cuda::shuffle_xor(v.excess, lane_mask)};
}
template <typename T>
__device__ __forceinline__ SumPair<T> shuffle_xor(SumPair<T> v, int lane_mask) {
  return {cuda::shuffle_xor(v.a, lane_mask), cuda::shuffle_xor(v.b, lane_mask)};
}

// ---- thread groups that share a row: rank, width, reduce(value, op) returned to every member ------------------

// `lanes` (a power of two <= 32) consecutive lanes. The xor butterfly leaves the same value in every lane.
struct WarpLanes {
  int lane_rank;
  int lanes;
  __device__ __forceinline__ int rank() const { return lane_rank; }
  __device__ __forceinline__ int width() const { return lanes; }
  template <typename V, typename Op>
  __device__ __forceinline__ V reduce(V v, const Op& op) const {
    for (int offset = lanes / 2; offset > 0; offset /= 2) v = op(v, shuffle_xor(v, offset));
    return v;
  }
};

// `threads` (a power of two, 64..BLOCK) consecutive threads of the block; every group of the block reduces at the
// same time (the barriers are the block's). Warp results are folded in warp order: the same in every thread.
template <int BLOCK>
struct BlockThreads {
  int threads;
  __device__ __forceinline__ int rank() const { return threadIdx.x % threads; }
  __device__ __forceinline__ int width() const { return threads; }
  template <typename V, typename Op>
  __device__ __forceinline__ V reduce(V v, const Op& op) const {
    __shared__ V scratch[BLOCK / kWarpSize];
#pragma unroll
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v = op(v, shuffle_xor(v, offset));
    if (threadIdx.x % kWarpSize == 0) scratch[threadIdx.x / kWarpSize] = v;
    __syncthreads();
    const int warps = threads / kWarpSize;
    const int first = threadIdx.x / threads * warps;
    V total = scratch[first];
    for (int w = 1; w < warps; ++w) total = op(total, scratch[first + w]);
    __syncthreads();  // scratch is free again
    return total;
  }
};

// Column `threadIdx.x % positions` of a BLOCK-thread block seen as (BLOCK / positions) x positions: the class
// groups of one spatial position. Folded through shared memory in class-group order.
template <int BLOCK>
struct BlockColumn {
  int positions;
  __device__ __forceinline__ int rank() const { return threadIdx.x / positions; }
  __device__ __forceinline__ int width() const { return BLOCK / positions; }
  template <typename V, typename Op>
  __device__ __forceinline__ V reduce(V v, const Op& op) const {
    if (positions == BLOCK) return v;  // one thread per position
    __shared__ V scratch[BLOCK];
    scratch[threadIdx.x] = v;
    __syncthreads();
    const int column = threadIdx.x % positions;
    V total = scratch[column];
    for (int t = column + positions; t < BLOCK; t += positions) total = op(total, scratch[t]);
    __syncthreads();
    return total;
  }
};

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
  __shared__ bool is_last_block;
  const BlockThreads<BLOCK> block{BLOCK};
  const SumCount block_total = block.reduce(SumCount{thread_sum, thread_count}, SumOp{});
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
  const SumCount total = block.reduce(acc, SumOp{});
  if (threadIdx.x != 0) return;
  double loss = total.sum, scale = 1.0;
  if (r.reduction == kMean) {
    const double count = r.fixed_count >= 0 ? static_cast<double>(r.fixed_count) : total.count;
    if (r.normalizer != nullptr) {
      const double denominator = static_cast<double>(*static_cast<const op_t*>(r.normalizer));
      loss /= denominator;
      scale = 1.0 / denominator;
    } else {
      // A mean over nothing is 0 with a zero gradient (docs/design.md §2), not NaN.
      loss = count > 0 ? loss / count : 0.0;
      scale = count > 0 ? 1.0 / count : 0.0;
    }
  }
  *static_cast<scalar_t*>(r.loss) = static_cast<scalar_t>(static_cast<op_t>(loss));
  *static_cast<op_t*>(r.grad_scale) = static_cast<op_t>(scale / r.grad_prescale);
}

}  // namespace focal::cuda
