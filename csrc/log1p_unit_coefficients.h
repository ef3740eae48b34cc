// log1p(e) for e in [0, 1] as e * P(e), P a degree-8 fit of log1p(e) / e (relative least squares at Chebyshev
// nodes): within 1.8e-7 relative error over [1e-38, 1] in float, with no division and no transcendental.
// Shared by the CPU SIMD kernels (csrc/cpu/vec_math.h) and the CUDA kernels (csrc/approx_math.h).
#pragma once

namespace focal {

// Horner order: highest degree first. A macro too, for a function-local copy in device code (which cannot
// read a namespace-scope array).
#define FOCAL_LOG1P_UNIT_COEFFICIENTS                                                                          \
  0.0051058256067335606f, -0.028991956263780594f, 0.07738073915243149f, -0.13590599596500397f,               \
      0.1907130926847458f, -0.2483394593000412f, 0.3331793546676636f, -0.4999943673610687f, 0.9999999403953552f
inline constexpr float kLog1pUnitCoefficients[9] = {FOCAL_LOG1P_UNIT_COEFFICIENTS};

// For results stored in fp16 / bf16 (11 / 8 significant bits): log1p(e) = small R(e), small = e / (1 + e), with R a
// degree-4 fit of (1 + e) log1p(e) / e (relative, at Chebyshev nodes): within 1.1e-5 relative over [1e-38, 1] in float.
#define FOCAL_LOG1P_UNIT_COMPACT_COEFFICIENTS                                                                  \
  -0.01438358798623085f, 0.06177113950252533f, -0.16046541929244995f, 0.4993461072444916f, 1.0000109672546387f

// For results stored in bf16 (8 significant bits): the same R to degree 3 (minimax in relative error), within 9.4e-5
// relative over [1e-38, 1] in float: 20 times under bf16's rounding.
#define FOCAL_LOG1P_UNIT_BF16_COEFFICIENTS 0.034002658f, -0.14397086f, 0.4962988f, 1.0000938f

}  // namespace focal
