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
  inline at::vec::Vectorized<S> fm_pow(const at::vec::Vectorized<S>& x, const at::vec::Vectorized<S>& y) { \
    return x.pow(y);                                                                                 \
  }                                                                                                  \
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

}  // namespace focal
