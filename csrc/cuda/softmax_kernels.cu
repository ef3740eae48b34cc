// Softmax focal loss forward kernels. One row = the C class logits of one sample (and spatial position).
// Each thread keeps its share of the row in registers: one read of the row, one exp per element (the
// exp(x - local max) values serve both the log-sum-exp and the gradient), one combined (max, sum) reduction per
// row. One row routine (softmax_row) for three ways of mapping rows to threads:
//   * warp kernel: `lanes` (power of two) consecutive lanes per row, `slots` 16-byte vectors per lane, chosen so
//     that lanes * slots just covers the row (C = 80 bf16: 2 lanes of 5 vectors), for C <= 1024;
//   * block kernel: a group of 64..512 threads of a 512-thread block per row, for large C (32000 bf16 stays in
//     registers; longer rows go in chunks, re-read for the gradient);
//   * spatial kernel: (N, C, S) tiles of positions x class groups, loads coalesced along S, classes split
//     between the threads of a column (one thread per position for small C).
// Contiguous rows are read in aligned 16-byte vectors whatever C: the misaligned head and the tail of a row go
// element by element.
#include "kernels_common.cuh"

#include <cstring>

namespace focal::cuda {
namespace {

template <typename T>
struct SoftmaxConsts {
  T gamma;
  T q_on;   // smoothed target probability of the target class: 1 - s + s / C
  T q_off;  // and of every other class: s / C
  const T* alpha;       // C weights, or null (all 1)
  T poly;               // Poly-1 epsilon
  const T* row_weight;  // one weight per row (position), or null
  T grad_prescale;      // the power of two the stored gradient carries (ReductionBuffers::grad_prescale)
};

template <typename T>
__device__ __forceinline__ T negative_infinity() {
  return -std::numeric_limits<T>::infinity();
}

template <typename Index>
__device__ __forceinline__ Index div_up(Index a, Index b) {
  return (a + b - 1) / b;
}

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

// ---- row access: `kUnit` elements per slot, units numbered along the row ----------------------------------------

template <int kBytes>
struct BitsOf;
template <>
struct BitsOf<2> {
  using type = uint16_t;
};
template <>
struct BitsOf<4> {
  using type = uint32_t;
};
template <>
struct BitsOf<8> {
  using type = uint64_t;
};

// A contiguous row read in aligned 16-byte vectors: unit u covers span[u * V, u * V + V), where span starts at
// the aligned address at or below the row start (`head` elements earlier). Vectors that stick out of the row
// (at most the first and the last) are read and written element by element, the rest as one access. `Index`
// counts classes within the row: int when C is small (fewer registers for the per-slot bookkeeping).
template <typename scalar_t, typename RowIndex>
struct ContiguousRow {
  using Index = RowIndex;
  static constexpr int kUnit = vector_width<scalar_t>();
  using op_t = opmath_t<scalar_t>;
  using Bits = typename BitsOf<sizeof(scalar_t)>::type;
  const scalar_t* span;  // row start - head
  scalar_t* grad_span;   // the gradient row at the same offset, or null
  Index C;
  int head;
  bool grad_vectors;  // the gradient row has the same alignment as the input row

  __device__ __forceinline__ ContiguousRow(const scalar_t* row, scalar_t* grad_row, Index classes, bool grad_aligned)
      : C(classes), grad_vectors(grad_aligned) {
    head = static_cast<int>(reinterpret_cast<uintptr_t>(row) % kVectorBytes / sizeof(scalar_t));
    span = row - head;
    grad_span = grad_row != nullptr ? grad_row - head : nullptr;
  }
  __device__ __forceinline__ Index units() const { return div_up<Index>(head + C, kUnit); }
  __device__ __forceinline__ Index class_of(Index u, int k) const { return u * kUnit + k - head; }
  __device__ __forceinline__ Index unit_of(Index j) const { return (j + head) / kUnit; }
  __device__ __forceinline__ bool inside(Index u) const {
    const Index first = u * kUnit - head;
    return first >= 0 && first + kUnit <= C;
  }

