// Overloads of the focal_math.h primitives for at::vec::Vectorized, so the same formulas run SIMD on CPU.
// Include before focal_math.h.
#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/OpMathType.h>

#include "../log1p_unit_coefficients.h"

#include <type_traits>

namespace focal {
// The CPU kernels use focal_math.h's `exact` build of the formulas; these overloads join it.
inline namespace exact {

#define FOCAL_VEC_PRIMITIVES(S)                                                                      \
  inline at::vec::Vectorized<S> fm_exp(const at::vec::Vectorized<S>& x) { return x.exp(); }          \
  inline at::vec::Vectorized<S> fm_log(const at::vec::Vectorized<S>& x) { return x.log(); }          \
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
  return fm_select(x != x, x, x.pow(y));  // NaN**0 is NaN here, as on the device (libm's pow gives 1)
}
inline at::vec::Vectorized<double> fm_log1p_unit(const at::vec::Vectorized<double>& e) { return e.log1p(); }
inline at::vec::Vectorized<double> fm_expm1(const at::vec::Vectorized<double>& x) { return x.expm1(); }
inline at::vec::Vectorized<double> fm_log1p(const at::vec::Vectorized<double>& x) { return x.log1p(); }

// float: cheaper forms of the two primitives that dominate the sigmoid and non-integer-gamma paths.
// x**y for x in [0, 1], y >= 0 (the modulating factor) as exp(y log x): pow's extra range handling costs
// twice as much, and the error stays within a few float ulps there. x = 0 is set apart: 0 * log(0) is NaN.
inline at::vec::Vectorized<float> fm_pow(const at::vec::Vectorized<float>& x, const at::vec::Vectorized<float>& y) {
  using Vec = at::vec::Vectorized<float>;
  const Vec zero(0.0f);
  return fm_select(x == zero, fm_select(y == zero, Vec(1.0f), zero), (y * x.log()).exp());
}
// log1p(e) for e in [0, 1] as e * P(e) (log1p_unit_coefficients.h): no division, no log.
inline at::vec::Vectorized<float> fm_log1p_unit(const at::vec::Vectorized<float>& e) {
  using Vec = at::vec::Vectorized<float>;
  Vec series(kLog1pUnitCoefficients[0]);
  for (int i = 1; i < 9; ++i) series = at::vec::fmadd(series, e, Vec(kLog1pUnitCoefficients[i]));
  return series * e;
}
// float expm1 and log1p: at::vec's (Sleef's u10 forms) cost about ten exps each (8.6 ns per element against exp's
// 0.8 here), and the softmax kernels take two expm1 and one log1p per row: a series near 0, exp / log elsewhere.
// expm1: degree-8 Taylor series below |x| = 0.35 (truncation 6e-10 relative), else exp(x) - 1 (exp's rounding grows
// by 1 / |1 - exp(-0.35)| = 3.4 at most there): about 4e-7 relative.
inline at::vec::Vectorized<float> fm_expm1(const at::vec::Vectorized<float>& x) {
  using Vec = at::vec::Vectorized<float>;
  Vec series(1.0f / 40320);
  for (const float c : {1.0f / 5040, 1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f}) {
    series = at::vec::fmadd(series, x, Vec(c));
  }
  return fm_select(x.abs() < Vec(0.35f), series * x, x.exp() - Vec(1.0f));
}
// log1p: degree-7 series below |x| = 1/16 (truncation 5e-10 relative), else log(y) of y = 1 + x corrected for y's
// rounding by (x - (y - 1)) / y (|log1p| >= 0.06 there). The correction is NaN only where it does not apply (y = 0:
// -inf; y = inf): dropped there. NaN and x < -1 give NaN through log.
inline at::vec::Vectorized<float> fm_log1p(const at::vec::Vectorized<float>& x) {
  using Vec = at::vec::Vectorized<float>;
  const Vec one(1.0f);
  Vec series(1.0f / 7);
  for (const float c : {-1.0f / 6, 1.0f / 5, -0.25f, 1.0f / 3, -0.5f, 1.0f}) series = at::vec::fmadd(series, x, Vec(c));
  const Vec y = one + x;
  const Vec correction = (x - (y - one)) / y;
  const Vec far = y.log() + fm_select(correction == correction, correction, Vec(0.0f));
  return fm_select(x.abs() < Vec(0.0625f), series * x, far);
}
template <typename S>
inline at::vec::Vectorized<S> fm_fma(const at::vec::Vectorized<S>& a, const at::vec::Vectorized<S>& b,
                                     const at::vec::Vectorized<S>& c) {
  return at::vec::fmadd(a, b, c);
}
inline at::vec::Vectorized<float> fm_reciprocal(const at::vec::Vectorized<float>& x) {
  return at::vec::Vectorized<float>(1.0f) / x;
}
inline at::vec::Vectorized<double> fm_reciprocal(const at::vec::Vectorized<double>& x) {
  return at::vec::Vectorized<double>(1.0) / x;
}

// ---- loads and stores between a tensor's dtype and its opmath vectors (full vectors) ----------------------

// Vec::size() elements of scalar_t as one opmath vector. bf16/fp16 convert in registers (ATen's own
// conversion intrinsics) rather than element by element through a stack buffer.
template <typename scalar_t>
inline at::vec::Vectorized<at::opmath_type<scalar_t>> load_full(const scalar_t* p) {
  using Vec = at::vec::Vectorized<at::opmath_type<scalar_t>>;
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    Vec v;
    at::vec::load_fp32_from_bf16(p, v);
    return v;
  } else if constexpr (std::is_same_v<scalar_t, c10::Half>) {
    Vec v;
    at::vec::load_fp32_from_fp16(p, v);
    return v;
  } else {
    return Vec::loadu(p);
  }
}

