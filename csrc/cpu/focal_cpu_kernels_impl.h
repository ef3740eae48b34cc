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
// Spatial positions per work unit of the spatial softmax.
constexpr int64_t kSpatialChunk = 256;

template <typename scalar_t>
using opmath_t = at::opmath_type<scalar_t>;

// Load `count` (1..size) elements as an opmath vector; lanes past count are zero.
template <typename scalar_t>
inline Vectorized<opmath_t<scalar_t>> load_opmath(const scalar_t* p, int64_t count) {
  using Vec = Vectorized<opmath_t<scalar_t>>;
  if constexpr (std::is_same_v<scalar_t, opmath_t<scalar_t>>) {
    return count == Vec::size() ? Vec::loadu(p) : Vec::loadu(p, count);
  } else {
    opmath_t<scalar_t> buf[Vec::size()] = {};
    for (int64_t k = 0; k < count; ++k) buf[k] = static_cast<opmath_t<scalar_t>>(p[k]);
    return Vec::loadu(buf);
  }
}

template <typename scalar_t>
inline void store_opmath(const Vectorized<opmath_t<scalar_t>>& v, scalar_t* p, int64_t count) {
  using Vec = Vectorized<opmath_t<scalar_t>>;
  if constexpr (std::is_same_v<scalar_t, opmath_t<scalar_t>>) {
    if (count == Vec::size()) {
      v.store(p);
    } else {
      v.store(p, count);
    }
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

// Runs fn over `num_blocks` blocks in parallel, each returning ForwardSums, and adds them in block order.
template <typename BlockFn>
ForwardSums reduce_blocks(int64_t num_blocks, const BlockFn& fn) {
  std::vector<ForwardSums> partial(static_cast<size_t>(num_blocks));
  at::parallel_for(0, num_blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) partial[b] = fn(b);
  });
  ForwardSums total;
  for (const auto& s : partial) {
    total.loss_sum += s.loss_sum;
    total.count += s.count;
  }
  return total;
}

// Applies point(x, t, loss, grad) to a contiguous segment, t given by target_at(offset, count).
// Writes per-element loss and grad * grad_scale when the pointers are set; returns the segment's loss sum.
template <typename scalar_t, typename TargetAt, typename Point>
inline opmath_t<scalar_t> pointwise_segment(const scalar_t* x, int64_t len, const TargetAt& target_at,
                                            const Point& point, scalar_t* loss, scalar_t* grad, double grad_scale) {
  using Vec = Vectorized<opmath_t<scalar_t>>;
  const Vec scale(static_cast<opmath_t<scalar_t>>(grad_scale));
  Vec acc(0);
  for (int64_t j = 0; j < len; j += Vec::size()) {
    const int64_t cnt = std::min<int64_t>(Vec::size(), len - j);
    Vec l, g;
    point(load_opmath(x + j, cnt), target_at(j, cnt), l, g);
    if (loss != nullptr) store_opmath(l, loss + j, cnt);
    if (grad != nullptr) store_opmath(g * scale, grad + j, cnt);
    acc += cnt == Vec::size() ? l : Vec::set(Vec(0), l, cnt);  // padded lanes are not data
  }
  return sum_lanes(acc);
}

template <typename scalar_t>
inline scalar_t* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<scalar_t>() : nullptr;
}

// Elementwise losses with a dense target of the input's shape (sigmoid dense, binary).
template <typename scalar_t, typename Point>
ForwardSums dense_pointwise_forward(const ForwardArgs& args, const Point& point) {
  const int64_t n = args.input.numel();
  const scalar_t* x = args.input.data_ptr<scalar_t>();
  const scalar_t* t = args.target.data_ptr<scalar_t>();
  scalar_t* loss = data_or_null<scalar_t>(args.loss_none);
  scalar_t* grad = data_or_null<scalar_t>(args.grad);
  ForwardSums sums = reduce_blocks(at::divup(n, kBlock), [&](int64_t b) {
    const int64_t begin = b * kBlock;
    const int64_t len = std::min(kBlock, n - begin);
    const auto target_at = [&](int64_t j, int64_t cnt) { return load_opmath(t + begin + j, cnt); };
    const double s = pointwise_segment(x + begin, len, target_at, point, loss ? loss + begin : nullptr,
                                       grad ? grad + begin : nullptr, args.grad_scale);
    return ForwardSums{s, 0};
  });
  sums.count = n;
  return sums;
}