  // Classes outside [0, C) (or all, when !enabled) read as -inf: they add nothing to the max or the sum.
  __device__ __forceinline__ void load(Index u, bool enabled, op_t (&out)[kUnit]) const {
    Vector<scalar_t> v;
    if (enabled && inside(u)) {
      v = load_vector(span + u * kUnit);
    } else {
      const Bits minus_inf = bits_of(static_cast<scalar_t>(negative_infinity<op_t>()));
      uint64_t words[2] = {0, 0};
#pragma unroll 1
      for (int k = 0; k < kUnit; ++k) {
        const Index j = class_of(u, k);
        const Bits b = enabled && j >= 0 && j < C ? reinterpret_cast<const Bits*>(span)[u * kUnit + k] : minus_inf;
        shift_in(words, b);
      }
      memcpy(&v, words, sizeof(v));
    }
#pragma unroll
    for (int k = 0; k < kUnit; ++k) out[k] = static_cast<op_t>(v.val[k]);
  }

  __device__ __forceinline__ void store(Index u, const op_t (&value)[kUnit]) const {
    Vector<scalar_t> v;
#pragma unroll
    for (int k = 0; k < kUnit; ++k) v.val[k] = static_cast<scalar_t>(value[k]);
    if (grad_vectors && inside(u)) {
      store_vector(grad_span + u * kUnit, v);
      return;
    }
    uint64_t words[2];
    memcpy(words, &v, sizeof(v));
#pragma unroll 1
    for (int k = 0; k < kUnit; ++k) {
      const Index j = class_of(u, k);
      if (j >= 0 && j < C) reinterpret_cast<Bits*>(grad_span)[u * kUnit + k] = static_cast<Bits>(words[0]);
      shift_out(words);
    }
  }
  __device__ __forceinline__ op_t logit(Index j) const { return static_cast<op_t>(span[j + head]); }
  __device__ __forceinline__ void store_class(Index j, op_t value) const {
    grad_span[j + head] = static_cast<scalar_t>(value);
  }
  __device__ __forceinline__ bool has_grad() const { return grad_span != nullptr; }

