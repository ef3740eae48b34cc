// Softmax focal loss over (N, C, d1..dk) input: SIMD lanes along the contiguous spatial positions.
#pragma once

#ifndef FOCAL_CPU_NS
#error "define FOCAL_CPU_NS before including softmax_spatial.h (through focal_cpu_kernels_impl.h)"
#endif

#include "softmax_rows.h"

namespace focal::cpu::FOCAL_CPU_NS {
namespace {

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
      const Vec log_sum = fm_log1p(excess);
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

}  // namespace
}  // namespace focal::cpu::FOCAL_CPU_NS
