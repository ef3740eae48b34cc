// Implementation of focal_cpu_kernels.h. Included by exactly one .cpp per instruction set, which defines
// FOCAL_CPU_NS (and CPU_CAPABILITY for at::vec) first.
//
// One traversal per data layout, one functor per loss:
//   * elementwise (sigmoid dense, binary): flat blocks of kBlock elements;
//   * rows of C contiguous classes (sigmoid class-index targets, softmax (N, C));
//   * spatial (softmax (N, C, d1..dk)): SIMD lanes run along the contiguous spatial dimension.
// Each block writes its partial loss sum and count to its own slot; the slots are added in order.
#pragma once

#ifndef FOCAL_CPU_NS
#error "define FOCAL_CPU_NS before including focal_cpu_kernels_impl.h"
#endif

#include "focal_cpu_kernels.h"
#include "vec_math.h"
#include "../focal_math.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <limits>
#include <type_traits>
#include <vector>

namespace focal::cpu::FOCAL_CPU_NS {
namespace {

using at::vec::Vectorized;

// Elements per reduction block: fixed, so partial sums (and the result) do not depend on thread count.
constexpr int64_t kBlock = 8192;
// Elements of one softmax row group or spatial chunk: its exp(x - max), kept for the gradient pass, stays in
// L1/L2 (one exp per element, not two).
constexpr int64_t kGroupElements = 8192;
// Most spatial positions in one work unit of the spatial softmax.
constexpr int64_t kSpatialChunkMax = 256;

template <typename scalar_t>
using opmath_t = at::opmath_type<scalar_t>;

// Load `count` (1..size) elements as an opmath vector; lanes past count are zero.
template <typename scalar_t>
inline Vectorized<opmath_t<scalar_t>> load_opmath(const scalar_t* p, int64_t count) {
  using Vec = Vectorized<opmath_t<scalar_t>>;
  if (count == Vec::size()) return load_full(p);
  if constexpr (std::is_same_v<scalar_t, opmath_t<scalar_t>>) {
    return Vec::loadu(p, count);
  } else {
    opmath_t<scalar_t> buf[Vec::size()] = {};
    for (int64_t k = 0; k < count; ++k) buf[k] = static_cast<opmath_t<scalar_t>>(p[k]);
    return Vec::loadu(buf);
  }
}

template <typename scalar_t>
inline void store_opmath(const Vectorized<opmath_t<scalar_t>>& v, scalar_t* p, int64_t count) {
  using Vec = Vectorized<opmath_t<scalar_t>>;
  if (count == Vec::size()) return store_full(v, p);
  if constexpr (std::is_same_v<scalar_t, opmath_t<scalar_t>>) {
    v.store(p, count);
  } else {
    opmath_t<scalar_t> buf[Vec::size()];
    v.store(buf);
    for (int64_t k = 0; k < count; ++k) p[k] = static_cast<scalar_t>(buf[k]);
  }
}

template <typename Vec>
inline typename Vec::value_type sum_lanes(const Vec& v) {
  return at::vec::vec_reduce_all([](Vec& a, Vec& b) { return a + b; }, v);
}

// Lane indices base, base+1, ... as an opmath vector (class ids for one-hot comparisons).
template <typename Vec>
inline Vec lane_ids(int64_t base) {
  using T = typename Vec::value_type;
  return Vec::arange(static_cast<T>(base), static_cast<T>(1));
}

template <typename Vec>
inline Vec onehot(const Vec& class_ids, const Vec& target_id) {
  return Vec::blendv(Vec(0), Vec(1), class_ids == target_id);
}

// One-hot of target_id over classes j, j+1, ...: lane k compares k with target_id - j, so the lane indices
// are built once (Vec::arange assembles them lane by lane).
template <typename Vec>
inline Vec onehot_from(int64_t j, const Vec& target_id) {
  static const Vec lanes = lane_ids<Vec>(0);
  return onehot(lanes, target_id - Vec(static_cast<typename Vec::value_type>(j)));
}

// A per-thread scratch array of at least n elements (slot: several may be live at once), reused across calls.
template <typename T, int slot>
inline T* scratch(int64_t n) {
  thread_local std::vector<T> buffer;
  if (static_cast<int64_t>(buffer.size()) < n) buffer.resize(n);
  return buffer.data();
}

// Blocks b0..b1-1 of fn, out of line: at::parallel_for inlines its body twice (the serial path and the OpenMP
// region), and g++ may contract a * b + c into an FMA differently in each copy; one copy keeps the results
// bitwise independent of the thread count.
template <typename BlockFn>
C10_NOINLINE void run_blocks(const BlockFn& fn, int64_t b0, int64_t b1, ForwardSums* partial) {
  for (int64_t b = b0; b < b1; ++b) partial[b] = fn(b);
}

// Runs fn over `num_blocks` blocks in parallel, each returning ForwardSums, and adds them in block order.
template <typename BlockFn>
ForwardSums reduce_blocks(int64_t num_blocks, const BlockFn& fn) {
  std::vector<ForwardSums> partial(static_cast<size_t>(num_blocks));
  at::parallel_for(0, num_blocks, 1, [&](int64_t b0, int64_t b1) { run_blocks(fn, b0, b1, partial.data()); });
  ForwardSums total;
  for (const auto& s : partial) {
    total.loss_sum += s.loss_sum;
    total.count += s.count;
  }
  return total;
}

// No weight: pointwise_segment skips the multiply at compile time.
struct NoWeight {};

// Applies point(x, t, j, cnt, loss, grad) to a contiguous segment (j: the lanes' offset in the segment, the
// class of the first lane for a row), t given by target_at(j, cnt), then multiplies loss and gradient by
// weight_at(j, cnt) unless it is NoWeight. Writes per-element loss and grad * grad_scale when the pointers are
// set; adds the losses to loss_acc (one horizontal sum per block, not per segment).
template <typename scalar_t, typename TargetAt, typename Point, typename WeightAt = NoWeight>
inline void pointwise_segment(const scalar_t* x, int64_t len, const TargetAt& target_at, const Point& point,
                              scalar_t* loss, scalar_t* grad, const Vectorized<opmath_t<scalar_t>>& grad_scale,
                              Vectorized<opmath_t<scalar_t>>& loss_acc, const WeightAt& weight_at = {}) {
  using Vec = Vectorized<opmath_t<scalar_t>>;
  const auto compute = [&](const Vec& xv, int64_t j, int64_t cnt, Vec& l, Vec& g) {
    point(xv, target_at(j, cnt), j, cnt, l, g);
    if constexpr (!std::is_same_v<WeightAt, NoWeight>) {
      const Vec w = weight_at(j, cnt);
      l = l * w;
      g = g * w;
    }
  };
  int64_t j = 0;
  for (; j + Vec::size() <= len; j += Vec::size()) {
    prefetch_ahead(x + j);
    if (grad != nullptr) prefetch_ahead(grad + j, /*write=*/true);
    Vec l, g;
    compute(load_full(x + j), j, Vec::size(), l, g);
    if (loss != nullptr) store_full(l, loss + j);
    if (grad != nullptr) store_full(g * grad_scale, grad + j);
    loss_acc += l;
  }
  if (j < len) {
    const int64_t cnt = len - j;
    Vec l, g;
    compute(load_opmath(x + j, cnt), j, cnt, l, g);
    if (loss != nullptr) store_opmath(l, loss + j, cnt);
    if (grad != nullptr) store_opmath(g * grad_scale, grad + j, cnt);
    loss_acc += Vec::set(Vec(0), l, cnt);  // padded lanes are not data
  }
}

template <typename scalar_t>
inline scalar_t* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<scalar_t>() : nullptr;
}

// Elementwise losses with a dense target of the input's shape in flat blocks (no per-row or per-class
// inputs); `weight`: per element, or null.
template <typename scalar_t, typename Point>
ForwardSums dense_pointwise_forward(const ForwardArgs& args, const Point& point, const opmath_t<scalar_t>* weight) {
  using Vec = Vectorized<opmath_t<scalar_t>>;
  const int64_t n = args.input.numel();
  const scalar_t* x = args.input.data_ptr<scalar_t>();
  const scalar_t* t = args.target.data_ptr<scalar_t>();
  scalar_t* loss = data_or_null<scalar_t>(args.loss_none);
  scalar_t* grad = data_or_null<scalar_t>(args.grad);
  const Vec grad_scale(static_cast<opmath_t<scalar_t>>(args.grad_scale));
  ForwardSums sums = reduce_blocks(at::divup(n, kBlock), [&](int64_t b) {
    const int64_t begin = b * kBlock;
    const int64_t len = std::min(kBlock, n - begin);
    const auto target_at = [&](int64_t j, int64_t cnt) {
      prefetch_ahead(t + begin + j);
      return load_opmath(t + begin + j, cnt);
    };
    Vec acc(0);
    scalar_t* loss_block = loss ? loss + begin : nullptr;
    scalar_t* grad_block = grad ? grad + begin : nullptr;
    if (weight == nullptr) {
      pointwise_segment(x + begin, len, target_at, point, loss_block, grad_block, grad_scale, acc);
    } else {
      const auto weight_at = [&](int64_t j, int64_t cnt) { return Vec::loadu(weight + begin + j, cnt); };
      pointwise_segment(x + begin, len, target_at, point, loss_block, grad_block, grad_scale, acc, weight_at);
    }
    return ForwardSums{static_cast<double>(sum_lanes(acc)), 0};
  });
  sums.count = n;
  return sums;
}

// Rows of C contiguous classes, one integer target per row, in blocks of whole row groups. Targets are
// checked first; then group_fn(first_row, rows, targets) handles each group of up to group_rows rows and
// returns its loss sum, giving ignored rows (target == ignore_index) zero loss and gradient.
// Returns the sum and the number of counted rows.
template <typename GroupFn>
ForwardSums class_rows_forward(const ForwardArgs& args, int64_t rows, int64_t C, int64_t max_target,
                               int64_t group_rows, const GroupFn& group_fn) {
  const int64_t* target = args.target.data_ptr<int64_t>();
  const int64_t groups_per_block = std::max<int64_t>(1, kBlock / std::max<int64_t>(C * group_rows, 1));
  const int64_t rows_per_block = groups_per_block * group_rows;
  return reduce_blocks(at::divup(rows, rows_per_block), [&](int64_t b) {
    ForwardSums s;
    const int64_t r_begin = b * rows_per_block;
    const int64_t r_end = std::min(rows, r_begin + rows_per_block);
    for (int64_t r = r_begin; r < r_end; ++r) {
      const int64_t tgt = target[r];
      if (tgt == args.ignore_index) continue;
      TORCH_CHECK(tgt >= 0 && tgt <= max_target, "target: class index ", tgt, " at position ", r,
                  " is out of range; expected 0 <= target <= ", max_target, " or ignore_index (", args.ignore_index,
                  ")");
      s.count += 1;
    }
    for (int64_t r0 = r_begin; r0 < r_end; r0 += group_rows) {
      s.loss_sum += group_fn(r0, std::min(group_rows, r_end - r0), target + r0);
    }
    return s;
  });
}

// ---- elementwise losses: sigmoid focal, binary focal, varifocal, quality focal, asymmetric -------------------

// Rows of C (the last dim) for the elementwise losses that need the row or class of an element: class-index
// targets (one-hot at target[r], times the row's score; C is background, ignore_index rows are zero and not
// counted), per-row or per-class weights, per-class alpha.
template <typename scalar_t, typename Point>
ForwardSums elementwise_rows_forward(const ForwardArgs& args, const Point& point) {
  using op_t = opmath_t<scalar_t>;
  using Vec = Vectorized<op_t>;
  const int64_t C = args.input.dim() == 0 ? 1 : args.input.size(-1);
  const int64_t rows = C == 0 ? 0 : args.input.numel() / C;
  const bool index_target = args.target.scalar_type() == at::kLong;
  const scalar_t* x = args.input.data_ptr<scalar_t>();
  const scalar_t* dense_target = index_target ? nullptr : args.target.data_ptr<scalar_t>();
  const scalar_t* score = args.score.defined() ? args.score.data_ptr<scalar_t>() : nullptr;
  const op_t* weight = args.weight.defined() ? args.weight.data_ptr<op_t>() : nullptr;
  scalar_t* loss = data_or_null<scalar_t>(args.loss_none);
  scalar_t* grad = data_or_null<scalar_t>(args.grad);
  const Vec grad_scale(static_cast<op_t>(args.grad_scale));

  // One row; tgt: its class index (class-index targets only). Ignored rows are handled by the caller.
  const auto row_forward = [&](int64_t r, int64_t tgt, Vec& acc) {
    scalar_t* loss_row = loss ? loss + r * C : nullptr;
    scalar_t* grad_row = grad ? grad + r * C : nullptr;
    const Vec target_id(static_cast<op_t>(tgt)), q(score ? static_cast<op_t>(score[r]) : op_t(1));
    const auto target_at = [&](int64_t j, int64_t cnt) {
      // a select, not onehot * q: a NaN / inf score is the target class's value only (0 * NaN would spread it)
      return index_target ? fm_select(onehot_from(j, target_id) != Vec(0), q, Vec(0))
                          : load_opmath(dense_target + r * C + j, cnt);
    };
    const auto weight_at = [&](int64_t j, int64_t cnt) {
      switch (args.weight_mode) {
        case WeightMode::kRow: return Vec(weight[r]);
        case WeightMode::kClass: return Vec::loadu(weight + j, cnt);
        default: return Vec::loadu(weight + r * C + j, cnt);
      }
    };
    if (weight == nullptr) {
      pointwise_segment(x + r * C, C, target_at, point, loss_row, grad_row, grad_scale, acc);
    } else {
      pointwise_segment(x + r * C, C, target_at, point, loss_row, grad_row, grad_scale, acc, weight_at);
    }
  };
  const int64_t group_rows = std::max<int64_t>(1, kBlock / std::max<int64_t>(C, 1));
  if (!index_target) {
    ForwardSums sums = reduce_blocks(at::divup(rows, group_rows), [&](int64_t b) {
      Vec acc(0);
      for (int64_t r = b * group_rows; r < std::min(rows, (b + 1) * group_rows); ++r) row_forward(r, -1, acc);
      return ForwardSums{static_cast<double>(sum_lanes(acc)), 0};
    });
    sums.count = args.input.numel();
    return sums;
  }
  // A whole block is one group: one loss accumulator and one horizontal sum per block.
  ForwardSums sums = class_rows_forward(args, rows, C, /*max_target=*/C, group_rows,
                                        [&](int64_t r0, int64_t n, const int64_t* tgt) -> double {
    Vec acc(0);
    for (int64_t i = 0; i < n; ++i) {
      if (tgt[i] == args.ignore_index) {
        if (loss != nullptr) std::fill_n(loss + (r0 + i) * C, C, scalar_t(0));
        if (grad != nullptr) std::fill_n(grad + (r0 + i) * C, C, scalar_t(0));
        continue;
      }
      row_forward(r0 + i, tgt[i], acc);
    }
    return static_cast<double>(sum_lanes(acc));
  });
  sums.count *= C;  // every element of a counted row counts
  return sums;
}

template <typename scalar_t, typename Point>
ForwardSums elementwise_traverse(const ForwardArgs& args, const Point& point) {
  const bool flat = args.target.scalar_type() != at::kLong && !args.class_alpha.defined() &&
                    (args.weight_mode == WeightMode::kNone || args.weight_mode == WeightMode::kElement);
  if (!flat) return elementwise_rows_forward<scalar_t>(args, point);
  using op_t = opmath_t<scalar_t>;
  return dense_pointwise_forward<scalar_t>(args, point, args.weight.defined() ? args.weight.data_ptr<op_t>() : nullptr);
}

// The point functor of each loss, on SIMD vectors: (x, t, first lane's class j, lanes cnt) -> loss, grad.
template <typename scalar_t>
ForwardSums elementwise_forward_typed(const ForwardArgs& args, const ElementwiseLossArgs& la) {
  using op_t = opmath_t<scalar_t>;
  using Vec = Vectorized<op_t>;
  const ElementwiseConstants& c = la.constants;
  const Vec gamma(static_cast<op_t>(c.gamma));
  if (la.kind == ElementwiseLoss::kAsymmetric) {
    const AsymmetricParams<Vec> prm{gamma, Vec(static_cast<op_t>(c.gamma_neg)), Vec(static_cast<op_t>(c.clip)),
                                    Vec(static_cast<op_t>(c.eps)), Vec(static_cast<op_t>(std::log(c.eps))),
                                    c.clip > 0, c.detach_modulation};
    return elementwise_traverse<scalar_t>(args, [&](const Vec& x, const Vec& t, int64_t, int64_t, Vec& l, Vec& g) {
      asymmetric_point(x, t, prm, l, g);
    });
  }
  const auto alpha = AlphaWeight<Vec>::from(c.alpha);
  const op_t* class_alpha = args.class_alpha.defined() ? args.class_alpha.data_ptr<op_t>() : nullptr;
  const Vec smoothing(static_cast<op_t>(c.label_smoothing)), poly(static_cast<op_t>(c.poly_epsilon));
  const bool has_poly = c.poly_epsilon != 0.0;
  const Vec varifocal_alpha(static_cast<op_t>(c.alpha));
  return dispatch_gamma(c.gamma, [&](auto gamma_tag) {
    constexpr int G = decltype(gamma_tag)::value;
    switch (la.kind) {
      case ElementwiseLoss::kSigmoidFocal:
        return elementwise_traverse<scalar_t>(args, [&](const Vec& x, const Vec& t, int64_t j, int64_t cnt, Vec& l,
                                                        Vec& g) {
          AlphaWeight<Vec> a = alpha;
          if (class_alpha != nullptr) {
            const Vec ac = Vec::loadu(class_alpha + j, cnt);
            a = AlphaWeight<Vec>{Vec(1) - ac, Vec(2) * ac - Vec(1)};
          }
          // Poly-1's terms only when its epsilon is nonzero (as the CUDA kernels): 0 * an infinite term is NaN
          if (has_poly) {
            sigmoid_focal_point<G, true>(x, smooth_binary_target(t, smoothing), a, gamma, l, g, poly);
          } else {
            sigmoid_focal_point<G, false>(x, smooth_binary_target(t, smoothing), a, gamma, l, g, poly);
          }
        });
      case ElementwiseLoss::kBinaryFocal:
        return elementwise_traverse<scalar_t>(args, [&](const Vec& p, const Vec& t, int64_t, int64_t, Vec& l, Vec& g) {
          binary_focal_point<G>(p, t, alpha, gamma, l, g);
        });
      case ElementwiseLoss::kVarifocal:
        return elementwise_traverse<scalar_t>(args, [&](const Vec& x, const Vec& q, int64_t, int64_t, Vec& l, Vec& g) {
          varifocal_point<G>(x, q, varifocal_alpha, gamma, c.iou_weighted, l, g);
        });
      case ElementwiseLoss::kQualityFocal:
        return elementwise_traverse<scalar_t>(args, [&](const Vec& x, const Vec& y, int64_t, int64_t, Vec& l, Vec& g) {
          quality_focal_point<G>(x, y, gamma, l, g);
        });
      default:
        TORCH_CHECK(false, "elementwise forward: unknown loss kind ", static_cast<int>(la.kind));
    }
  });
}

// ---- softmax ----------------------------------------------------------------------------------------------

// Smoothed target distribution: q_on at the target class, q_off elsewhere.
template <typename T>
struct SmoothedTarget {
  T on;
  T off;
};

template <typename T>
inline SmoothedTarget<T> smoothed_target(double s, int64_t C) {
  return {static_cast<T>(1.0 - s + s / C), static_cast<T>(s / C)};
}

// Per-lane target data of up to Vec::size() rows or positions: lane k holds the target class, whether it
// counts (not ignored, not padding), alpha of the target class, the logit at the target class and the
// row's weight (row_weight[first_row + k], or 1).
template <typename Vec>
struct LaneTargets {
  using T = typename Vec::value_type;
  __at_align__ T id[Vec::size()] = {};
  __at_align__ T valid[Vec::size()] = {};
  __at_align__ T alpha[Vec::size()] = {};
  __at_align__ T x_t[Vec::size()] = {};
  __at_align__ T weight[Vec::size()] = {};

