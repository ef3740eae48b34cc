// One softmax row, whatever the thread mapping: the row's access (contiguous rows read in aligned 16-byte vectors
// with the misaligned head and tail element by element, or a spatial position's strided classes), the target and
// weight of the row, and softmax_row: one read and one exp per element, one (max, excess) reduction, the loss and
// the gradient (focal_math.h's class terms).
#pragma once

#include "reduce.cuh"

#include <cstring>

namespace focal::cuda {

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
  static constexpr Precision kPrecision = precision_of<scalar_t>();  // of the row's results
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
    to_opmath<kUnit>(v.val, out);
  }

  __device__ __forceinline__ void store(Index u, const op_t (&value)[kUnit]) const {
    Vector<scalar_t> v;
    from_opmath<kUnit>(value, v.val);
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
  static constexpr Precision kPrecision = precision_of<scalar_t>();  // of the row's results
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
  constexpr Precision P = Access::kPrecision;
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
  const T log_sum = fm_max(fm_log1p_nonnegative_at<P>(total.excess), T(0));
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
      softmax_focal_class_terms<G, P>(logp_t, k.alpha != nullptr ? k.alpha[t.tgt] : T(1), k.gamma, weighted_logp, h,
                                   k.poly);
      row_loss = -t.weight * weighted_logp;
      hw = h * t.weight * k.grad_prescale;
    }
    if (row.has_grad()) {
      // grad_j = hw p_j = hw exp(ref - max) / sum * register_j off the target; 0 for threads without classes.
      // row_sum >= 1: a plain reciprocal (no small-divisor scaling)
      const T to_prob = !t.counted || (resident && m == negative_infinity<T>())
                            ? T(0)
                            : (ref == row_max ? T(1) : fm_exp(ref - row_max)) * fm_reciprocal(row_sum);
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
        row.store_class(static_cast<Index>(t.tgt), hw * fm_expm1_nonpositive_at<P>(logp_t));
      }
    }
    return row_loss;
  } else {
    const T offset = ref - row_max - log_sum;  // log p = register + offset
    const auto terms = [&](Index j, T logp, T& weighted_logp, T& h) {
      softmax_focal_class_terms<G, P>(logp, k.alpha != nullptr ? k.alpha[j] : T(1), k.gamma, weighted_logp, h, k.poly);
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

}  // namespace focal::cuda
