// Host code: both backends pick a kernel instantiation for the focal exponent with dispatch_gamma.
#pragma once

#include "loss_kinds.h"

#include <type_traits>

namespace focal {

// Calls body(std::integral_constant<int, G>{}) with G the integer-gamma fast path (0..3) or kGammaAny, and
// returns what it returns.
template <typename Body>
inline decltype(auto) dispatch_gamma(double gamma, const Body& body) {
  if (gamma == 0.0) return body(std::integral_constant<int, 0>{});
  if (gamma == 1.0) return body(std::integral_constant<int, 1>{});
  if (gamma == 2.0) return body(std::integral_constant<int, 2>{});
  if (gamma == 3.0) return body(std::integral_constant<int, 3>{});
  return body(std::integral_constant<int, kGammaAny>{});
}

}  // namespace focal