// Rows of C contiguous classes, one integer target per row. row_fn(row, target, x_row, loss_row_sum_out)
// handles a counted row; ignored rows get zero loss and gradient. Returns the sum and the counted rows.
template <typename scalar_t, typename RowFn>
ForwardSums class_rows_forward(const ForwardArgs& args, int64_t rows, int64_t C, int64_t max_target,
                               const RowFn& row_fn) {
  const int64_t* target = args.target.data_ptr<int64_t>();
  scalar_t* grad = data_or_null<scalar_t>(args.grad);
  const int64_t rows_per_block = std::max<int64_t>(1, kBlock / std::max<int64_t>(C, 1));
  return reduce_blocks(at::divup(rows, rows_per_block), [&](int64_t b) {
    ForwardSums s;
    const int64_t r_end = std::min(rows, (b + 1) * rows_per_block);
    for (int64_t r = b * rows_per_block; r < r_end; ++r) {
      const int64_t tgt = target[r];
      if (tgt == args.ignore_index) {
        if (grad != nullptr) std::fill_n(grad + r * C, C, scalar_t(0));
        row_fn(r, tgt, /*ignored=*/true);
        continue;
      }
      TORCH_CHECK(tgt >= 0 && tgt <= max_target, "target: class index ", tgt, " at position ", r,
                        " is out of range; expected 0 <= target <= ", max_target, " or ignore_index (",
                        args.ignore_index, ")");
      s.loss_sum += row_fn(r, tgt, /*ignored=*/false);
      s.count += 1;
    }
    return s;
  });
}

// ---- sigmoid ---------------------------------------------------------------------------------------------

template <typename scalar_t>
ForwardSums sigmoid_focal_forward_typed(const ForwardArgs& args, double alpha_value) {
  using op_t = opmath_t<scalar_t>;
  using Vec = Vectorized<op_t>;
  const auto alpha = AlphaWeight<Vec>::from(alpha_value);
  const Vec gamma(static_cast<op_t>(args.gamma));
  const Vec smoothing(static_cast<op_t>(args.label_smoothing));
  return dispatch_gamma(args.gamma, [&](auto g) {
    constexpr int G = decltype(g)::value;
    const auto point = [&](const Vec& x, const Vec& t, Vec& l, Vec& gr) {
      sigmoid_focal_point<G>(x, smooth_binary_target(t, smoothing), alpha, gamma, l, gr);
    };
    if (args.target.scalar_type() != at::kLong) return dense_pointwise_forward<scalar_t>(args, point);

    // Class-index targets: row r is one-hot at target[r]; target == C is background (all negative).
    const int64_t C = args.input.size(-1);
    const int64_t rows = C == 0 ? 0 : args.input.numel() / C;
    const scalar_t* x = args.input.data_ptr<scalar_t>();
    scalar_t* loss = data_or_null<scalar_t>(args.loss_none);
    scalar_t* grad = data_or_null<scalar_t>(args.grad);
    ForwardSums sums = class_rows_forward<scalar_t>(args, rows, C, /*max_target=*/C, [&](int64_t r, int64_t tgt,
                                                                                          bool ignored) {
      scalar_t* loss_row = loss ? loss + r * C : nullptr;
      if (ignored) {
        if (loss_row != nullptr) std::fill_n(loss_row, C, scalar_t(0));
        return 0.0;
      }
      const Vec target_id(static_cast<op_t>(tgt));
      const auto target_at = [&](int64_t j, int64_t) {
        return Vec::blendv(Vec(0), Vec(1), lane_ids<Vec>(j) == target_id);
      };
      return static_cast<double>(
          pointwise_segment(x + r * C, C, target_at, point, loss_row, grad ? grad + r * C : nullptr, args.grad_scale));
    });
    sums.count *= C;  // every element of a counted row counts
    return sums;
  });
}

// ---- binary on probabilities ------------------------------------------------------------------------------