template <typename scalar_t>
inline void store_full(const at::vec::Vectorized<at::opmath_type<scalar_t>>& v, scalar_t* p) {
  if constexpr (std::is_same_v<scalar_t, at::opmath_type<scalar_t>>) {
    v.store(p);
  } else {
#if defined(CPU_CAPABILITY_AVX512)
    const __m256i bits = std::is_same_v<scalar_t, c10::BFloat16> ? at::vec::cvtfp32_bf16(__m512(v))
                                                                 : at::vec::cvtfp32_fp16(__m512(v));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), bits);
#elif defined(CPU_CAPABILITY_AVX2)
    const __m128i bits = std::is_same_v<scalar_t, c10::BFloat16> ? at::vec::cvtfp32_bf16(__m256(v))
                                                                 : at::vec::cvtfp32_fp16(__m256(v));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), bits);
#else
    constexpr int64_t n = at::vec::Vectorized<float>::size();
    __at_align__ float buf[n];
    v.store(buf);
    for (int64_t k = 0; k < n; ++k) p[k] = static_cast<scalar_t>(buf[k]);
#endif
  }
}

// ---- software prefetch ----------------------------------------------------------------------------------

// Bytes ahead of the current position that the streaming loops prefetch: the loops do enough arithmetic per
// cache line that the loads of x and t otherwise waited on DRAM (perf: the top stalls were those loads).
constexpr int64_t kPrefetchBytes = 1024;

// Requests the cache line kPrefetchBytes past p (for writing when `write`); never faults.
template <typename T>
inline void prefetch_ahead(const T* p, bool write = false) {
  const char* ahead = reinterpret_cast<const char*>(p) + kPrefetchBytes;
  if (write) {
    __builtin_prefetch(ahead, 1);
  } else {
    __builtin_prefetch(ahead, 0);
  }
}

// ---- reductions across vectors ----------------------------------------------------------------------------

// Lane r of the result is the reduction of all lanes of v[r], for Vec::size() vectors: a tree of
// deinterleave steps, about one shuffle per vector instead of a full horizontal reduction per vector.
// Fixed order, so the result does not depend on anything but the inputs.
template <typename Vec, typename Op>
inline Vec reduce_each(Vec* v, const Op& op) {
  for (int64_t count = Vec::size(); count > 1; count /= 2) {
    for (int64_t i = 0; i < count / 2; ++i) {
      const auto halves = at::vec::deinterleave2(v[2 * i], v[2 * i + 1]);
      v[i] = op(halves.first, halves.second);
    }
  }
  return v[0];
}

}  // inline namespace exact
}  // namespace focal
