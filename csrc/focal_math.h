// The one place the focal-loss formulas live. Shared by the CPU kernels (instantiated with float/double
// and with at::vec::Vectorized<float/double>) and the CUDA kernels (float/double on the device).
//
// Every function is a template over the math type T. The primitives fm_* below cover the scalar types;
// csrc/cpu/vec_math.h adds overloads for Vectorized and must be included before this header there.
#pragma once

#include "loss_kinds.h"

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

// The formulas below come in two builds of the same source, kept apart by an inline namespace (so the two
// never meet as one symbol in a link): `exact` (CPU kernels; float primitives from libm / at::vec) and
// `device_approx` (the CUDA kernels, also when emulated: float primitives from approx_math.h).
#if defined(FOCAL_DEVICE_APPROX_MATH)
#include "approx_math.h"
#define FOCAL_MATH_VARIANT device_approx
#else
#define FOCAL_MATH_VARIANT exact
#endif

namespace focal {
inline namespace FOCAL_MATH_VARIANT {

// ---- scalar primitives -------------------------------------------------------------------------------
#define FOCAL_SCALAR_PRIMITIVES(T)                                                             \
  C10_HOST_DEVICE inline T fm_exp(T x) { return std::exp(x); }                                 \
  C10_HOST_DEVICE inline T fm_expm1(T x) { return std::expm1(x); }                             \
  C10_HOST_DEVICE inline T fm_log(T x) { return std::log(x); }                                 \
  C10_HOST_DEVICE inline T fm_log1p(T x) { return std::log1p(x); }                             \
  /* log1p for arguments in [0, 1]; the SIMD and device versions use that range for a cheaper series */ \
  C10_HOST_DEVICE inline T fm_log1p_unit(T x) { return std::log1p(x); }                        \
  C10_HOST_DEVICE inline T fm_reciprocal(T x) { return T(1) / x; }                             \
  C10_HOST_DEVICE inline T fm_fma(T a, T b, T c) { return a * b + c; }
#define FOCAL_SELECT_PRIMITIVES(T)                                                             \
  C10_HOST_DEVICE inline T fm_abs(T x) { return std::abs(x); }                                 \
  C10_HOST_DEVICE inline T fm_select(bool cond, T a, T b) { return cond ? a : b; }
/* max that propagates a NaN in either argument */
#define FOCAL_MAX_PRIMITIVE(T) \
  C10_HOST_DEVICE inline T fm_max(T a, T b) { return a != a ? a : (a > b ? a : b); }
#if defined(FOCAL_DEVICE_APPROX_MATH)
C10_HOST_DEVICE inline float fm_exp(float x) { return approx::exp(x); }
C10_HOST_DEVICE inline float fm_expm1(float x) { return approx::expm1(x); }
C10_HOST_DEVICE inline float fm_log(float x) { return approx::log(x); }
C10_HOST_DEVICE inline float fm_log1p(float x) { return approx::log1p(x); }
C10_HOST_DEVICE inline float fm_log1p_unit(float x) { return approx::log1p_unit(x); }
C10_HOST_DEVICE inline void fm_log_and_log1m(float p, float& log_p, float& log_q) { approx::log_and_log1m(p, log_p, log_q); }
C10_HOST_DEVICE inline float fm_reciprocal(float x) { return approx::reciprocal(x); }
C10_HOST_DEVICE inline float fm_div(float a, float b) { return approx::divide(a, b); }
C10_HOST_DEVICE inline float fm_pow(float x, float y) { return approx::pow(x, y); }
C10_HOST_DEVICE inline float fm_fma(float a, float b, float c) { return approx::fma(a, b, c); }
C10_HOST_DEVICE inline float fm_max(float a, float b) { return approx::max_nan(a, b); }
// double: x**y for x in [0, 1], y >= 0 as exp(y log x), which nvcc inlines (libdevice's pow is a call whose
// saved registers give the kernel a stack frame); 0**0 = 1, 0**y = 0.
C10_HOST_DEVICE inline double fm_pow(double x, double y) {
  if (x > 0.0) return std::exp(y * std::log(x));
  return x == 0.0 ? (y == 0.0 ? 1.0 : 0.0) : std::log(x);
}
#else
FOCAL_SCALAR_PRIMITIVES(float)
FOCAL_MAX_PRIMITIVE(float)
// NaN**0 is NaN (libm's pow gives 1), as on the device: a NaN input reaches the loss on every backend.
C10_HOST_DEVICE inline float fm_pow(float x, float y) { return x != x ? x : std::pow(x, y); }
C10_HOST_DEVICE inline double fm_pow(double x, double y) { return x != x ? x : std::pow(x, y); }
#endif
FOCAL_SCALAR_PRIMITIVES(double)
FOCAL_SELECT_PRIMITIVES(float)
FOCAL_SELECT_PRIMITIVES(double)
FOCAL_MAX_PRIMITIVE(double)
#undef FOCAL_SCALAR_PRIMITIVES
#undef FOCAL_SELECT_PRIMITIVES
#undef FOCAL_MAX_PRIMITIVE

// a / b (the device's float build divides without IEEE division's slow-path call).
template <typename T>
C10_HOST_DEVICE inline T fm_div(T a, T b) {
  return a / b;
}

// How many digits a result needs. kFull: float32 / float64 storage (1e-5 relative per element in float32,
// docs/design.md §2). kStorage16: the device's float math for fp16 storage (results round to 11 significant bits):
// the series and powers below drop to about 2e-5 relative (25 times under fp16's rounding) for fewer instructions.
// kStorageBF16: bf16 storage (8 significant bits): kStorage16's forms, and a shorter log1p series (1e-4 relative,
// 20 times under bf16's rounding). The CPU build computes every dtype at kFull.
enum class Precision : int { kFull = 0, kStorage16 = 1, kStorageBF16 = 2 };

// f<P>(args): the compact device form approx::compact for float results stored in 16 bits, else the full one.
#if defined(FOCAL_DEVICE_APPROX_MATH)
#define FOCAL_AT_PRECISION(name, full, compact, params, args)                                \
  template <Precision P, typename T>                                                         \
  C10_HOST_DEVICE inline T name params {                                                     \
    if constexpr (P != Precision::kFull && std::is_same_v<T, float>) return approx::compact args; \
    return full args;                                                                        \
  }
#else
#define FOCAL_AT_PRECISION(name, full, compact, params, args) \
  template <Precision P, typename T>                          \
  C10_HOST_DEVICE inline T name params {                      \
    return full args;                                         \
  }
#endif
// log1p(x) for x >= 0 (a log-sum-exp's excess over its max term).
FOCAL_AT_PRECISION(fm_log1p_nonnegative_at, fm_log1p, log1p_nonnegative_compact, (T x), (x))
// expm1(x) for x <= 0 (p - 1 from log p).
FOCAL_AT_PRECISION(fm_expm1_nonpositive_at, fm_expm1, expm1_nonpositive_compact, (T x), (x))
FOCAL_AT_PRECISION(fm_pow_at, fm_pow, pow_compact, (T x, T y), (x, y))
#undef FOCAL_AT_PRECISION

// log1p(x) for x in [-1, 0] (a log of 1 minus a probability), given y = 1 + x as accurately as x: log1p(x) near 0, the
// log of y where y is small (x's rounding near -1 would be all of the rounded 1 + x).
template <Precision P, typename T>
C10_HOST_DEVICE inline T fm_log1p_nonpositive_at(T x, T y) {
#if defined(FOCAL_DEVICE_APPROX_MATH)
  if constexpr (P == Precision::kStorageBF16 && std::is_same_v<T, float>) return approx::log1p_nonpositive_bf16(x, y);
  if constexpr (P == Precision::kStorage16 && std::is_same_v<T, float>) return approx::log1p_nonpositive_compact(x, y);
#endif
  return fm_select(y < T(0.5), fm_log(y), fm_log1p(x));
}

// log1p(e) for e in [0, 1], given small = e / (1 + e) (the sigmoid(-|x|) the caller already has).
template <Precision P, typename T>
C10_HOST_DEVICE inline T fm_log1p_unit_at(T e, T small) {
#if defined(FOCAL_DEVICE_APPROX_MATH)
  if constexpr (P == Precision::kStorageBF16 && std::is_same_v<T, float>) return approx::log1p_unit_bf16(e, small);
  if constexpr (P == Precision::kStorage16 && std::is_same_v<T, float>) return approx::log1p_unit_compact(e, small);
#endif
  return fm_log1p_unit(e);
}

// log p and log(1 - p) of a probability (the device's float build folds their two series into one).
template <typename T>
C10_HOST_DEVICE inline void fm_log_and_log1m(T p, T& log_p, T& log_q) {
  log_p = fm_log(p);
  log_q = fm_log1p(T(0) - p);  // log(1 - p) would round 1 - p for tiny p
}

// fm_log_and_log1m at precision P, each log clamped below at -100 as torch.nn.BCELoss does (so p = 0 or 1 stays
// finite); `invalid`: p outside [0, 1] (NaN is not).
template <Precision P, typename T>
C10_HOST_DEVICE inline void fm_clamped_logs_at(T p, T& log_p, T& log_q, bool& invalid) {
#if defined(FOCAL_DEVICE_APPROX_MATH)
  if constexpr (P != Precision::kFull && std::is_same_v<T, float>) {
    approx::log_and_log1m_compact(p, log_p, log_q, invalid);
    return;
  }
#endif
  if constexpr (std::is_floating_point_v<T>) {
    invalid = p < T(0) || p > T(1);
  } else {
    invalid = false;  // SIMD vectors: the CPU kernels check their input before
  }
  fm_log_and_log1m(p, log_p, log_q);
  log_p = fm_max(log_p, T(-100));
  log_q = fm_max(log_q, T(-100));
}

// ---- modulating factor u**gamma and its derivative -----------------------------------------------------

// u**gamma with u = 1 - p_t in [0, 1].
template <int G, Precision P = Precision::kFull, typename T>
C10_HOST_DEVICE inline T modulating_factor(T u, T gamma) {
  if constexpr (G == 0) {
    return T(1);
  } else if constexpr (G == 1) {
    return u;
  } else if constexpr (G == 2) {
    return u * u;
  } else if constexpr (G == 3) {
    return u * u * u;
  } else {
    return fm_pow_at<P>(u, gamma);
  }
}

// gamma * u**(gamma-1) * numer, where numer / u stays bounded as u -> 0. For 0 < gamma < 1 the factor
// u**(gamma-1) alone is unbounded, so it is formed as m * (numer / u) with m = u**gamma.
template <int G, typename T>
C10_HOST_DEVICE inline T modulating_derivative(T u, T m, T gamma, T numer) {
  if constexpr (G == 0) {
    return T(0);
  } else if constexpr (G == 1) {
    return numer;
  } else if constexpr (G == 2) {
    return T(2) * u * numer;
  } else if constexpr (G == 3) {
    return T(3) * u * u * numer;
  } else {
    const T zero(0);
    return gamma * m * fm_select(u > zero, fm_div(numer, u), zero);
  }
}

// ---- sigmoid focal loss on logits ------------------------------------------------------------------------

// p = sigmoid(x), q = 1 - p and the binary cross entropy of x against a soft target t, all without
// cancellation: ce = t max(-x, 0) + (1 - t) max(x, 0) + log1p(exp(-|x|)) (max(x, 0) - t x + ... loses digits
// for t near 1 at large |x|).
// p - t (the gradient of ce) is formed from c, the target mass on the side the sign of x does not favour:
// p - t = (1 - t) - sigmoid(-|x|) for x >= 0, not the rounded p minus t (which is 0 for t = 1 at x >= 17 in float).
template <typename T>
struct LogitTerms {
  T p;
  T q;
  T ce;
  T p_minus_t;
  T log1p_e;  // log1p(exp(-|x|)): -log sigmoid(|x|)
};

template <Precision P = Precision::kFull, typename T>
C10_HOST_DEVICE inline LogitTerms<T> logit_terms(T x, T t) {
  const T zero(0), one(1);
  const T e = fm_exp(-fm_abs(x));          // in (0, 1]: no overflow for any |x|
  const T big = fm_reciprocal(one + e);    // sigmoid(|x|)
  const T small = e * big;                 // sigmoid(-|x|)
  const auto x_nonneg = x >= zero;
  const T c = fm_select(x_nonneg, one - t, t);
  const T log1p_e = fm_log1p_unit_at<P>(e, small);
  // t max(-x, 0) + (1 - t) max(x, 0) = |x| (1 - t) for x >= 0, |x| t below: one product, no cancellation.
  return {fm_select(x_nonneg, big, small), fm_select(x_nonneg, small, big), fm_abs(x) * c + log1p_e,
          fm_select(x_nonneg, c - small, small - c), log1p_e};
}

// a_t = alpha t + (1 - alpha)(1 - t), as two fmas that are exact at t = 0 and t = 1 (alpha_neg + alpha_diff t
// rounds 1 - alpha + (2 alpha - 1) to 0 for alpha below float's epsilon). Disabled alpha is a_t = 1.
template <typename T>
struct AlphaWeight {
  T pos;        // alpha
  T neg;        // 1 - alpha
  T minus_neg;  // alpha - 1
  C10_HOST_DEVICE T at(T t) const { return fm_fma(t, pos, fm_fma(t, minus_neg, neg)); }
  // From the op's alpha argument: alpha < 0 disables alpha (a_t = 1).
  static AlphaWeight from(double alpha) {
    return alpha < 0 ? AlphaWeight{T(1), T(1), T(-1)} : AlphaWeight{T(alpha), T(1 - alpha), T(alpha - 1)};
  }
  // A per-class alpha read in the kernel.
  C10_HOST_DEVICE static AlphaWeight of(T alpha) { return AlphaWeight{alpha, T(1) - alpha, alpha - T(1)}; }
};

// Loss and d(loss)/dx of one logit x with (possibly soft) target t.
// p = sigmoid(x), q = 1 - p, u = 1 - p_t = t q + (1 - t) p, ce = -(t log p + (1 - t) log q) (logit_terms),
// loss = a_t u**gamma ce, dloss/dx = a_t (u**gamma (p - t) + ce gamma u**(gamma-1) (1 - 2t) p q).
// Poly-1 (Leng et al. 2022) adds a_t poly u**(gamma+1), whose derivative is a_t poly (gamma+1) u**gamma (1-2t) p q.
template <int G, bool kPoly = true, Precision P = Precision::kFull, typename T>
C10_HOST_DEVICE inline void sigmoid_focal_point(T x, T t, AlphaWeight<T> alpha, T gamma, T& loss, T& grad,
                                                T poly = T(0)) {
  const T one(1);
  const T e = fm_exp(-fm_abs(x));
  const T big = fm_reciprocal(one + e);  // sigmoid(|x|)
  const T small = e * big;               // sigmoid(-|x|)
  const auto x_nonneg = x >= T(0);
  // c = the target mass on the side the sign of x does not favour (1 - t for x >= 0, t below). In its terms
  // ce = |x| c + log1p(e), u = small + c (big - small), p - t = s (c - small), 1 - 2t = s (2c - 1) with
  // s = -1 for x < 0 and +1 otherwise: no selects between p and q, and no sum with terms of both signs.
  const T c = fm_select(x_nonneg, one - t, t);
  const T ce = fm_abs(x) * c + fm_log1p_unit_at<P>(e, small);
  const T u = small + c * (big - small);
  const T m = modulating_factor<G, P>(u, gamma);
  const T a = alpha.at(t);
  const T pq = big * small;
  // kPoly false (Poly-1's epsilon is 0): its terms are left out, not multiplied by 0.
  loss = a * m * (kPoly ? ce + poly * u : ce);
  // p q / u is bounded: it tends to p (t = 1) or q (t = 0) as u -> 0. gamma 0: no term (inf * 0 at x = +-inf).
  const T dm_ce = G == 0 ? T(0) : ce * modulating_derivative<G>(u, m, gamma, pq);
  const T inner = m * (small - c) + fm_fma(T(-2), c, one) * (kPoly ? dm_ce + poly * (gamma + one) * m * pq : dm_ce);
  grad = fm_select(x_nonneg, -a, a) * inner;
}

// sigmoid_focal_point at the hard target t = 0, or at t = 1 through the symmetry loss(x, 1, alpha) = loss(-x, 0,
// 1 - alpha) (`flip`: then d loss/dx is minus d loss/dy at y = -x). a_signed = -a_t when flipped, else a_t: the
// gradient's sign rides on it. At t = 0 on y = +-x: u = p = sigmoid(y), ce = max(y, 0) + log1p(e), m = p**gamma,
// loss = a m (ce + poly p), d loss/dy = a m (p + q (gamma ce + poly (gamma+1) p)) (gamma p**(gamma-1) p q = gamma m q).
// e, sigmoid(|x|) and |x| do not depend on the flip: only which of them is p does.
template <int G, bool kPoly = true, Precision P = Precision::kFull, typename T>
C10_HOST_DEVICE inline void sigmoid_focal_hard_point(T x, bool flip, T a_signed, T gamma, T& loss, T& grad,
                                                     T poly = T(0)) {
  const T one(1), zero(0);
  const T abs_x = fm_abs(x);
  const T e = fm_exp(-abs_x);
  const T big = fm_reciprocal(one + e);  // sigmoid(|x|)
  const T small = e * big;               // sigmoid(-|x|)
  const bool y_nonneg = (x >= zero) != flip;
  const T p = fm_select(y_nonneg, big, small);
  const T q = fm_select(y_nonneg, small, big);
  // ce = max(y, 0) + log1p(e), as |x| c + log1p(e) with c in {0, 1}: an infinite logit gives NaN where the general
  // formula does (inf * 0), so both paths follow one rule for non-finite input.
  const T ce = abs_x * fm_select(y_nonneg, one, zero) + fm_log1p_unit_at<P>(e, small);
  const T am = a_signed * modulating_factor<G, P>(p, gamma);
  loss = fm_abs(am) * (kPoly ? ce + poly * p : ce);
  // gamma p**(gamma-1) p q = gamma m q: bounded for any gamma > 0. gamma 0: no term (inf * 0 at y = +inf).
  T inner = p;
  if constexpr (G != 0 || kPoly) {
    const T dm = G == 0 ? zero : gamma * ce;
    inner = fm_fma(q, kPoly ? dm + poly * (gamma + one) * p : dm, p);
  }
  grad = am * inner;
}

// ---- binary focal loss on probabilities ------------------------------------------------------------------

// As sigmoid_focal_point, on p directly. Logs clamp at -100 and d(ce)/dp = (p - t) / max(p (1 - p), 1e-12),
// both as torch.nn.BCELoss does, so p = 0 or 1 stays finite.
template <int G, Precision P = Precision::kFull, typename T>
C10_HOST_DEVICE inline void binary_focal_point(T p, T t, AlphaWeight<T> alpha, T gamma, T& loss, T& grad,
                                               bool& invalid) {
  const T one(1), eps(1e-12);
  const T q = one - p;
  T logp, logq;
  fm_clamped_logs_at<P>(p, logp, logq, invalid);
  const T ce = -(t * logp + (one - t) * logq);
  const T u = t * q + (one - t) * p;  // not p + t (q - p): that cancels to nothing for t = 1, p near 1
  const T a = alpha.at(t);
  if constexpr (G == 2) {
    // m = u**2 and its derivative's 2 u ce share a factor u: a u (u dce + 2 (1 - 2t) ce)
    const T au = a * u;
    loss = au * u * ce;
    const T dce = (p - t) * fm_reciprocal(fm_max(p * q, eps));
    grad = au * fm_fma(u, dce, (T(2) - T(4) * t) * ce);
  } else {
    const T m = modulating_factor<G, P>(u, gamma);
    loss = a * m * ce;
    const T dce = (p - t) * fm_reciprocal(fm_max(p * q, eps));
    // ce / u is bounded as u -> 0 for hard targets (ce ~ u there).
    grad = a * (m * dce + (one - t - t) * modulating_derivative<G>(u, m, gamma, ce));
  }
}

// ---- the focal family on logits (docs/design.md §5) -------------------------------------------------------------

// Varifocal loss (VarifocalNet; mmdet's formula), IoU-aware target q in [0, 1]:
//   w = q (1 if not iou_weighted) where q > 0, else alpha p**gamma (= alpha |p - q|**gamma at q = 0);
//   loss = w ce(x, q); the gradient flows through w: d(alpha p**gamma)/dx = alpha gamma p**gamma (1 - p).
template <int G, Precision P = Precision::kFull, typename T>
C10_HOST_DEVICE inline void varifocal_point(T x, T q, T alpha, T gamma, bool iou_weighted, T& loss, T& grad) {
  const T zero(0), one(1);
  const LogitTerms<T> s = logit_terms<P>(x, q);
  const T m = modulating_factor<G, P>(s.p, gamma);
  const auto positive = q > zero;
  const T w = fm_select(positive, iou_weighted ? q : one, alpha * m);
  // gamma p**(gamma-1) p q formed as gamma p**gamma q: no p**(gamma-1) on its own for 0 < gamma < 1.
  const T dw = fm_select(positive, zero, alpha * modulating_derivative<G>(s.p, m, gamma, s.p * s.q));
  loss = w * s.ce;
  // dw is 0 for positives and for gamma 0: no ce * 0 term there (NaN at infinite logits, where BCE's is finite).
  grad = w * s.p_minus_t;
  if (G != 0) grad = grad + fm_select(positive, zero, s.ce * dw);
}

// varifocal_point for a class-index target: q = q_on at the target class (`on`, which the caller sets only where q_on
// is not <= 0: a target class of q = 0 is one more negative), else 0. w_on: the positive's weight (q_on or 1, times
// the row's weight), a_off: alpha times the row's weight. The q = 0 elements take sigmoid_focal_hard_point's t = 0 form
// (alpha p**gamma ce, d/dx = alpha p**gamma (p + gamma q ce)); the target class swaps in w_on ce and w_on (p - q_on),
// from the same e, sigmoid(|x|) and log1p(e). ce keeps the general form |x| c + log1p(e), so a NaN q_on (which takes
// the target form) or an infinite logit reaches the loss as varifocal_point's does.
template <int G, Precision P = Precision::kFull, typename T>
C10_HOST_DEVICE inline void varifocal_index_point(T x, bool on, T q_on, T w_on, T a_off, T gamma, T& loss, T& grad) {
  const T one(1), zero(0);
  const T abs_x = fm_abs(x);
  const T e = fm_exp(-abs_x);
  const T big = fm_reciprocal(one + e);  // sigmoid(|x|)
  const T small = e * big;               // sigmoid(-|x|)
  const auto x_nonneg = x >= zero;
  const T p = fm_select(x_nonneg, big, small);
  const T q = fm_select(x_nonneg, small, big);
  const T t = fm_select(on, q_on, zero);
  const T c = fm_select(x_nonneg, one - t, t);  // as in sigmoid_focal_point
  const T ce = fm_fma(abs_x, c, fm_log1p_unit_at<P>(e, small));
  const T am = a_off * modulating_factor<G, P>(p, gamma);
  const T inner = G == 0 ? p : fm_fma(q, gamma * ce, p);
  loss = fm_select(on, w_on, am) * ce;
  // p - q_on = +-(c - small) (sigmoid_focal_point's p - t)
  grad = fm_select(on, fm_select(x_nonneg, w_on, -w_on), am) * fm_select(on, c - small, inner);
}

// Quality focal loss (GFL; mmdet's formula): loss = ce(x, y) |y - p|**beta; the gradient flows through the
// factor, d|y - p|**beta/dx = beta |p - y|**(beta-1) sign(p - y) p q (0 at p = y, the subgradient).
template <int G, Precision P = Precision::kFull, typename T>
C10_HOST_DEVICE inline void quality_focal_point(T x, T y, T beta, T& loss, T& grad) {
  const T zero(0), one(1);
  const LogitTerms<T> s = logit_terms<P>(x, y);
  const T d = s.p_minus_t;
  const T abs_d = fm_abs(d);
  const T m = modulating_factor<G, P>(abs_d, beta);
  const T sign = fm_select(d > zero, one, fm_select(d < zero, zero - one, zero));
  loss = s.ce * m;
  grad = m * d;  // beta 0: no factor term (ce * 0 would be NaN at infinite logits)
  if (G != 0) grad = grad + s.ce * modulating_derivative<G>(abs_d, m, beta, sign * s.p * s.q);
}

// Asymmetric loss (ASL, Ridnik et al. 2021; Alibaba-MIIL's code) for one logit and target t in [0, 1]:
//   p_neg = min(q + clip, 1) (q when clip = 0), pt = p t + p_neg (1 - t), g = gamma_pos t + gamma_neg (1 - t),
//   w = (1 - pt)**g, loss = -w [t log max(p, eps) + (1 - t) log max(p_neg, eps)].
// 1 - pt = t q + (1 - t) max(p - clip, 0) has no cancellation. detach: w is a constant for the gradient.
template <typename T>
struct AsymmetricParams {
  T gamma_neg;
  T gamma_diff;  // gamma_pos - gamma_neg
  T clip;
  T eps;
  T log_eps;  // log(eps), from the host's libm
  // From the op's arguments (S: T's scalar type).
  template <typename S>
  static AsymmetricParams make(double gamma_pos, double gamma_neg, double clip, double eps) {
    return {T(S(gamma_neg)), T(S(gamma_pos - gamma_neg)), T(S(clip)), T(S(eps)), T(S(std::log(eps)))};
  }
};

// kClip: clip > 0 (p_neg = min(q + clip, 1)); kDetach: the modulating factor is a constant in the gradient. Both
// are template arguments, so that each kernel holds only its own branch.
template <bool kClip, bool kDetach, Precision P = Precision::kFull, typename T>
C10_HOST_DEVICE inline void asymmetric_point(T x, T t, const AsymmetricParams<T>& prm, T& loss, T& grad) {
  const T zero(0), one(1);
  const LogitTerms<T> s = logit_terms<P>(x, t);
  // log p and log q in the logit form (-log p = log1p(e^-|x|) + max(-x, 0)), not the log of a rounded sigmoid
  // (17 % off at x = 15 in float); log max(v, eps) = max(log v, log eps).
  const T log_pos = fm_max(-(s.log1p_e + fm_max(-x, zero)), prm.log_eps);
  const T pq = s.p * s.q;
  // d log max(p, eps)/dx = q above eps (selects written so that a NaN p takes the NaN branch on every backend)
  const T dlog_pos = fm_select(s.p < prm.eps, zero, s.q);
  const T one_minus_t = one - t;
  T log_neg, dlog_neg, u;
  if constexpr (kClip) {
    // p_neg = min(q + clip, 1) = 1 - v with v = max(p - clip, 0): log1p(-v) near 1 (the log of a value near 1 loses its
    // digits), the log of q + clip near 0 (1 - v would have lost q's), and d log p_neg/dx = -p q / (q + clip) while
    // p_neg moves (v > 0) and is above eps.
    const T v = fm_max(s.p - prm.clip, zero);
    const T shifted = s.q + prm.clip;
    log_neg = fm_max(fm_log1p_nonpositive_at<P>(-v, shifted), prm.log_eps);
    dlog_neg = fm_select((shifted >= one) | (shifted < prm.eps), zero, -(pq * fm_reciprocal(shifted)));
    u = t * s.q + one_minus_t * v;
  } else {
    log_neg = fm_max(-(s.log1p_e + fm_max(x, zero)), prm.log_eps);
    dlog_neg = fm_select(s.q < prm.eps, zero, -s.p);  // p_neg = q: q's rounding to 1 is no clip
    u = t * s.q + one_minus_t * s.p;
  }
  const T ce = -(t * log_pos + one_minus_t * log_neg);
  const T dce = -(t * dlog_pos + one_minus_t * dlog_neg);
  // gamma_neg at t = 0; at t = 1 gamma_pos to one rounding (exact when gamma_pos - gamma_neg is a float: 0 - gamma_neg)
  const T g = fm_fma(t, prm.gamma_diff, prm.gamma_neg);
  const T w = modulating_factor<kGammaAny, P>(u, g);
  loss = w * ce;
  if constexpr (kDetach) {
    grad = w * dce;
  } else {
    // du/dx = -t p q + (1 - t) p q [p > clip]
    const T du = kClip ? one_minus_t * fm_select(s.p > prm.clip, pq, zero) - t * pq : (one_minus_t - t) * pq;
    grad = w * dce + ce * modulating_derivative<kGammaAny>(u, w, g, du);
  }
}

// ---- softmax focal loss -----------------------------------------------------------------------------------

// For one class c with log-probability logp and weight alpha_c (u = 1 - p, poly: Poly-1's epsilon):
//   weighted_logp = alpha_c u**gamma (logp - poly u)   (the row loss is -sum_c q_c weighted_logp_c)
//   h             = d weighted_logp / d logp = alpha_c (u**gamma - gamma p logp u**(gamma-1) + poly (gamma+1) p u**gamma)
// so that d(row loss)/dx_j = -q_j h_j + p_j sum_c q_c h_c (q: smoothed target distribution).
template <int G, Precision P = Precision::kFull, typename T>
C10_HOST_DEVICE inline void softmax_focal_class_terms(T logp, T alpha_c, T gamma, T& weighted_logp, T& h,
                                                      T poly = T(0)) {
  const T p = fm_exp(logp);
  const T u = -fm_expm1_nonpositive_at<P>(logp);  // 1 - p without cancellation near p = 1
  const T m = modulating_factor<G, P>(u, gamma);
  weighted_logp = alpha_c * m * (logp - poly * u);
  // p logp / (1 - p) -> -1 as p -> 1: bounded.
  h = alpha_c * (m - modulating_derivative<G>(u, m, gamma, p * logp) + poly * (gamma + T(1)) * p * m);
}

// log softmax from the row max and log(sum exp(x - max)); subtracting the max first keeps float precision
// for logits of large magnitude (x - (max + log_sum) would cancel it away).
template <typename T>
C10_HOST_DEVICE inline T log_softmax_value(T x, T row_max, T log_sum_exp) {
  return (x - row_max) - log_sum_exp;
}

// Label smoothing as in F.cross_entropy / the design: on = 1 - s + s / C, off = s / C (softmax);
// sigmoid targets become t (1 - s) + s / 2.
template <typename T>
C10_HOST_DEVICE inline T smooth_binary_target(T t, T smoothing) {
  return t * (T(1) - smoothing) + T(0.5) * smoothing;
}

}  // inline namespace FOCAL_MATH_VARIANT
}  // namespace focal