  static __device__ __forceinline__ Bits bits_of(scalar_t value) {
    Bits b;
    memcpy(&b, &value, sizeof(b));
    return b;
  }
  // words = 128 bits, element 0 lowest: push b in at the top (after kUnit pushes the first one is lowest).
  static __device__ __forceinline__ void shift_in(uint64_t (&words)[2], Bits b) {
    constexpr int kBits = 8 * sizeof(Bits);
    if constexpr (kBits == 64) {
      words[0] = words[1];
      words[1] = b;
    } else {
      words[0] = (words[0] >> kBits) | (words[1] << (64 - kBits));
      words[1] = (words[1] >> kBits) | (static_cast<uint64_t>(b) << (64 - kBits));
    }
  }
  static __device__ __forceinline__ void shift_out(uint64_t (&words)[2]) {
    constexpr int kBits = 8 * sizeof(Bits);
    if constexpr (kBits == 64) {
      words[0] = words[1];
    } else {
      words[0] = (words[0] >> kBits) | (words[1] << (64 - kBits));
      words[1] >>= kBits;
    }
  }
};

// Class j of a spatial position at x[j * stride], one class per unit.
template <typename scalar_t>
struct StridedRow {
  using Index = int;
  static constexpr int kUnit = 1;
  using op_t = opmath_t<scalar_t>;
  const scalar_t* x;
  scalar_t* grad;  // or null
  int64_t stride;
  Index C;
  __device__ __forceinline__ Index units() const { return C; }
  __device__ __forceinline__ Index class_of(Index u, int) const { return u; }
  __device__ __forceinline__ Index unit_of(Index j) const { return j; }
  __device__ __forceinline__ void load(Index u, bool enabled, op_t (&out)[1]) const {
    out[0] = enabled && u < C ? static_cast<op_t>(x[u * stride]) : negative_infinity<op_t>();
  }
  __device__ __forceinline__ void store(Index u, const op_t (&value)[1]) const {
    if (u < C) grad[u * stride] = static_cast<scalar_t>(value[0]);
  }
  __device__ __forceinline__ op_t logit(Index j) const { return static_cast<op_t>(x[j * stride]); }
  __device__ __forceinline__ void store_class(Index j, op_t value) const {
    grad[j * stride] = static_cast<scalar_t>(value);
  }
  __device__ __forceinline__ bool has_grad() const { return grad != nullptr; }
};

// ---- one row --------------------------------------------------------------------------------------------------

__device__ __forceinline__ bool softmax_row_counted(int64_t tgt, int64_t C, int64_t ignore_index) {
  if (tgt == ignore_index) return false;
  // Traps and kills the CUDA context, as F.cross_entropy does for a bad class index.
  CUDA_KERNEL_ASSERT(tgt >= 0 && tgt < C && "target: class index out of range [0, C) and not ignore_index");
  return true;
}

template <typename T>
struct RowTarget {
  int64_t tgt;
  bool counted;  // false: ignored row, or a lane past the last row
  T weight;
  T logit;  // x[tgt], read before the row (it is needed right after the reduction); 0 when not counted
};

// Loss of one row (valid in every rank of the group; 0 when not counted) and, when the access has a gradient row,
// its gradient: grad_j = -q_j h_j + p_j sum_c q_c h_c (focal_math.h), which for one-hot q is h_t (p_j - [j == t]);
// both times the row's weight. An uncounted row gets a zero gradient. Every rank of the group must call this.
// Rank r holds units c * width * kSlots + i * width + r of chunk c; a row longer than one chunk (kChunked) is
// read again for each later pass, otherwise it stays in registers: exp(x - m) with m the thread's max (x - m with
// label smoothing, whose class terms need log p of every class).
template <int G, bool kSmooth, int kSlots, bool kChunked, typename Access, typename Group, typename T>
__device__ __forceinline__ T softmax_row(const Access& row, const Group& group, const RowTarget<T>& t,
                                         const SoftmaxConsts<T>& k) {
  constexpr int U = Access::kUnit;
  using Index = typename Access::Index;
  const int rank = group.rank();
  const Index width = group.width();
  const Index units = row.units();
  const Index chunk_units = width * kSlots;
  const Index chunks = kChunked ? div_up(units, chunk_units) : 1;
  const bool resident = chunks == 1;
  const auto unit = [&](Index c, int i) { return c * chunk_units + i * width + rank; };
  // Slot i of chunk c holds part of the row in some rank of the group (the same answer in all of them).
  const auto live = [&](Index c, int i) { return c * chunk_units + i * width < units; };
  T v[kSlots][U];
  const auto load_chunk = [&](Index c) {
#pragma unroll
    for (int i = 0; i < kSlots; ++i) row.load(unit(c, i), t.counted && live(c, i), v[i]);
  };

  // Pass 1: the thread's running max m, the sum s of exp(x - m) over its values below m and the count of those
  // at m (ties): its excess is s + ties - 1, with no 1 added and taken away again.
  T m = negative_infinity<T>(), s(0), ties(0);
  for (Index c = 0; c < (t.counted ? chunks : 1); ++c) {  // an uncounted row reads nothing (all -inf)
    load_chunk(c);
    T chunk_max = m;
#pragma unroll
    for (int i = 0; i < kSlots; ++i) {
#pragma unroll
      for (int e = 0; e < U; ++e) chunk_max = v[i][e] > chunk_max ? v[i][e] : chunk_max;
    }
    const T ref = chunk_max == negative_infinity<T>() ? T(0) : chunk_max;  // all -inf: exp gives 0, not NaN
    if (chunk_max != m) {  // the values at the old max now lie below the new one
      s = (s + ties) * fm_exp(m - chunk_max);
      ties = T(0);
    }
#pragma unroll
    for (int i = 0; i < kSlots; ++i) {
      if (!live(c, i)) continue;
      T slot_sum(0), slot_ties(0);  // per slot, then across slots: short dependent chains
#pragma unroll
      for (int e = 0; e < U; ++e) {
        const T ex = fm_exp(v[i][e] - ref);
        const bool at_max = v[i][e] == chunk_max;
        slot_sum += at_max ? T(0) : ex;
        slot_ties += at_max ? T(1) : T(0);
        v[i][e] = kSmooth ? v[i][e] - ref : ex;
      }
      s += slot_sum;
      ties += slot_ties;
    }
    m = chunk_max;
  }
  const MaxSum<T> total = group.reduce(MaxSum<T>{m, s + (ties - T(1))}, MaxSumOp{});
  const T row_max = t.counted ? total.max : T(0);
  const T row_sum = T(1) + total.excess;
  // >= 0 (clamped: the device's approx exp may be 2**-22 off), so that log p <= 0 (p <= 1) for every class.
  const T log_sum = fm_max(fm_log1p(total.excess), T(0));
  // The registers are relative to `ref`: the thread's max while resident, the row's after a reread.
  const T ref = resident ? (m == negative_infinity<T>() ? T(0) : m) : row_max;
  const auto reload = [&](Index c) {
    if (resident) return;
    load_chunk(c);
#pragma unroll
    for (int i = 0; i < kSlots; ++i) {
#pragma unroll
      for (int e = 0; e < U; ++e) v[i][e] = kSmooth ? v[i][e] - row_max : fm_exp(v[i][e] - row_max);
    }
  };

  if constexpr (!kSmooth) {
    T row_loss(0), hw(0), logp_t(0);
    if (t.counted) {
      T weighted_logp, h;
      logp_t = log_softmax_value(t.logit, row_max, log_sum);
      softmax_focal_class_terms<G>(logp_t, k.alpha != nullptr ? k.alpha[t.tgt] : T(1), k.gamma, weighted_logp, h,
                                   k.poly);
      row_loss = -t.weight * weighted_logp;
      hw = h * t.weight * k.grad_prescale;
    }
    if (row.has_grad()) {
      // grad_j = hw p_j = hw exp(ref - max) / sum * register_j off the target; 0 for threads without classes.
      const T to_prob = !t.counted || (resident && m == negative_infinity<T>())
                            ? T(0)
                            : (ref == row_max ? T(1) : fm_exp(ref - row_max)) / row_sum;
      const T scale = hw * to_prob;
      for (Index c = 0; c < chunks; ++c) {
        reload(c);
#pragma unroll
        for (int i = 0; i < kSlots; ++i) {
          if (!live(c, i)) continue;
          T out[U];
#pragma unroll
          for (int e = 0; e < U; ++e) out[e] = scale * v[i][e];
          row.store(unit(c, i), out);
        }
      }
      // The target's h (p_t - 1) overwrites what this thread stored there (expm1: exact near p_t = 1).
      if (t.counted && row.unit_of(static_cast<Index>(t.tgt)) % width == rank) {
        row.store_class(static_cast<Index>(t.tgt), hw * fm_expm1(logp_t));
      }
    }
    return row_loss;
  } else {
    const T offset = ref - row_max - log_sum;  // log p = register + offset
    const auto terms = [&](Index j, T logp, T& weighted_logp, T& h) {
      softmax_focal_class_terms<G>(logp, k.alpha != nullptr ? k.alpha[j] : T(1), k.gamma, weighted_logp, h, k.poly);
    };
    SumPair<T> acc{T(0), T(0)};  // sum_c q_c weighted_logp_c, sum_c q_c h_c
    if (t.counted) {
      for (Index c = 0; c < chunks; ++c) {
        reload(c);
#pragma unroll
        for (int i = 0; i < kSlots; ++i) {
          if (!live(c, i)) continue;
#pragma unroll
          for (int e = 0; e < U; ++e) {
            const Index j = row.class_of(unit(c, i), e);
            if (j < 0 || j >= row.C) continue;
            T weighted_logp, h;
            terms(j, v[i][e] + offset, weighted_logp, h);
            const T q = j == t.tgt ? k.q_on : k.q_off;
            acc.a += q * weighted_logp;
            acc.b += q * h;
          }
        }
      }
    }
    const SumPair<T> sums = group.reduce(acc, SumPairOp{});
    if (row.has_grad()) {
      for (Index c = 0; c < chunks; ++c) {
        reload(c);
#pragma unroll
        for (int i = 0; i < kSlots; ++i) {
          if (!live(c, i)) continue;
          T out[U];
#pragma unroll
          for (int e = 0; e < U; ++e) {
            const Index j = row.class_of(unit(c, i), e);
            out[e] = T(0);
            if (t.counted && j >= 0 && j < row.C) {
              T weighted_logp, h;
              const T logp = v[i][e] + offset;
              terms(j, logp, weighted_logp, h);
              out[e] = t.weight * k.grad_prescale * (fm_exp(logp) * sums.b - (j == t.tgt ? k.q_on : k.q_off) * h);
            }
          }
          row.store(unit(c, i), out);
        }
      }
    }
    return t.counted ? -t.weight * sums.a : T(0);
  }
}

// Target, weight and counting of row `index` (of target, loss, row weights) around softmax_row.
template <int G, bool kSmooth, int kSlots, bool kChunked, typename scalar_t, typename Access, typename Group>
__device__ __forceinline__ void softmax_row_with_target(const Access& row, const Group& group, int64_t index,
                                                        bool in_range, const int64_t* __restrict__ target,
                                                        scalar_t* __restrict__ loss, int64_t ignore_index,
                                                        const SoftmaxConsts<opmath_t<scalar_t>>& k,
                                                        opmath_t<scalar_t>& acc, int64_t& count) {
  using op_t = opmath_t<scalar_t>;
  const int64_t tgt = in_range ? target[index] : ignore_index;
  const bool counted = in_range && softmax_row_counted(tgt, row.C, ignore_index);
  const RowTarget<op_t> t{tgt, counted, counted && k.row_weight != nullptr ? k.row_weight[index] : op_t(1),
                          counted ? row.logit(static_cast<typename Access::Index>(tgt)) : op_t(0)};
  const op_t row_loss = softmax_row<G, kSmooth, kSlots, kChunked>(row, group, t, k);
  if (in_range && group.rank() == 0) {
    if (loss != nullptr) loss[index] = static_cast<scalar_t>(row_loss);
    if (counted) {
      acc += row_loss;
      ++count;
    }
  }
}

// ---- kernels ------------------------------------------------------------------------------------------------

// Blocks per SM the warp kernel asks ptxas to fit (0: ptxas's own choice, best for plain rows: 46-80 registers,
// where the 72-97 of 4-8 vectors a lane pay for the vectors in flight). Left to itself ptxas caps some kernels
// below their live values and spills a few: double (its exp / log sequences need many temporaries) and smoothed
// rows of 16 values or more get 2 blocks (up to 128 registers), smaller smoothed rows 4 (64).
template <typename scalar_t, bool kSmooth, int kSlots>
constexpr int warp_kernel_min_blocks() {
  if (sizeof(scalar_t) == 8 || (kSmooth && kSlots * vector_width<scalar_t>() >= 16)) return 2;
  return kSmooth ? 4 : 0;
}

// Rows of (rows, C); each warp takes 32 / lanes_per_row rows at a time, kSlots vectors per lane.
template <int G, bool kSmooth, int kSlots, typename scalar_t>
__global__ void __launch_bounds__(kThreads, warp_kernel_min_blocks<scalar_t, kSmooth, kSlots>())
    softmax_rows_warp_kernel(const scalar_t* __restrict__ x, const int64_t* __restrict__ target,
                             scalar_t* __restrict__ loss, scalar_t* __restrict__ grad, int64_t rows, int64_t C,
                             int64_t ignore_index, int lanes_per_row, bool grad_aligned,
                             SoftmaxConsts<opmath_t<scalar_t>> k, ReductionBuffers reduce) {
  using op_t = opmath_t<scalar_t>;
  constexpr int kWarpsPerBlock = kThreads / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const WarpLanes group{lane % lanes_per_row, lanes_per_row};
  const int64_t rows_per_warp = kWarpSize / lanes_per_row;
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  const int64_t rows_per_sweep = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock * rows_per_warp;
  op_t acc(0);
  int64_t count = 0;
  // The loop bound is the same for the whole warp, so every lane reaches every shuffle.
  for (int64_t first = warp * rows_per_warp; first < rows; first += rows_per_sweep) {
    const int64_t row = first + lane / lanes_per_row;
    const bool in_range = row < rows;
    const int64_t offset = in_range ? row * C : 0;
    const ContiguousRow<scalar_t, int> access(x + offset, in_range && grad != nullptr ? grad + offset : nullptr,
                                              static_cast<int>(C), grad_aligned);
    softmax_row_with_target<G, kSmooth, kSlots, false>(access, group, row, in_range, target, loss, ignore_index, k,
                                                       acc, count);
  }
  finish_forward_block<kThreads, scalar_t>(static_cast<double>(acc), static_cast<double>(count), reduce);
}

// Vectors per thread of the block kernel, as many as fit 128 registers without a stack frame: a row of 32768
// half/bf16 (64 values a thread), 16384 float or 4096 double classes stays in registers.
template <typename scalar_t>
constexpr int block_row_slots() {
  return sizeof(scalar_t) == 2 ? 8 : sizeof(scalar_t) == 4 ? 8 : 4;
}

// Rows of (rows, C) with large C: threads_per_row (64..512) threads of the block per row.
template <int G, bool kSmooth, typename scalar_t>
__global__ void __launch_bounds__(kRowBlockThreads)
    softmax_rows_block_kernel(const scalar_t* __restrict__ x, const int64_t* __restrict__ target,
                              scalar_t* __restrict__ loss, scalar_t* __restrict__ grad, int64_t rows, int64_t C,
                              int64_t ignore_index, int threads_per_row, bool grad_aligned,
                              SoftmaxConsts<opmath_t<scalar_t>> k, ReductionBuffers reduce) {
  using op_t = opmath_t<scalar_t>;
  const BlockThreads<kRowBlockThreads> group{threads_per_row};
  const int64_t rows_per_block = kRowBlockThreads / threads_per_row;
  op_t acc(0);
  int64_t count = 0;
  // The loop bound is the same for the whole block, so every thread reaches every barrier.
  for (int64_t first = blockIdx.x * rows_per_block; first < rows; first += gridDim.x * rows_per_block) {
    const int64_t row = first + threadIdx.x / threads_per_row;
    const bool in_range = row < rows;
    const int64_t offset = in_range ? row * C : 0;
    const ContiguousRow<scalar_t, int64_t> access(x + offset, in_range && grad != nullptr ? grad + offset : nullptr,
                                                  C, grad_aligned);
    softmax_row_with_target<G, kSmooth, block_row_slots<scalar_t>(), true>(access, group, row, in_range, target,
                                                                          loss, ignore_index, k, acc, count);
  }
  finish_forward_block<kRowBlockThreads, scalar_t>(static_cast<double>(acc), static_cast<double>(count), reduce);
}

// Classes per thread and chunk of the spatial kernel: 8, or 4 double (half the registers per class).
template <typename scalar_t>
constexpr int spatial_slots() {
  return sizeof(scalar_t) == 8 ? 4 : 8;
}
constexpr int kSpatialMaxClassGroups = 32;

// (N, C, S): a block takes positions_per_block consecutive positions (n, s) (flat n * S + s); the
// kThreads / positions_per_block threads of a column share a position's classes. Class c of position (n, s) is
// at n*C*S + c*S + s; target and loss at n*S + s. Neighbouring threads read neighbouring s.
// Registers: 57-64 (73-75 smoothed with gamma 0, which a 64 cap would spill); double is asked for 2 blocks
// (up to 128), where ptxas alone spills.
template <int G, bool kSmooth, typename scalar_t>
__global__ void __launch_bounds__(kThreads, sizeof(scalar_t) == 8 ? 2 : 0)
    softmax_spatial_kernel(const scalar_t* __restrict__ x, const int64_t* __restrict__ target,
                           scalar_t* __restrict__ loss, scalar_t* __restrict__ grad, int64_t N, int64_t C, int64_t S,
                           int64_t ignore_index, int positions_per_block, SoftmaxConsts<opmath_t<scalar_t>> k,
                           ReductionBuffers reduce) {
  using op_t = opmath_t<scalar_t>;
  const BlockColumn<kThreads> group{positions_per_block};
  const int64_t positions = N * S;
  op_t acc(0);
  int64_t count = 0;
  for (int64_t first = static_cast<int64_t>(blockIdx.x) * positions_per_block; first < positions;
       first += static_cast<int64_t>(gridDim.x) * positions_per_block) {
    const int64_t pos = first + threadIdx.x % positions_per_block;
    const bool in_range = pos < positions;
    const int64_t n = in_range ? pos / S : 0;
    const int64_t offset = in_range ? n * C * S + (pos - n * S) : 0;
    const StridedRow<scalar_t> access{x + offset, in_range && grad != nullptr ? grad + offset : nullptr, S,
                                      static_cast<int>(C)};
    softmax_row_with_target<G, kSmooth, spatial_slots<scalar_t>(), true>(access, group, pos, in_range, target,
                                                                         loss, ignore_index, k, acc, count);
  }
  finish_forward_block<kThreads, scalar_t>(static_cast<double>(acc), static_cast<double>(count), reduce);
}

// ---- layouts (host) -------------------------------------------------------------------------------------------

// Slots per lane the warp kernel is built for: at most 40 values a lane in registers. Smoothed rows and double
// (V = 2, compute-bound: idle lanes cost little) take powers of two up to 4 double / 8 others, which
// halves their instantiations; double rows over 256 classes go to the block kernel.
constexpr int kWarpSlotChoices[] = {1, 2, 3, 4, 5, 8};
template <int V, bool kSmooth>
constexpr bool warp_slots_built(int slots) {
  const bool power_of_two = slots == 1 || slots == 2 || slots == 4 || slots == 8;
  if (V == 2) return power_of_two && slots <= 4;
  return slots * V <= 40 && (!kSmooth || power_of_two);
}

struct WarpLayout {
  int lanes = 0;  // 0: a row does not fit one warp's registers
  int slots = 0;
};

// The smallest lanes x slots that covers `units` vectors (ties: fewer lanes, so fewer shuffles per element).
template <int V, bool kSmooth>
WarpLayout choose_warp_layout(int64_t units) {
  WarpLayout best;
  for (const int slots : kWarpSlotChoices) {
    if (!warp_slots_built<V, kSmooth>(slots)) continue;
    int lanes = 1;
    while (lanes * slots < units && lanes < kWarpSize) lanes *= 2;
    if (lanes * slots < units) continue;
    if (best.lanes == 0 || lanes * slots < best.lanes * best.slots ||
        (lanes * slots == best.lanes * best.slots && lanes < best.lanes)) {
      best = {lanes, slots};
    }
  }
  return best;
}

template <int V, bool kSmooth, typename Body>
void dispatch_warp_slots(int slots, const Body& body) {
  const auto call = [&](auto slots_tag) {
    if constexpr (warp_slots_built<V, kSmooth>(decltype(slots_tag)::value)) body(slots_tag);
  };
  switch (slots) {
    case 1: call(std::integral_constant<int, 1>{}); break;
    case 2: call(std::integral_constant<int, 2>{}); break;
    case 3: call(std::integral_constant<int, 3>{}); break;
    case 4: call(std::integral_constant<int, 4>{}); break;
    case 5: call(std::integral_constant<int, 5>{}); break;
    case 8: call(std::integral_constant<int, 8>{}); break;
    default: TORCH_CHECK(false, "softmax_focal_fwd: no warp kernel with ", slots, " slots");
  }
}

int64_t next_power_of_two(int64_t n) {
  int64_t p = 1;
  while (p < n) p *= 2;
  return p;
}

}  // namespace

void launch_softmax_forward(const SoftmaxParams& p, int device, cudaStream_t stream) {
  const int64_t rows = p.batch * p.spatial;
  if (rows == 0 || p.classes == 0) return;  // the caller fills the outputs
  dispatch_floating(p.dtype, "softmax_focal_fwd", [&](auto dtype_tag) {
    using scalar_t = decltype(dtype_tag);
    using op_t = opmath_t<scalar_t>;
    constexpr int V = vector_width<scalar_t>();
    const auto* x = static_cast<const scalar_t*>(p.input);
    auto* loss = static_cast<scalar_t*>(p.loss);
    auto* grad = static_cast<scalar_t*>(p.grad);
    const int64_t C = p.classes;
    const double s = p.label_smoothing;
    const SoftmaxConsts<op_t> k{static_cast<op_t>(p.gamma), static_cast<op_t>(1.0 - s + s / C),
                                static_cast<op_t>(s / C), static_cast<const op_t*>(p.alpha),
                                static_cast<op_t>(p.poly_epsilon), static_cast<const op_t*>(p.row_weight),
                                static_cast<op_t>(p.reduce.grad_prescale)};
    // Vectors a row spans: C / V when every row starts aligned, else up to one more (misaligned head).
    const bool rows_aligned = C % V == 0 && is_vector_aligned(x);
    const int64_t units = rows_aligned ? C / V : ceil_div(C + V - 1, V);
    // Gradient vectors line up with the input's when both bases have the same offset from 16 bytes.
    const bool grad_aligned =
        grad == nullptr || reinterpret_cast<uintptr_t>(x) % kVectorBytes == reinterpret_cast<uintptr_t>(grad) % kVectorBytes;
    const auto launch = [&](auto gamma_tag, auto smooth_tag) {
      constexpr int G = decltype(gamma_tag)::value;
      constexpr bool kSmooth = decltype(smooth_tag)::value;
      if (p.spatial > 1) {
        // The spatial kernel counts a position's classes in int (fewer registers per slot), with room for a
        // chunk past the last class.
        TORCH_CHECK(C <= (int64_t{1} << 30), "softmax_focal_fwd: at most 2**30 classes with spatial dimensions, got ",
                    C);
        // Class groups per position: enough to hold C in registers, while a warp still reads 32 consecutive s
        // (or all of a short S), at most kSpatialMaxClassGroups.
        const int64_t min_positions = std::max<int64_t>(kThreads / kSpatialMaxClassGroups,
                                                        std::min<int64_t>(kWarpSize, next_power_of_two(p.spatial)));
        int64_t groups = 1;
        while (groups * spatial_slots<scalar_t>() < C && kThreads / (2 * groups) >= min_positions) groups *= 2;
        const int positions_per_block = static_cast<int>(kThreads / groups);
        const auto kernel = &softmax_spatial_kernel<G, kSmooth, scalar_t>;
        const int grid = grid_for(rows, positions_per_block, device, kernel, kThreads);
        FOCAL_LAUNCH(grid, kThreads, 0, stream, softmax_spatial_kernel<G, kSmooth, scalar_t>)(
            x, p.target, loss, grad, p.batch, C, p.spatial, p.ignore_index, positions_per_block, k, p.reduce);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        return;
      }
      const WarpLayout layout = choose_warp_layout<V, kSmooth>(units);
      if (C <= 1024 && layout.lanes > 0) {
        dispatch_warp_slots<V, kSmooth>(layout.slots, [&](auto slots_tag) {
          constexpr int G = decltype(gamma_tag)::value;  // again: g++ wants constexpr locals captured
          constexpr bool kSmooth = decltype(smooth_tag)::value;
          constexpr int kSlots = decltype(slots_tag)::value;
          const auto kernel = &softmax_rows_warp_kernel<G, kSmooth, kSlots, scalar_t>;
          const int64_t warps = ceil_div(rows, kWarpSize / layout.lanes);
          const int grid = grid_for(warps, kThreads / kWarpSize, device, kernel, kThreads);
          FOCAL_LAUNCH(grid, kThreads, 0, stream, softmax_rows_warp_kernel<G, kSmooth, kSlots, scalar_t>)(
              x, p.target, loss, grad, rows, C, p.ignore_index, layout.lanes, grad_aligned, k, p.reduce);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
        return;
      }
      // Threads per row: the fewest (>= 64) whose registers hold the row, at most the block (then in chunks).
      constexpr int kSlots = block_row_slots<scalar_t>();
      int threads_per_row = 64;
      while (threads_per_row * kSlots < units && threads_per_row < kRowBlockThreads) threads_per_row *= 2;
      const auto kernel = &softmax_rows_block_kernel<G, kSmooth, scalar_t>;
      const int grid = grid_for(rows, kRowBlockThreads / threads_per_row, device, kernel, kRowBlockThreads);
      FOCAL_LAUNCH(grid, kRowBlockThreads, 0, stream, softmax_rows_block_kernel<G, kSmooth, scalar_t>)(
          x, p.target, loss, grad, rows, C, p.ignore_index, threads_per_row, grad_aligned, k, p.reduce);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    dispatch_gamma(p.gamma, [&](auto gamma_tag) {
      if (s > 0) {
        launch(gamma_tag, std::true_type{});
      } else {
        launch(gamma_tag, std::false_type{});
      }
    });
  });
}

}  // namespace focal::cuda