  // target_of(k) gives lane k's class index, x_of(k, c) its logit at class c.
  template <typename TargetOf, typename XOf>
  LaneTargets(int64_t lanes, int64_t ignore_index, const T* alpha_c, const T* row_weight, int64_t first_row,
              const TargetOf& target_of, const XOf& x_of) {
    for (int64_t k = 0; k < Vec::size(); ++k) alpha[k] = T(1);
    for (int64_t k = 0; k < lanes; ++k) {
      const int64_t tgt = target_of(k);
      if (tgt == ignore_index) continue;
      id[k] = static_cast<T>(tgt);
      valid[k] = T(1);
      alpha[k] = alpha_c ? alpha_c[tgt] : T(1);
      x_t[k] = x_of(k, tgt);
      weight[k] = row_weight ? row_weight[first_row + k] : T(1);
    }
  }
  auto valid_mask() const { return Vec::loadu(valid) != Vec(0); }
  Vec weights() const { return Vec::loadu(weight); }
};

// A row's sum of exp(x - max) as its excess over 1, sum - 1 = below + (ties - 1) with `below` the sum over the
// values under the max and `ties` the count at it: log_sum = log1p(excess) keeps every digit of a confident
// row's loss, where log(sum) of a sum near 1 loses them (F.cross_entropy: 3.5e-3 off at a margin of 14 in float).
template <typename Vec>
inline void add_below_max(const Vec& x, const Vec& row_max, const Vec& e, Vec& below, Vec& ties, int64_t cnt) {
  const auto at_max = x == row_max;
  below += Vec::set(Vec(0), Vec::blendv(e, Vec(0), at_max), cnt);
  ties += Vec::set(Vec(0), Vec::blendv(Vec(0), Vec(1), at_max), cnt);
}
template <typename Vec>
inline Vec softmax_excess(const Vec& below, const Vec& ties) {
  return below + (ties - Vec(1));
}

// Loss and gradient coefficients of up to Vec::size() softmax rows or positions (lane k = one of them), from
// their row max, sum of exp(x - max) and targets. Hard targets: grad_c = coeff (p_c - [c == t]); smoothed:
// loss and coeff come from the per-class terms the caller adds up (see softmax_rows_forward).
// target_pm1: p_t - 1 as expm1(log p_t), exact where p_t is near 1 (p_t - 1 of the rounded p_t cancels).
template <int G, typename Vec>
inline void softmax_hard_target_lanes(const LaneTargets<Vec>& lanes, const Vec& row_max, const Vec& log_sum,
                                      const Vec& gamma, const Vec& poly, const Vec& grad_scale, Vec& loss, Vec& coeff,
                                      Vec& target_pm1) {
  Vec weighted_logp, h;
  const Vec logp_t = log_softmax_value(Vec::loadu(lanes.x_t), row_max, log_sum);
  target_pm1 = logp_t.expm1();
  softmax_focal_class_terms<G>(logp_t, Vec::loadu(lanes.alpha), gamma, weighted_logp, h, poly);
  const auto valid = lanes.valid_mask();
  const Vec w = lanes.weights();
  loss = fm_select(valid, (Vec(0) - weighted_logp) * w, Vec(0));
  coeff = fm_select(valid, h * grad_scale * w, Vec(0));  // ignored rows get an all-zero gradient
}

// Softmax over rows of C contiguous classes (input (N, C) or unbatched (C,)). Up to Vec::size() rows go
// together: lane r of the row max, sum and loss vectors is row r, reduced across rows with reduce_each, so
// there is no horizontal reduction, scalar log or scalar exp per row. Rows too long for that go one at a time.
template <int G, typename scalar_t>
ForwardSums softmax_rows_forward(const ForwardArgs& args, const opmath_t<scalar_t>* alpha, int64_t rows,
                                 int64_t C) {
  using op_t = opmath_t<scalar_t>;
  using Vec = Vectorized<op_t>;
  constexpr int64_t L = Vec::size();
  const scalar_t* x_all = args.input.data_ptr<scalar_t>();
  scalar_t* loss_out = data_or_null<scalar_t>(args.loss_none);
  scalar_t* grad_all = data_or_null<scalar_t>(args.grad);
  const Vec gamma(static_cast<op_t>(args.gamma)), poly(static_cast<op_t>(args.poly_epsilon));
  const Vec grad_scale(static_cast<op_t>(args.grad_scale));
  const op_t* row_weight = args.weight.defined() ? args.weight.data_ptr<op_t>() : nullptr;
  const bool smoothing = args.label_smoothing > 0;
  const auto q = smoothed_target<op_t>(args.label_smoothing, C);
  const op_t neg_inf = -std::numeric_limits<op_t>::infinity();
  const int64_t group_rows = std::clamp<int64_t>(kGroupElements / std::max<int64_t>(C, 1), 1, L);
  const auto max_op = [](const Vec& a, const Vec& b) { return at::vec::maximum(a, b); };
  const auto add_op = [](const Vec& a, const Vec& b) { return a + b; };
  const int64_t full_end = C - C % L;

  return class_rows_forward(args, rows, C, /*max_target=*/C - 1, group_rows,
                            [&](int64_t r0, int64_t n, const int64_t* tgt) -> double {
    const scalar_t* x = x_all + r0 * C;
    op_t* shifted_exp = scratch<op_t, 0>(n * C);  // exp(x - row max), row after row
    Vec partial[L];

    // row maxima
    for (int64_t i = 0; i < L; ++i) partial[i] = Vec(neg_inf);
    for (int64_t i = 0; i < n; ++i) {
      const scalar_t* row = x + i * C;
      Vec m(neg_inf);
      for (int64_t j = 0; j < full_end; j += L) m = at::vec::maximum(m, load_full(row + j));
      if (full_end < C) m = at::vec::maximum(m, Vec::set(Vec(neg_inf), load_opmath(row + full_end, C - full_end), C - full_end));
      partial[i] = m;
    }
    const Vec row_max = reduce_each(partial, max_op);
    __at_align__ op_t max_of[L];
    row_max.store(max_of);

    // exp(x - max), kept for the gradient, and each row's excess (softmax_excess)
    Vec tie_partial[L];
    for (int64_t i = 0; i < L; ++i) partial[i] = tie_partial[i] = Vec(0);
    for (int64_t i = 0; i < n; ++i) {
      const scalar_t* row = x + i * C;
      op_t* e_row = shifted_exp + i * C;
      const Vec m(max_of[i]);
      Vec s(0), ties(0);
      for (int64_t j = 0; j < full_end; j += L) {
        // the next group's logits and gradient: their DRAM traffic overlaps this group's arithmetic
        prefetch_ahead(row + n * C + j - kPrefetchBytes / static_cast<int64_t>(sizeof(scalar_t)));
        if (grad_all != nullptr) {
          prefetch_ahead(grad_all + (r0 + i + n) * C + j - kPrefetchBytes / static_cast<int64_t>(sizeof(scalar_t)),
                         /*write=*/true);
        }
        const Vec xv = load_full(row + j);
        const Vec e = (xv - m).exp();
        e.store(e_row + j);
        add_below_max(xv, m, e, s, ties, L);
      }
      if (full_end < C) {
        const int64_t cnt = C - full_end;
        const Vec xv = load_opmath(row + full_end, cnt);
        const Vec e = Vec::set(Vec(0), (xv - m).exp(), cnt);
        e.store(e_row + full_end, cnt);
        add_below_max(xv, m, e, s, ties, cnt);
      }
      partial[i] = s;
      tie_partial[i] = ties;
    }
    const Vec excess = softmax_excess(reduce_each(partial, add_op), reduce_each(tie_partial, add_op));
    const Vec log_sum = excess.log1p();
    __at_align__ op_t inv_sum_of[L];
    (Vec(1) / (Vec(1) + excess)).store(inv_sum_of);

    const LaneTargets<Vec> lanes(n, args.ignore_index, alpha, row_weight, r0, [&](int64_t i) { return tgt[i]; },
                                 [&](int64_t i, int64_t c) { return static_cast<op_t>(x[i * C + c]); });
    Vec row_loss;
    __at_align__ op_t coeff_of[L];  // hard targets: h_t * grad_scale (0 for ignored rows)
    __at_align__ op_t target_pm1_of[L];  // hard targets: p_t - 1
    op_t* class_qh = nullptr;       // smoothed targets: q_c h_c per class, row after row
    if (!smoothing) {
      Vec coeff, target_pm1;
      softmax_hard_target_lanes<G>(lanes, row_max, log_sum, gamma, poly, grad_scale, row_loss, coeff, target_pm1);
      coeff.store(coeff_of);
      target_pm1.store(target_pm1_of);
    } else {
      // Every class contributes: loss_row = -sum_c q_c w_c, grad_j = (p_j sum_c q_c h_c - q_j h_j) * scale.
      if (grad_all != nullptr) class_qh = scratch<op_t, 1>(n * C);
      __at_align__ op_t log_sum_of[L];
      log_sum.store(log_sum_of);
      Vec qh_partial[L];
      for (int64_t i = 0; i < L; ++i) partial[i] = qh_partial[i] = Vec(0);
      for (int64_t i = 0; i < n; ++i) {
        const scalar_t* row = x + i * C;
        const Vec m(max_of[i]), ls(log_sum_of[i]), target_id(lanes.id[i]);
        for (int64_t j = 0; j < C; j += L) {
          const int64_t cnt = std::min<int64_t>(L, C - j);
          Vec weighted_logp, h;
          softmax_focal_class_terms<G>(log_softmax_value(load_opmath(row + j, cnt), m, ls),
                                       alpha ? Vec::loadu(alpha + j, cnt) : Vec(1), gamma, weighted_logp, h, poly);
          const Vec qv = Vec::blendv(Vec(q.off), Vec(q.on), lane_ids<Vec>(j) == target_id);
          // padded lanes (x = 0 past the row) can give NaN terms: drop them, not multiply by 0
          partial[i] += Vec::set(Vec(0), qv * weighted_logp, cnt);
          qh_partial[i] += Vec::set(Vec(0), qv * h, cnt);
          if (class_qh != nullptr) (qv * h).store(class_qh + i * C + j, cnt);
        }
      }
      const auto valid = lanes.valid_mask();
      row_loss = fm_select(valid, (Vec(0) - reduce_each(partial, add_op)) * lanes.weights(), Vec(0));
      fm_select(valid, reduce_each(qh_partial, add_op), Vec(0)).store(coeff_of);
    }

    if (grad_all != nullptr) {
      for (int64_t i = 0; i < n; ++i) {
        scalar_t* grad = grad_all + (r0 + i) * C;
        if (lanes.valid[i] == op_t(0)) {  // ignored rows: 0 whatever their logits hold (NaN included)
          std::fill_n(grad, C, scalar_t(0));
          continue;
        }
        const op_t* e_row = shifted_exp + i * C;
        const Vec coeff(coeff_of[i]), inv_sum(inv_sum_of[i]), target_id(lanes.id[i]);
        const Vec scale = grad_scale * Vec(lanes.weight[i]);
        for (int64_t j = 0; j < C; j += L) {
          const int64_t cnt = std::min<int64_t>(L, C - j);
          const Vec p = Vec::loadu(e_row + j, cnt) * inv_sum;
          const Vec g = class_qh == nullptr ? coeff * (p - onehot_from(j, target_id))
                                            : (p * coeff - Vec::loadu(class_qh + i * C + j, cnt)) * scale;
          store_opmath(g, grad + j, cnt);
        }
        // the target's p_t - 1 from expm1(log p_t): exact near p_t = 1, where p_t - 1 cancels
        if (class_qh == nullptr) {
          const int64_t t = static_cast<int64_t>(lanes.id[i]);
          grad[t] = static_cast<scalar_t>(coeff_of[i] * target_pm1_of[i]);
        }
      }
    }
    __at_align__ op_t loss_of[L];
    row_loss.store(loss_of);
    double group_loss = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      if (loss_out != nullptr) loss_out[r0 + i] = static_cast<scalar_t>(loss_of[i]);
      group_loss += static_cast<double>(loss_of[i]);
    }
    return group_loss;
  });
}

