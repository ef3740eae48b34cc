// Overloads of the focal_math.h primitives for at::vec::Vectorized, so the same formulas run SIMD on CPU.
// Include before focal_math.h.
#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

namespace focal {

#define FOCAL_VEC_PRIMITIVES(S)                                                                      \
  inline at::vec::Vectorized<S> fm_exp(const at::vec::Vectorized<S>& x) { return x.exp(); }          \
  inline at::vec::Vectorized<S> fm_expm1(const at::vec::Vectorized<S>& x) { return x.expm1(); }      \
  inline at::vec::Vectorized<S> fm_log(const at::vec::Vectorized<S>& x) { return x.log(); }          \
  inline at::vec::Vectorized<S> fm_log1p(const at::vec::Vectorized<S>& x) { return x.log1p(); }      \
  inline at::vec::Vectorized<S> fm_abs(const at::vec::Vectorized<S>& x) { return x.abs(); }          \
  inline at::vec::Vectorized<S> fm_max(const at::vec::Vectorized<S>& a, const at::vec::Vectorized<S>& b) { \
    return at::vec::maximum(a, b);                                                                   \
  }                                                                                                  \
  /* mask lanes are all-ones (true) or all-zeros (false), as the comparison operators return */      \
  inline at::vec::Vectorized<S> fm_select(const at::vec::Vectorized<S>& mask, const at::vec::Vectorized<S>& a, \
                                          const at::vec::Vectorized<S>& b) {                         \
    return at::vec::Vectorized<S>::blendv(b, a, mask);                                               \
  }
FOCAL_VEC_PRIMITIVES(float)
FOCAL_VEC_PRIMITIVES(double)
#undef FOCAL_VEC_PRIMITIVES

inline at::vec::Vectorized<double> fm_pow(const at::vec::Vectorized<double>& x, const at::vec::Vectorized<double>& y) {
  return x.pow(y);
}
inline at::vec::Vectorized<double> fm_log1p_unit(const at::vec::Vectorized<double>& e) { return e.log1p(); }

// float: cheaper forms of the two primitives that dominate the sigmoid and non-integer-gamma paths.
// x**y for x in [0, 1], y >= 0 (the modulating factor) as exp(y log x): pow's extra range handling costs
// twice as much, and the error stays within a few float ulps there. x = 0 is set apart: 0 * log(0) is NaN.
inline at::vec::Vectorized<float> fm_pow(const at::vec::Vectorized<float>& x, const at::vec::Vectorized<float>& y) {
  using Vec = at::vec::Vectorized<float>;
  const Vec zero(0.0f);
  return fm_select(x == zero, fm_select(y == zero, Vec(1.0f), zero), (y * x.log()).exp());
}
// log1p(e) for e in [0, 1] as 2 atanh(s), s = e / (2 + e) in [0, 1/3]: the odd series to s**17 stays within
// 3e-7 relative error (measured over [1e-37, 1]) and is several times cheaper than the full-range log1p.
inline at::vec::Vectorized<float> fm_log1p_unit(const at::vec::Vectorized<float>& e) {
  using Vec = at::vec::Vectorized<float>;
  const Vec s = e / (Vec(2.0f) + e);
  const Vec z = s * s;
  Vec series(1.0f / 17);
  for (const float c : {1.0f / 15, 1.0f / 13, 1.0f / 11, 1.0f / 9, 1.0f / 7, 1.0f / 5, 1.0f / 3, 1.0f}) {
    series = at::vec::fmadd(series, z, Vec(c));
  }
  return Vec(2.0f) * s * series;
}

}  // namespace focal
