// Softmax focal loss over rows of C contiguous classes ((N, C) input), and the helpers the spatial layout shares:
// smoothed targets, per-lane targets, the log-sum as log1p of the below-max excess.
#pragma once

#ifndef FOCAL_CPU_NS
#error "define FOCAL_CPU_NS before including softmax_rows.h (through focal_cpu_kernels_impl.h)"
#endif

#include "traversal.h"

namespace focal::cpu::FOCAL_CPU_NS {
namespace {

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
  target_pm1 = fm_expm1(logp_t);
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
    const Vec log_sum = fm_log1p(excess);
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

}  // namespace
}  // namespace focal::cpu::FOCAL_CPU_NS