// Softmax over (N, C, S) with S > 1 spatial positions: SIMD lanes are S-neighbours, so every load is
// contiguous and there is no transpose. One work unit is a chunk of positions of one sample; each pass runs
// over the classes with the chunk's positions innermost (contiguous), and exp(x - max) is kept for the gradient.
template <int G, typename scalar_t>
ForwardSums softmax_spatial_forward(const ForwardArgs& args, const opmath_t<scalar_t>* alpha, int64_t N,
                                    int64_t C, int64_t S) {
  using op_t = opmath_t<scalar_t>;
  using Vec = Vectorized<op_t>;
  constexpr int64_t L = Vec::size();
  constexpr int64_t kMaxVecs = kSpatialChunkMax / L;
  const scalar_t* x_all = args.input.data_ptr<scalar_t>();
  const int64_t* target_all = args.target.data_ptr<int64_t>();
  scalar_t* loss = data_or_null<scalar_t>(args.loss_none);
  scalar_t* grad_all = data_or_null<scalar_t>(args.grad);
  const Vec gamma(static_cast<op_t>(args.gamma)), poly(static_cast<op_t>(args.poly_epsilon));
  const Vec grad_scale(static_cast<op_t>(args.grad_scale));
  const op_t* row_weight = args.weight.defined() ? args.weight.data_ptr<op_t>() : nullptr;
  const bool smoothing = args.label_smoothing > 0;
  const auto q = smoothed_target<op_t>(args.label_smoothing, C);
  const op_t neg_inf = -std::numeric_limits<op_t>::infinity();
  // positions per unit: a multiple of L, at most kSpatialChunkMax, with C x positions of exp values in cache
  const int64_t chunk = std::clamp<int64_t>(kGroupElements / (C * L), 1, kMaxVecs) * L;
  const int64_t chunks_per_sample = at::divup(S, chunk);

  return reduce_blocks(N * chunks_per_sample, [&](int64_t unit) {
    ForwardSums sums;
    const int64_t n = unit / chunks_per_sample;
    const int64_t s_begin = (unit % chunks_per_sample) * chunk;
    const int64_t len = std::min(chunk, S - s_begin);
    const int64_t vecs = at::divup(len, L);
    const scalar_t* x = x_all + n * C * S + s_begin;  // class c of position s_begin + k: x[c * S + k]
    const auto load_at = [&](int64_t c, int64_t v) { return load_opmath(x + c * S + v * L, std::min(L, len - v * L)); };
    op_t* shifted_exp = scratch<op_t, 0>(C * chunk);  // [c][position]
    op_t* class_qh = smoothing && grad_all ? scratch<op_t, 1>(C * chunk) : nullptr;

    Vec vmax[kMaxVecs], vsum[kMaxVecs], vties[kMaxVecs];
    for (int64_t v = 0; v < vecs; ++v) vmax[v] = Vec(neg_inf), vsum[v] = vties[v] = Vec(0);
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t v = 0; v < vecs; ++v) vmax[v] = at::vec::maximum(vmax[v], load_at(c, v));
    }
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t v = 0; v < vecs; ++v) {
        // the next chunk's logits and gradient: their DRAM traffic overlaps this chunk's arithmetic
        const int64_t next = c * S + chunk + v * L - kPrefetchBytes / static_cast<int64_t>(sizeof(scalar_t));
        prefetch_ahead(x + next);
        if (grad_all != nullptr) prefetch_ahead(grad_all + n * C * S + s_begin + next, /*write=*/true);
        const Vec xv = load_at(c, v);
        const Vec e = (xv - vmax[v]).exp();
        e.store(shifted_exp + c * chunk + v * L);
        add_below_max(xv, vmax[v], e, vsum[v], vties[v], L);  // lanes past the chunk are never read
      }
    }

    // per vector of positions: targets, loss, gradient coefficients
    Vec coeff[kMaxVecs], scale[kMaxVecs], target_id[kMaxVecs], inv_sum[kMaxVecs], valid_of[kMaxVecs];
    Vec target_pm1[kMaxVecs];  // hard targets: p_t - 1
    Vec loss_acc(0);
    for (int64_t v = 0; v < vecs; ++v) {
      const int64_t cnt = std::min(L, len - v * L);
      const int64_t pos = n * S + s_begin + v * L;
      const LaneTargets<Vec> lanes(cnt, args.ignore_index, alpha, row_weight, pos, [&](int64_t k) {
        const int64_t tgt = target_all[pos + k];
        TORCH_CHECK(tgt == args.ignore_index || (tgt >= 0 && tgt < C), "target: class index ", tgt, " at position ",
                    pos + k, " is out of range; expected 0 <= target < ", C, " or ignore_index (", args.ignore_index,
                    ")");
        return tgt;
      }, [&](int64_t k, int64_t c) { return static_cast<op_t>(x[c * S + v * L + k]); });
      for (int64_t k = 0; k < cnt; ++k) sums.count += lanes.valid[k] != op_t(0);
      const Vec excess = softmax_excess(vsum[v], vties[v]);
      const Vec log_sum = excess.log1p();
      inv_sum[v] = Vec(1) / (Vec(1) + excess);
      target_id[v] = Vec::loadu(lanes.id);
      valid_of[v] = Vec::loadu(lanes.valid);
      const auto valid = lanes.valid_mask();
      Vec lane_loss;
      if (!smoothing) {
        softmax_hard_target_lanes<G>(lanes, vmax[v], log_sum, gamma, poly, grad_scale, lane_loss, coeff[v],
                                     target_pm1[v]);
      } else {
        Vec loss_sum(0), qh_sum(0);
        for (int64_t c = 0; c < C; ++c) {
          Vec weighted_logp, h;
          softmax_focal_class_terms<G>(log_softmax_value(load_at(c, v), vmax[v], log_sum),
                                       Vec(alpha ? alpha[c] : op_t(1)), gamma, weighted_logp, h, poly);
          const Vec qv = Vec::blendv(Vec(q.off), Vec(q.on), target_id[v] == Vec(static_cast<op_t>(c)));
          loss_sum += qv * weighted_logp;
          qh_sum += qv * h;
          if (class_qh != nullptr) (qv * h).store(class_qh + c * chunk + v * L);
        }
        lane_loss = fm_select(valid, (Vec(0) - loss_sum) * lanes.weights(), Vec(0));
        coeff[v] = qh_sum;
        scale[v] = fm_select(valid, grad_scale * lanes.weights(), Vec(0));
      }
      if (loss != nullptr) store_opmath(lane_loss, loss + pos, cnt);
      loss_acc += Vec::set(Vec(0), lane_loss, cnt);
    }
    sums.loss_sum = static_cast<double>(sum_lanes(loss_acc));

    if (grad_all != nullptr) {
      scalar_t* grad = grad_all + n * C * S + s_begin;
      for (int64_t c = 0; c < C; ++c) {
        const Vec class_id(static_cast<op_t>(c));
        for (int64_t v = 0; v < vecs; ++v) {
          const int64_t cnt = std::min(L, len - v * L);
          const Vec p = Vec::loadu(shifted_exp + c * chunk + v * L) * inv_sum[v];
          // ignored positions: 0 whatever their logits hold (a select: NaN * 0 would be NaN)
          const Vec g = fm_select(valid_of[v] != Vec(0),
                                  class_qh == nullptr
                                      ? coeff[v] * fm_select(class_id == target_id[v], target_pm1[v], p)
                                      : (p * coeff[v] - Vec::loadu(class_qh + c * chunk + v * L)) * scale[v],
                                  Vec(0));
          store_opmath(g, grad + c * S + v * L, cnt);
        }
      }
    }
    return sums;
  });
}

