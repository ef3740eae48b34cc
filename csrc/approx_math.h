// The float primitives of the CUDA kernels (focal_math.h uses them when FOCAL_DEVICE_APPROX_MATH is defined):
// the GPU's special-function unit (one MUFU instruction each: ex2, lg2, rcp) instead of CUDA's accurate expf /
// log1pf / IEEE division, which cost 10-40 instructions and a slow-path branch each.
//
// Documented worst-case errors (PTX ISA; CUDA C++ Programming Guide, intrinsic functions):
//   ex2.approx.ftz.f32  2 ulp (results below 2**-126 flush to 0)
//   lg2.approx.f32      2**-22 absolute for x in [0.5, 2], 2 ulp elsewhere
//   rcp.approx.ftz.f32  1 ulp
// Under the SIMT emulator (host C++) each returns the exact value moved by that worst case, in a direction
// fixed by the input's bits, so the emulated tests run the kernels at the hardware's error bounds.
#pragma once

#include "log1p_unit_coefficients.h"

#include <c10/macros/Macros.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace focal::approx {

#if defined(__CUDA_ARCH__)

__device__ __forceinline__ float exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float log2(float x) {
  float y;
  asm("lg2.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float reciprocal(float x) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
// lg2 with subnormal inputs flushed to 0 (-inf): for callers whose argument is never subnormal.
__device__ __forceinline__ float log2_ftz(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float fma(float a, float b, float c) {
  return __fmaf_rn(a, b, c);
}
// max(a, b) that returns NaN if either is NaN (fmaxf returns the other one): one instruction from sm_80 on.
__device__ __forceinline__ float max_nan(float a, float b) {
#if __CUDA_ARCH__ >= 800
  float y;
  asm("max.NaN.f32 %0, %1, %2;" : "=f"(y) : "f"(a), "f"(b));
  return y;
#else
  return a != a ? a : (b != b ? b : fmaxf(a, b));
#endif
}

#else

// The direction of the emulated error: 0 hashed from the input's bits (errors cancel in a sum), +1 every result
// moved up, -1 every result moved down (correlated errors, which reductions must survive too). Set by the
// emulated library's approx_error_mode op (focal_cuda.testing.approx_math_error).
inline std::atomic<int>& error_mode() {
  static std::atomic<int> mode{0};
  return mode;
}

// +1 or -1: the error's direction for input x.
inline float error_sign(float x) {
  const int mode = error_mode().load(std::memory_order_relaxed);
  if (mode != 0) return mode > 0 ? 1.0f : -1.0f;
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return ((bits ^ (bits >> 7)) & 1u) ? 1.0f : -1.0f;
}
inline float exp2(float x) {
  const float y = std::exp2(x);
  if (y < 0x1p-126f) return 0.0f;  // ftz
  return y * (1.0f + error_sign(x) * 0x1p-22f);
}
inline float log2(float x) {
  const float y = std::log2(x);
  if (!(x >= 0.5f && x <= 2.0f)) return y * (1.0f + error_sign(x) * 0x1p-22f);
  return y + error_sign(x) * 0x1p-22f;
}
inline float reciprocal(float x) {
  return (1.0f / x) * (1.0f + error_sign(x) * 0x1p-23f);
}
inline float log2_ftz(float x) {
  return log2(std::fpclassify(x) == FP_SUBNORMAL ? 0.0f : x);
}
inline float fma(float a, float b, float c) {
  return std::fma(a, b, c);
}
inline float max_nan(float a, float b) {
  return a != a ? a : (b != b ? b : std::fmax(a, b));
}

#endif

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

C10_HOST_DEVICE inline float exp(float x) {
  return exp2(x * kLog2e);
}
// x * log2(e) rounds: about |x| 6e-8 relative error on top of ex2's (3e-6 at |x| = 50).
// log(x): near 1, where lg2.approx's 2**-22 absolute error would be all of the result, a 6-term series in the
// exact difference x - 1 (|x - 1| < 1/16: 2e-8 relative); elsewhere |log x| > 0.06 and lg2's error is 2e-6 of it.
C10_HOST_DEVICE inline float log(float x) {
  const float d = x - 1.0f;  // exact for x in [0.5, 2]
  if (d > -0.0625f && d < 0.0625f) {
    return d * fma(d, fma(d, fma(d, fma(d, fma(d, -1.0f / 6.0f, 0.2f), -0.25f), 1.0f / 3.0f), -0.5f), 1.0f);
  }
  return log2(x) * kLn2;
}
// e * P(e) for e in [0, 1]: 1.8e-7 relative (log1p_unit_coefficients.h). Not log2(1 + e): its 2**-22 absolute
// error would be all of log1p(e) for the tiny e of well-classified examples.
C10_HOST_DEVICE inline float log1p_unit(float e) {
  constexpr float coefficients[9] = {FOCAL_LOG1P_UNIT_COEFFICIENTS};
  float series = coefficients[0];
#pragma unroll
  for (int i = 1; i < 9; ++i) series = fma(series, e, coefficients[i]);
  return series * e;
}
// The same for results stored in fp16 / bf16, from small = e / (1 + e) (the sigmoid the caller already has):
// small R(e) with R a fit of (1 + e) log1p(e) / e, whose singularity at e = -1 is weaker than log1p(e) / e's, so a
// lower degree does: degree 4 reaches 1.1e-5 relative for fp16 (the product adds small's 2 ulp; 40 times under fp16's
// rounding), degree 3 9.4e-5 for bf16 (20 times under bf16's).
template <int N>
C10_HOST_DEVICE inline float small_times_series(float e, float small, const float (&coefficients)[N]) {
  float series = coefficients[0];
#pragma unroll
  for (int i = 1; i < N; ++i) series = fma(series, e, coefficients[i]);
  return series * small;
}
C10_HOST_DEVICE inline float log1p_unit_compact(float e, float small) {
  constexpr float coefficients[5] = {FOCAL_LOG1P_UNIT_COMPACT_COEFFICIENTS};
  return small_times_series(e, small, coefficients);
}
C10_HOST_DEVICE inline float log1p_unit_bf16(float e, float small) {
  constexpr float coefficients[4] = {FOCAL_LOG1P_UNIT_BF16_COEFFICIENTS};
  return small_times_series(e, small, coefficients);
}
// log1p(x) for x in [-1, 0] given y = 1 + x (the caller's, as accurate as x), for results stored in fp16 / bf16: a
// 4-term series above -1/16 (1.3e-6 relative), else lg2 of y (its error is 2e-6 of |log| >= 0.06 at most; ftz: a
// subnormal y is far below what eps clamps).
C10_HOST_DEVICE inline float log1p_nonpositive_compact(float x, float y) {
  const float series = x * fma(x, fma(x, fma(x, -0.25f, 1.0f / 3.0f), -0.5f), 1.0f);
  const float far = log2_ftz(y) * kLn2;
  return x > -0.0625f ? series : far;
}
// The same for results stored in bf16: x (1 - x / 2) above -1/64 (8.1e-5 relative), else lg2 of y (1.3e-5 of
// |log| >= 0.0157 at most).
C10_HOST_DEVICE inline float log1p_nonpositive_bf16(float x, float y) {
  const float series = x * fma(x, -0.5f, 1.0f);
  const float far = log2_ftz(y) * kLn2;
  return x > -0.015625f ? series : far;
}
// log1p(x) for x >= 0, for results stored in fp16 / bf16: a 4-term series below 1/16, else lg2 of 1 + x (its rounding
// and lg2's error are 2e-6 of log(1 + x) >= 0.06 at most).
C10_HOST_DEVICE inline float log1p_nonnegative_compact(float x) {
  const float series = x * fma(x, fma(x, fma(x, -0.25f, 1.0f / 3.0f), -0.5f), 1.0f);
  const float far = log2_ftz(1.0f + x) * kLn2;
  return x < 0.0625f ? series : far;
}
// expm1(x) for x <= 0, for results stored in fp16 / bf16: a 4-term series above -1/16 (1.3e-7 relative), else
// exp(x) - 1 (no cancellation left: |result| > 0.06).
C10_HOST_DEVICE inline float expm1_nonpositive_compact(float x) {
  if (x > -0.0625f) return x * fma(x, fma(x, fma(x, 1.0f / 24.0f, 1.0f / 6.0f), 0.5f), 1.0f);
  return exp(x) - 1.0f;
}
// a / b with rcp.approx (1 ulp) instead of IEEE division, whose slow path is a call (a stack frame in every kernel
// that divides): b below 2**-100 is scaled by 2**64 first (exactly), where ftz would flush it to 0.
C10_HOST_DEVICE inline float divide(float a, float b) {
  const float scale = (b < 0x1p-100f && b > -0x1p-100f) ? 0x1p64f : 1.0f;
  return (a * scale) * reciprocal(b * scale);
}
// log p and log(1 - p) for p in [0, 1] (binary focal loss): one 6-term series serves whichever of the two is near 0
// (log p for p > 15/16, log(1 - p) for p < 1/16: never both), lg2 the other and both in between (|log| > 0.06
// there, so lg2's 2**-22 absolute error is 3e-6 of it at most). 1 - p is exact for p >= 1/2 and rounds by
// 2**-25 at most below (5e-7 of |log(1 - p)| >= 0.06): no log1p correction needed.
C10_HOST_DEVICE inline void log_and_log1m(float p, float& log_p, float& log_q) {
  const bool upper = p > 0.5f;
  const float d = upper ? p - 1.0f : -p;  // log p = log1p(d) above 1/2, log(1 - p) = log1p(d) below: exact
  const float near = d * fma(d, fma(d, fma(d, fma(d, fma(d, -1.0f / 6.0f, 0.2f), -0.25f), 1.0f / 3.0f), -0.5f), 1.0f);
  const bool use_series = d > -0.0625f;  // d <= 0 always
  log_p = upper && use_series ? near : log2(p) * kLn2;
  log_q = !upper && use_series ? near : log2(1.0f - p) * kLn2;
}
// log p and log(1 - p) for p in [0, 1], each clamped below at -100 (BCELoss), for results stored in fp16 / bf16.
// m = min(p, 1 - p) is exact (p below 1/2, 1 - p above): the larger of the two logs is log1p(-m), a degree-5 fit of
// log1p(-m) / -m on [0, 1/2] (6.6e-6 relative), the smaller log m, lg2.approx.ftz of m scaled by 2**32 (m >= 2**-149
// stays normal: no subnormal fix-up; 2 ulp of |log2| <= 117 is 1.4e-5 absolute, 2e-5 of |log m| >= log 2). Only the
// smaller reaches -inf (m = 0), so only it is clamped. Sets `invalid` for p outside [0, 1] (m < 0; NaN passes).
C10_HOST_DEVICE inline void log_and_log1m_compact(float p, float& log_p, float& log_q, bool& invalid) {
  const float m = ::fminf(p, 1.0f - p);  // 1 - p rounds by 2**-25 at most below 1/2, where m = p
  invalid = m < 0.0f;
  constexpr float coefficients[6] = {0.84638005f, -0.31109393f, 0.40336272f, 0.31367114f, 0.50089544f, 0.9999935f};
  float series = coefficients[0];
#pragma unroll
  for (int i = 1; i < 6; ++i) series = fma(series, m, coefficients[i]);
  const float larger = -m * series;
  const float smaller = max_nan(fma(log2_ftz(m * 0x1p32f), kLn2, -32.0f * kLn2), -100.0f);
  const bool upper = p > 0.5f;
  log_p = upper ? larger : smaller;
  log_q = upper ? smaller : larger;
}
// log1p(x), x > -1: a 5-term series below |x| = 1/16 (2e-7 relative), else log(1 + x) corrected for the
// rounding of 1 + x.
C10_HOST_DEVICE inline float log1p(float x) {
  if (x > -0.0625f && x < 0.0625f) {
    return x * fma(x, fma(x, fma(x, fma(x, 0.2f, -0.25f), 1.0f / 3.0f), -0.5f), 1.0f);
  }
  const float y = 1.0f + x;
  if (y == 0.0f) return log(y);  // x = -1: -inf (the correction below would be 0 * inf)
  return log(y) + (x - (y - 1.0f)) * reciprocal(y);
}
// expm1(x): a 5-term series below |x| = 1/16 (2e-7 relative), else exp(x) - 1 (no cancellation left there).
C10_HOST_DEVICE inline float expm1(float x) {
  if (x > -0.0625f && x < 0.0625f) {
    return x * fma(x, fma(x, fma(x, fma(x, 1.0f / 120.0f, 1.0f / 24.0f), 1.0f / 6.0f), 0.5f), 1.0f);
  }
  return exp(x) - 1.0f;
}
// x**y for x in [0, 1] and y >= 0 (modulating factors): 2**(y log2 x) with x = m 2**e split exactly (m in [1, 2)),
// so lg2's error is 2**-22 absolute on log2 m, not 2 ulp of a log2 x as large as 149; y e is carried as a rounded
// product plus its exact fma error, and its integer part scales the result exactly. About 1e-6 relative for results
// down to the smallest normal (exp2(y log2 x) in one piece: 3e-5 at a result of 1e-31).
C10_HOST_DEVICE inline float pow(float x, float y) {
  if (!(x > 0.0f)) return x == 0.0f ? (y == 0.0f ? 1.0f : 0.0f) : NAN;
  int e;
  const float m = 2.0f * ::frexpf(x, &e);  // x = m 2**(e - 1), m in [1, 2)
  const float exponent = static_cast<float>(e - 1);
  const float ye = y * exponent;
  const float ye_error = fma(y, exponent, -ye);  // exact
  const float whole = ::rintf(ye);
  const float fraction = (ye - whole) + (ye_error + y * log2(m));
  if (whole < -300.0f) return 0.0f;
  return ::ldexpf(exp2(fraction), static_cast<int>(whole));
}

// x**y for x in [0, 1], y >= 0, for results stored in fp16 / bf16: 2**(y lg2 x) in one piece. lg2's 2 ulp on a
// log2 x down to -126 moves the result by 2e-5 relative at most (25 times under fp16's rounding). Subnormal x flushes
// to 0 (lg2.approx.ftz: no fix-up sequence), and so do results below float's normal range (ex2.approx.ftz): every
// caller multiplies x**y by a term at least as small as x there (a modulating factor times its cross entropy), so
// those results are below the normal range either way. x**0 = 1 (0**0 too); NaN gives NaN, as x < 0 does.
C10_HOST_DEVICE inline float pow_compact(float x, float y) {
  const float r = exp2(y * log2_ftz(x));  // x = 0: -inf, so 0 for y > 0
  return y == 0.0f && x == x ? 1.0f : r;
}

}  // namespace focal::approx
