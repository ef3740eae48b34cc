// The elementwise losses on CPU (sigmoid focal, binary focal, varifocal, quality focal, asymmetric): one point
// functor of focal_math.h per loss over the dense or the rows-of-C traversal (traversal.h).
#pragma once

#ifndef FOCAL_CPU_NS
#error "define FOCAL_CPU_NS before including elementwise_kernels.h (through focal_cpu_kernels_impl.h)"
#endif

#include "traversal.h"

namespace focal::cpu::FOCAL_CPU_NS {
namespace {

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
    const auto prm = AsymmetricParams<Vec>::template make<op_t>(c.gamma, c.gamma_neg, c.clip, c.eps);
    const auto asymmetric = [&](auto clip_tag, auto detach_tag) {
      constexpr bool kClip = decltype(clip_tag)::value, kDetach = decltype(detach_tag)::value;
      return elementwise_traverse<scalar_t>(args, [&](const Vec& x, const Vec& t, int64_t, int64_t, Vec& l, Vec& g) {
        asymmetric_point<kClip, kDetach>(x, t, prm, l, g);
      });
    };
    if (c.clip > 0) {
      return c.detach_modulation ? asymmetric(std::true_type{}, std::true_type{})
                                 : asymmetric(std::true_type{}, std::false_type{});
    }
    return c.detach_modulation ? asymmetric(std::false_type{}, std::true_type{})
                               : asymmetric(std::false_type{}, std::false_type{});
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
            a = AlphaWeight<Vec>::of(ac);
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
          bool invalid;  // checked on the host before the kernel
          binary_focal_point<G>(p, t, alpha, gamma, l, g, invalid);
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

}  // namespace
}  // namespace focal::cpu::FOCAL_CPU_NS