template <typename scalar_t>
ForwardSums softmax_focal_forward_typed(const ForwardArgs& args, const at::Tensor& alpha_tensor) {
  using op_t = opmath_t<scalar_t>;
  const op_t* alpha = alpha_tensor.defined() ? alpha_tensor.data_ptr<op_t>() : nullptr;
  const bool unbatched = args.input.dim() == 1;
  const int64_t N = unbatched ? 1 : args.input.size(0);
  const int64_t C = unbatched ? args.input.size(0) : args.input.size(1);
  const int64_t S = (N == 0 || C == 0) ? 0 : args.input.numel() / (N * C);
  return dispatch_gamma(args.gamma, [&](auto g) {
    constexpr int G = decltype(g)::value;
    if (S == 1 || N * S == 0) return softmax_rows_forward<G, scalar_t>(args, alpha, N * S, C);
    return softmax_spatial_forward<G, scalar_t>(args, alpha, N, C, S);
  });
}

}  // namespace

ForwardSums elementwise_forward(const ForwardArgs& args, const ElementwiseLossArgs& loss) {
  return AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, args.input.scalar_type(), "focal_elementwise_fwd",
                                         [&] { return elementwise_forward_typed<scalar_t>(args, loss); });
}

ForwardSums softmax_focal_forward(const ForwardArgs& args, const at::Tensor& alpha) {
  return AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, args.input.scalar_type(), "softmax_focal_fwd",
                                         [&] { return softmax_focal_forward_typed<scalar_t>(args, alpha); });
}

}  // namespace focal::cpu::FOCAL_CPU_NS
