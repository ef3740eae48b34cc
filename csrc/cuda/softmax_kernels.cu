// Softmax focal loss forward kernels. One row = the C class logits of one sample (and spatial position).
// The row's log-sum-exp comes from an online max/sum-exp in one read; the loss and gradient passes re-read
// the row (from cache). Three ways to map rows to threads, one row routine (softmax_row) for all:
//   * warp kernel: a group of 1..32 lanes per row, for (N, C) with C <= kWarpRowMaxClasses;
//   * block kernel: a block per row, for large C (vocabularies of 32000+);
//   * spatial kernel: a thread per (n, s) of (N, C, S), classes strided by S, so a warp's loads are
//     contiguous along S (no transpose).
#include "kernels_common.cuh"

namespace focal::cuda {
namespace {

constexpr int64_t kWarpRowMaxClasses = 1024;

template <typename T>
struct SoftmaxConsts {
  T gamma;
  T q_on;   // smoothed target probability of the target class: 1 - s + s / C
  T q_off;  // and of every other class: s / C
  bool smoothing;
  const T* alpha;       // C weights, or null (all 1)
  T poly;               // Poly-1 epsilon
  const T* row_weight;  // one weight per row (position), or null
};

template <typename T>
__device__ __forceinline__ T negative_infinity() {
  return -std::numeric_limits<T>::infinity();
}

// ---- thread groups that share a row ---------------------------------------------------------------------------

struct ThreadGroup {
  __device__ __forceinline__ int rank() const { return 0; }
  __device__ __forceinline__ int width() const { return 1; }
  template <typename T>
  __device__ __forceinline__ T sum(T v) const {
    return v;
  }
  template <typename T>
  __device__ __forceinline__ T max(T v) const {
    return v;
  }
};

// `width` (a power of two <= 32) consecutive lanes. The xor butterfly leaves the same, bitwise identical
// value in every lane (each step adds the same two partial sums, only in swapped order).
struct WarpGroup {
  int lane_rank;
  int lanes;
  __device__ __forceinline__ int rank() const { return lane_rank; }
  __device__ __forceinline__ int width() const { return lanes; }
  template <typename T>
  __device__ __forceinline__ T sum(T v) const {
    for (int offset = lanes / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset, lanes);
    return v;
  }
  template <typename T>
  __device__ __forceinline__ T max(T v) const {
    for (int offset = lanes / 2; offset > 0; offset /= 2) {
      const T other = __shfl_xor_sync(0xffffffffu, v, offset, lanes);
      v = other > v ? other : v;
    }
    return v;
  }
};

// The whole block; results reach every thread (block_all_reduce).
template <typename T, int BLOCK>
struct BlockGroup {
  T* scratch;  // __shared__, BLOCK / kWarpSize entries
  __device__ __forceinline__ int rank() const { return threadIdx.x; }
  __device__ __forceinline__ int width() const { return BLOCK; }
  __device__ __forceinline__ T sum(T v) const { return block_all_reduce<BLOCK>(v, SumOp{}, scratch); }
  __device__ __forceinline__ T max(T v) const { return block_all_reduce<BLOCK>(v, MaxOp{}, scratch); }
};

// ---- one row ------------------------------------------------------------------------------------------------

// Calls f(j, x_j) for this rank's classes j. x_j is at x[j * stride]; vectorized (stride 1, C a multiple of
// the vector width, row 16-byte aligned) reads 128 bits at a time.
template <typename scalar_t, typename Group, typename F>
__device__ __forceinline__ void for_each_class(const scalar_t* __restrict__ x, int64_t stride, int64_t C,
                                               bool vectorized, const Group& group, const F& f) {
  using op_t = opmath_t<scalar_t>;
  constexpr int V = vector_width<scalar_t>();
  if (vectorized) {
    for (int64_t v = group.rank(); v < C / V; v += group.width()) {
      const Vector<scalar_t> xv = load_vector(x + v * V);
#pragma unroll
      for (int k = 0; k < V; ++k) f(v * V + k, static_cast<op_t>(xv.val[k]));
    }
  } else {
    for (int64_t j = group.rank(); j < C; j += group.width()) f(j, static_cast<op_t>(x[j * stride]));
  }
}

// out_j = f(j, x_j) for this rank's classes, same access pattern as for_each_class.
template <typename scalar_t, typename Group, typename F>
__device__ __forceinline__ void map_classes(const scalar_t* __restrict__ x, scalar_t* __restrict__ out, int64_t stride,
                                            int64_t C, bool vectorized, const Group& group, const F& f) {
  using op_t = opmath_t<scalar_t>;
  constexpr int V = vector_width<scalar_t>();
  if (vectorized) {
    for (int64_t v = group.rank(); v < C / V; v += group.width()) {
      const Vector<scalar_t> xv = load_vector(x + v * V);
      Vector<scalar_t> ov;
#pragma unroll
      for (int k = 0; k < V; ++k) ov.val[k] = static_cast<scalar_t>(f(v * V + k, static_cast<op_t>(xv.val[k])));
      store_vector(out + v * V, ov);
    }
  } else {
    for (int64_t j = group.rank(); j < C; j += group.width()) {
      out[j * stride] = static_cast<scalar_t>(f(j, static_cast<op_t>(x[j * stride])));
    }
  }
}

template <typename scalar_t, typename Group>
__device__ __forceinline__ void zero_classes(scalar_t* __restrict__ out, int64_t stride, int64_t C,
                                             const Group& group) {
  for (int64_t j = group.rank(); j < C; j += group.width()) out[j * stride] = scalar_t(0);
}

// Running (max m, sum s of exp(x - m)) after one more value. -inf adds nothing; NaN makes s NaN.
template <typename T>
__device__ __forceinline__ void online_logsumexp_update(T& m, T& s, T v) {
  if (v > m) {
    s = s * fm_exp(m - v) + T(1);
    m = v;
  } else if (v != negative_infinity<T>()) {
    s += fm_exp(v - m);
  }
}

__device__ __forceinline__ bool softmax_row_counted(int64_t tgt, int64_t C, int64_t ignore_index) {
  if (tgt == ignore_index) return false;
  // Traps and kills the CUDA context, as F.cross_entropy does for a bad class index.
  CUDA_KERNEL_ASSERT(tgt >= 0 && tgt < C && "target: class index out of range [0, C) and not ignore_index");
  return true;
}

// Loss of one row (valid in every rank of the group; 0 when not counted) and, when grad is set, its
// gradient: grad_j = -q_j h_j + p_j sum_c q_c h_c (focal_math.h), which for one-hot q is h_t (p_j - [j == t]);
// both times the row's weight w. An uncounted row gets a zero gradient. Every rank of the group must call
// this (it reduces across them).
template <int G, typename scalar_t, typename Group>
__device__ __forceinline__ opmath_t<scalar_t> softmax_row(const scalar_t* __restrict__ x, scalar_t* __restrict__ grad,
                                                          int64_t stride, int64_t C, int64_t tgt, bool counted,
                                                          opmath_t<scalar_t> w, bool vectorized,
                                                          const SoftmaxConsts<opmath_t<scalar_t>>& k,
                                                          const Group& group) {
  using op_t = opmath_t<scalar_t>;
  op_t m = negative_infinity<op_t>();
  op_t s(0);
  if (counted) for_each_class(x, stride, C, vectorized, group, [&](int64_t, op_t v) { online_logsumexp_update(m, s, v); });
  const op_t row_max = group.max(m);
  const op_t scaled = m == negative_infinity<op_t>() ? op_t(0) : s * fm_exp(m - row_max);
  const op_t log_sum = fm_log(group.sum(scaled));
  const auto alpha_at = [&](int64_t j) { return k.alpha != nullptr ? k.alpha[j] : op_t(1); };

  op_t row_loss(0);
  if (!k.smoothing) {
    op_t h(0);
    if (counted) {
      op_t weighted_logp;
      softmax_focal_class_terms<G>(log_softmax_value(static_cast<op_t>(x[tgt * stride]), row_max, log_sum), alpha_at(tgt),
                                   k.gamma, weighted_logp, h, k.poly);
      row_loss = -w * weighted_logp;
      h *= w;
    }
    if (grad != nullptr) {
      if (counted) {
        map_classes(x, grad, stride, C, vectorized, group,
                    [&](int64_t j, op_t v) { return h * (fm_exp(log_softmax_value(v, row_max, log_sum)) - (j == tgt ? op_t(1) : op_t(0))); });
      } else {
        zero_classes(grad, stride, C, group);
      }
    }
    return row_loss;
  }

  op_t loss_acc(0), qh_acc(0);
  if (counted) {
    for_each_class(x, stride, C, vectorized, group, [&](int64_t j, op_t v) {
      op_t weighted_logp, h;
      softmax_focal_class_terms<G>(log_softmax_value(v, row_max, log_sum), alpha_at(j), k.gamma, weighted_logp, h, k.poly);
      const op_t q = j == tgt ? k.q_on : k.q_off;
      loss_acc += q * weighted_logp;
      qh_acc += q * h;
    });
  }
  const op_t loss_sum = group.sum(loss_acc);
  const op_t qh_sum = group.sum(qh_acc);
  if (counted) row_loss = -w * loss_sum;
  if (grad != nullptr) {
    if (counted) {
      map_classes(x, grad, stride, C, vectorized, group, [&](int64_t j, op_t v) {
        op_t weighted_logp, h;
        const op_t logp = log_softmax_value(v, row_max, log_sum);
        softmax_focal_class_terms<G>(logp, alpha_at(j), k.gamma, weighted_logp, h, k.poly);
        return w * (fm_exp(logp) * qh_sum - (j == tgt ? k.q_on : k.q_off) * h);
      });
    } else {
      zero_classes(grad, stride, C, group);
    }
  }
  return row_loss;
}

// ---- kernels ------------------------------------------------------------------------------------------------

// Rows of (rows, C); each warp takes 32 / lanes_per_row rows at a time.
template <int G, typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    softmax_rows_warp_kernel(const scalar_t* __restrict__ x, const int64_t* __restrict__ target,
                             scalar_t* __restrict__ loss, scalar_t* __restrict__ grad, int64_t rows, int64_t C,
                             int64_t ignore_index, int lanes_per_row, bool vectorized,
                             SoftmaxConsts<opmath_t<scalar_t>> k, ReductionBuffers reduce) {
  using op_t = opmath_t<scalar_t>;
  constexpr int kWarpsPerBlock = kThreads / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const WarpGroup group{lane % lanes_per_row, lanes_per_row};
  const int64_t rows_per_warp = kWarpSize / lanes_per_row;
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  const int64_t rows_per_sweep = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock * rows_per_warp;
  op_t acc(0);
  int64_t count = 0;
  // The loop bound is the same for the whole warp, so every lane reaches every shuffle.
  for (int64_t first = warp * rows_per_warp; first < rows; first += rows_per_sweep) {
    const int64_t row = first + lane / lanes_per_row;
    const bool in_range = row < rows;
    const int64_t tgt = in_range ? target[row] : ignore_index;
    const bool counted = in_range && softmax_row_counted(tgt, C, ignore_index);
    const int64_t offset = in_range ? row * C : 0;
    const op_t w = counted && k.row_weight != nullptr ? k.row_weight[row] : op_t(1);
    const op_t row_loss = softmax_row<G>(x + offset, in_range && grad != nullptr ? grad + offset : nullptr, 1, C, tgt,
                                         counted, w, vectorized, k, group);
    if (in_range && group.rank() == 0) {
      if (loss != nullptr) loss[row] = static_cast<scalar_t>(row_loss);
      if (counted) {
        acc += row_loss;
        ++count;
      }
    }
  }
  finish_forward_block<kThreads, scalar_t>(static_cast<double>(acc), static_cast<double>(count), reduce);
}

// Rows of (rows, C) with large C: one block per row.
template <int G, typename scalar_t>
__global__ void __launch_bounds__(kRowBlockThreads)
    softmax_rows_block_kernel(const scalar_t* __restrict__ x, const int64_t* __restrict__ target,
                              scalar_t* __restrict__ loss, scalar_t* __restrict__ grad, int64_t rows, int64_t C,
                              int64_t ignore_index, bool vectorized, SoftmaxConsts<opmath_t<scalar_t>> k,
                              ReductionBuffers reduce) {
  using op_t = opmath_t<scalar_t>;
  __shared__ op_t scratch[kRowBlockThreads / kWarpSize];
  const BlockGroup<op_t, kRowBlockThreads> group{scratch};
  op_t acc(0);
  int64_t count = 0;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t tgt = target[row];
    const bool counted = softmax_row_counted(tgt, C, ignore_index);
    const op_t w = counted && k.row_weight != nullptr ? k.row_weight[row] : op_t(1);
    const op_t row_loss = softmax_row<G>(x + row * C, grad != nullptr ? grad + row * C : nullptr, 1, C, tgt, counted,
                                         w, vectorized, k, group);
    if (threadIdx.x == 0) {
      if (loss != nullptr) loss[row] = static_cast<scalar_t>(row_loss);
      if (counted) {
        acc += row_loss;
        ++count;
      }
    }
  }
  finish_forward_block<kRowBlockThreads, scalar_t>(static_cast<double>(acc), static_cast<double>(count), reduce);
}

// (N, C, S): thread per position (n, s); class c of it at n*C*S + c*S + s, target and loss at n*S + s.
template <int G, typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    softmax_spatial_kernel(const scalar_t* __restrict__ x, const int64_t* __restrict__ target,
                           scalar_t* __restrict__ loss, scalar_t* __restrict__ grad, int64_t N, int64_t C, int64_t S,
                           int64_t ignore_index, SoftmaxConsts<opmath_t<scalar_t>> k, ReductionBuffers reduce) {
  using op_t = opmath_t<scalar_t>;
  const int64_t positions = N * S;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  op_t acc(0);
  int64_t count = 0;
  for (int64_t pos = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; pos < positions; pos += stride) {
    const int64_t n = pos / S;
    const int64_t offset = n * C * S + (pos - n * S);
    const int64_t tgt = target[pos];
    const bool counted = softmax_row_counted(tgt, C, ignore_index);
    const op_t w = counted && k.row_weight != nullptr ? k.row_weight[pos] : op_t(1);
    const op_t row_loss = softmax_row<G>(x + offset, grad != nullptr ? grad + offset : nullptr, S, C, tgt, counted, w,
                                         /*vectorized=*/false, k, ThreadGroup{});
    if (loss != nullptr) loss[pos] = static_cast<scalar_t>(row_loss);
    if (counted) {
      acc += row_loss;
      ++count;
    }
  }
  finish_forward_block<kThreads, scalar_t>(static_cast<double>(acc), static_cast<double>(count), reduce);
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
                                static_cast<op_t>(s / C), s > 0, static_cast<const op_t*>(p.alpha),
                                static_cast<op_t>(p.poly_epsilon), static_cast<const op_t*>(p.row_weight)};
    // Rows start 16-byte aligned when the base is and a row is a whole number of vectors.
    const bool vectorized = C % V == 0 && is_vector_aligned(x) && is_vector_aligned(grad);
    dispatch_gamma(p.gamma, [&](auto gamma_tag) {
      constexpr int G = decltype(gamma_tag)::value;
      if (p.spatial > 1) {
        const int grid = grid_for(rows, kThreads, device, &softmax_spatial_kernel<G, scalar_t>, kThreads);
        FOCAL_LAUNCH(grid, kThreads, 0, stream, softmax_spatial_kernel<G, scalar_t>)(
            x, p.target, loss, grad, p.batch, C, p.spatial, p.ignore_index, k, p.reduce);
      } else if (C <= kWarpRowMaxClasses) {
        // Smallest power-of-two lane group that gives each lane at most one access per sweep of the row.
        const int64_t accesses = vectorized ? C / V : C;
        int lanes = 1;
        while (lanes < accesses && lanes < kWarpSize) lanes *= 2;
        const int64_t warps = ceil_div(rows, kWarpSize / lanes);
        const int grid =
            grid_for(warps, kThreads / kWarpSize, device, &softmax_rows_warp_kernel<G, scalar_t>, kThreads);
        FOCAL_LAUNCH(grid, kThreads, 0, stream, softmax_rows_warp_kernel<G, scalar_t>)(
            x, p.target, loss, grad, rows, C, p.ignore_index, lanes, vectorized, k, p.reduce);
      } else {
        const int grid =
            grid_for(rows, 1, device, &softmax_rows_block_kernel<G, scalar_t>, kRowBlockThreads);
        FOCAL_LAUNCH(grid, kRowBlockThreads, 0, stream, softmax_rows_block_kernel<G, scalar_t>)(
            x, p.target, loss, grad, rows, C, p.ignore_index, vectorized, k, p.reduce);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

}  // namespace focal::cuda