template <typename scalar_t>
ForwardSums binary_focal_forward_typed(const ForwardArgs& args, double alpha_value) {
  using Vec = Vectorized<opmath_t<scalar_t>>;
  const auto alpha = AlphaWeight<Vec>::from(alpha_value);
  const Vec gamma(static_cast<opmath_t<scalar_t>>(args.gamma));
  return dispatch_gamma(args.gamma, [&](auto g) {
    constexpr int G = decltype(g)::value;
    const auto point = [&](const Vec& p, const Vec& t, Vec& l, Vec& gr) {
      binary_focal_point<G>(p, t, alpha, gamma, l, gr);
    };
    return dense_pointwise_forward<scalar_t>(args, point);
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

// Softmax over rows of C contiguous classes (input (N, C) or unbatched (C,)).
template <int G, typename scalar_t>
ForwardSums softmax_rows_forward(const ForwardArgs& args, const opmath_t<scalar_t>* alpha, int64_t rows,
                                 int64_t C) {
  using op_t = opmath_t<scalar_t>;
  using Vec = Vectorized<op_t>;
  const scalar_t* x_all = args.input.data_ptr<scalar_t>();
  scalar_t* loss = data_or_null<scalar_t>(args.loss_none);
  scalar_t* grad_all = data_or_null<scalar_t>(args.grad);
  const op_t gamma_s = static_cast<op_t>(args.gamma);
  const Vec gamma(gamma_s);
  const op_t grad_scale = static_cast<op_t>(args.grad_scale);
  const bool smoothing = args.label_smoothing > 0;
  const auto q = smoothed_target<op_t>(args.label_smoothing, C);
  const auto alpha_at = [&](int64_t j, int64_t cnt) { return alpha ? Vec::loadu(alpha + j, cnt) : Vec(1); };
  const op_t neg_inf = -std::numeric_limits<op_t>::infinity();
  const auto scratch_row = [](int64_t n) {
    thread_local std::vector<op_t> buffer;
    if (static_cast<int64_t>(buffer.size()) < n) buffer.resize(n);
    return buffer.data();
  };

  return class_rows_forward<scalar_t>(args, rows, C, /*max_target=*/C - 1, [&](int64_t r, int64_t tgt,
                                                                                bool ignored) -> double {
    if (ignored) {
      if (loss != nullptr) loss[r] = scalar_t(0);
      return 0.0;
    }
    const scalar_t* x = x_all + r * C;
    scalar_t* grad = grad_all ? grad_all + r * C : nullptr;
    // log-sum-exp: max pass, then sum of exp(x - max)
    Vec vmax(neg_inf);
    for (int64_t j = 0; j < C; j += Vec::size()) {
      const int64_t cnt = std::min<int64_t>(Vec::size(), C - j);
      vmax = at::vec::maximum(vmax, Vec::set(Vec(neg_inf), load_opmath(x + j, cnt), cnt));
    }
    const op_t row_max_s = at::vec::vec_reduce_all([](Vec& a, Vec& b) { return at::vec::maximum(a, b); }, vmax);
    const Vec row_max(row_max_s);
    // exp(x - max) is kept in `shifted_exp` so the gradient pass needs no second exp.
    op_t* shifted_exp = scratch_row(C);
    Vec vsum(0);
    for (int64_t j = 0; j < C; j += Vec::size()) {
      const int64_t cnt = std::min<int64_t>(Vec::size(), C - j);
      const Vec e = Vec::set(Vec(0), (load_opmath(x + j, cnt) - row_max).exp(), cnt);
      e.store(shifted_exp + j, cnt);
      vsum += e;
    }
    const op_t sum_exp = sum_lanes(vsum);
    const op_t log_sum_s = std::log(sum_exp);
    const Vec log_sum(log_sum_s);

    if (!smoothing) {
      // One-hot target: loss = -alpha_t (1-p_t)^g log p_t, grad_j = h_t (p_j - [j == t]).
      op_t weighted_logp, h;
      const op_t logp_t = log_softmax_value(static_cast<op_t>(x[tgt]), row_max_s, log_sum_s);
      softmax_focal_class_terms<G>(logp_t, alpha ? alpha[tgt] : op_t(1), gamma_s, weighted_logp, h);
      if (grad != nullptr) {
        const Vec h_vec(h * grad_scale), target_id(static_cast<op_t>(tgt)), inv_sum_exp(op_t(1) / sum_exp);
        for (int64_t j = 0; j < C; j += Vec::size()) {
          const int64_t cnt = std::min<int64_t>(Vec::size(), C - j);
          const Vec p = Vec::loadu(shifted_exp + j, cnt) * inv_sum_exp;
          const Vec onehot = Vec::blendv(Vec(0), Vec(1), lane_ids<Vec>(j) == target_id);
          store_opmath(h_vec * (p - onehot), grad + j, cnt);
        }
      }
      if (loss != nullptr) loss[r] = static_cast<scalar_t>(-weighted_logp);
      return -static_cast<double>(weighted_logp);
    }

    // Smoothed target: every class contributes; grad_j = -q_j h_j + p_j sum_c q_c h_c.
    const Vec target_id(static_cast<op_t>(tgt));
    Vec loss_acc(0), qh_acc(0);
    for (int64_t j = 0; j < C; j += Vec::size()) {
      const int64_t cnt = std::min<int64_t>(Vec::size(), C - j);
      Vec weighted_logp, h;
      softmax_focal_class_terms<G>(log_softmax_value(load_opmath(x + j, cnt), row_max, log_sum), alpha_at(j, cnt), gamma,
                                   weighted_logp, h);
      // Padded lanes (x = 0 past the row) can give log p > 0 and NaN terms: drop them, not multiply by 0.
      const Vec qv = Vec::blendv(Vec(q.off), Vec(q.on), lane_ids<Vec>(j) == target_id);
      loss_acc += Vec::set(Vec(0), qv * weighted_logp, cnt);
      qh_acc += Vec::set(Vec(0), qv * h, cnt);
    }
    if (grad != nullptr) {
      const Vec qh_sum(sum_lanes(qh_acc));
      for (int64_t j = 0; j < C; j += Vec::size()) {
        const int64_t cnt = std::min<int64_t>(Vec::size(), C - j);
        Vec weighted_logp, h;
        const Vec logp = log_softmax_value(load_opmath(x + j, cnt), row_max, log_sum);
        softmax_focal_class_terms<G>(logp, alpha_at(j, cnt), gamma, weighted_logp, h);
        const Vec qv = Vec::blendv(Vec(q.off), Vec(q.on), lane_ids<Vec>(j) == target_id);
        store_opmath((logp.exp() * qh_sum - qv * h) * Vec(grad_scale), grad + j, cnt);
      }
    }
    const op_t row_loss = -sum_lanes(loss_acc);
    if (loss != nullptr) loss[r] = static_cast<scalar_t>(row_loss);
    return static_cast<double>(row_loss);
  });
}

// Softmax over (N, C, S) with S > 1 spatial positions: SIMD lanes are S-neighbours, so every load is
// contiguous and there is no transpose. One work unit is kSpatialChunk positions of one sample.
template <int G, typename scalar_t>
ForwardSums softmax_spatial_forward(const ForwardArgs& args, const opmath_t<scalar_t>* alpha, int64_t N,
                                    int64_t C, int64_t S) {
  using op_t = opmath_t<scalar_t>;
  using Vec = Vectorized<op_t>;
  constexpr int64_t kLanes = Vec::size();
  const scalar_t* x_all = args.input.data_ptr<scalar_t>();
  const int64_t* target_all = args.target.data_ptr<int64_t>();
  scalar_t* loss = data_or_null<scalar_t>(args.loss_none);
  scalar_t* grad_all = data_or_null<scalar_t>(args.grad);
  const Vec gamma(static_cast<op_t>(args.gamma));
  const Vec grad_scale(static_cast<op_t>(args.grad_scale));
  const bool smoothing = args.label_smoothing > 0;
  const auto q = smoothed_target<op_t>(args.label_smoothing, C);
  const op_t neg_inf = -std::numeric_limits<op_t>::infinity();
  const int64_t chunks_per_sample = at::divup(S, kSpatialChunk);

  return reduce_blocks(N * chunks_per_sample, [&](int64_t unit) {
    ForwardSums sums;
    const int64_t n = unit / chunks_per_sample;
    const int64_t s_end = std::min(S, (unit % chunks_per_sample + 1) * kSpatialChunk);
    const scalar_t* x_n = x_all + n * C * S;
    scalar_t* grad_n = grad_all ? grad_all + n * C * S : nullptr;
    std::vector<op_t> qh_scratch(smoothing && grad_n ? C * kLanes : 0);
    for (int64_t s0 = (unit % chunks_per_sample) * kSpatialChunk; s0 < s_end; s0 += kLanes) {
      const int64_t cnt = std::min<int64_t>(kLanes, s_end - s0);
      // Per-lane target, validity, alpha_t and x at the target class (ignored lanes use class 0).
      op_t tgt_buf[kLanes] = {}, valid_buf[kLanes] = {}, alpha_t_buf[kLanes], x_t_buf[kLanes] = {};
      for (int64_t k = 0; k < kLanes; ++k) alpha_t_buf[k] = op_t(1);
      for (int64_t k = 0; k < cnt; ++k) {
        const int64_t pos = n * S + s0 + k;
        const int64_t tgt = target_all[pos];
        if (tgt == args.ignore_index) continue;
        TORCH_CHECK(tgt >= 0 && tgt < C, "target: class index ", tgt, " at position ", pos,
                          " is out of range; expected 0 <= target < ", C, " or ignore_index (", args.ignore_index,
                          ")");
        tgt_buf[k] = static_cast<op_t>(tgt);
        valid_buf[k] = op_t(1);
        alpha_t_buf[k] = alpha ? alpha[tgt] : op_t(1);
        x_t_buf[k] = static_cast<op_t>(x_n[tgt * S + s0 + k]);
        sums.count += 1;
      }
      const Vec target_id = Vec::loadu(tgt_buf), valid = Vec::loadu(valid_buf);
      const auto valid_mask = valid != Vec(0);

      Vec vmax(neg_inf);
      for (int64_t c = 0; c < C; ++c) vmax = at::vec::maximum(vmax, load_opmath(x_n + c * S + s0, cnt));
      Vec vsum(0);
      for (int64_t c = 0; c < C; ++c) vsum += (load_opmath(x_n + c * S + s0, cnt) - vmax).exp();
      const Vec log_sum = vsum.log();

      Vec lane_loss, qh_sum;
      if (!smoothing) {
        Vec weighted_logp, h;
        softmax_focal_class_terms<G>(log_softmax_value(Vec::loadu(x_t_buf), vmax, log_sum), Vec::loadu(alpha_t_buf), gamma,
                                     weighted_logp, h);
        lane_loss = Vec(0) - weighted_logp;
        qh_sum = h;  // grad_c = h_t (p_c - [c == t])
      } else {
        Vec loss_acc(0), qh_acc(0);
        for (int64_t c = 0; c < C; ++c) {
          Vec weighted_logp, h;
          softmax_focal_class_terms<G>(log_softmax_value(load_opmath(x_n + c * S + s0, cnt), vmax, log_sum),
                                       Vec(alpha ? alpha[c] : op_t(1)),
                                       gamma, weighted_logp, h);
          const Vec qv = Vec::blendv(Vec(q.off), Vec(q.on), target_id == Vec(static_cast<op_t>(c)));
          loss_acc += qv * weighted_logp;
          qh_acc += qv * h;
          if (!qh_scratch.empty()) (qv * h).store(qh_scratch.data() + c * kLanes);
        }
        lane_loss = Vec(0) - loss_acc;
        qh_sum = qh_acc;
      }
      lane_loss = fm_select(valid_mask, lane_loss, Vec(0));
      if (loss != nullptr) store_opmath(lane_loss, loss + n * S + s0, cnt);
      sums.loss_sum += static_cast<double>(sum_lanes(Vec::set(Vec(0), lane_loss, cnt)));

      if (grad_n != nullptr) {
        for (int64_t c = 0; c < C; ++c) {
          const Vec p = log_softmax_value(load_opmath(x_n + c * S + s0, cnt), vmax, log_sum).exp();
          Vec g;
          if (!smoothing) {
            const Vec onehot = Vec::blendv(Vec(0), Vec(1), target_id == Vec(static_cast<op_t>(c)));
            g = qh_sum * (p - onehot);
          } else {
            g = p * qh_sum - Vec::loadu(qh_scratch.data() + c * kLanes);
          }
          store_opmath(fm_select(valid_mask, g * grad_scale, Vec(0)), grad_n + c * S + s0, cnt);
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

ForwardSums sigmoid_focal_forward(const ForwardArgs& args, double alpha) {
  return AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, args.input.scalar_type(), "sigmoid_focal_fwd",
                                         [&] { return sigmoid_focal_forward_typed<scalar_t>(args, alpha); });
}

ForwardSums softmax_focal_forward(const ForwardArgs& args, const at::Tensor& alpha) {
  return AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, args.input.scalar_type(), "softmax_focal_fwd",
                                         [&] { return softmax_focal_forward_typed<scalar_t>(args, alpha); });
}

ForwardSums binary_focal_forward(const ForwardArgs& args, double alpha) {
  return AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, args.input.scalar_type(), "binary_focal_fwd",
                                         [&] { return binary_focal_forward_typed<scalar_t>(args, alpha); });
}

}  // namespace focal::cpu::FOCAL_CPU_NS
