#include "grad_prescale.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace focal {
namespace {

// The bounds are of |d loss / d x| per element for unit weight and alpha in [0, 1]; 1 for other dtypes and for an
// unbounded gradient.
double prescale_for(at::ScalarType dtype, double gradient_bound) {
  if (dtype != at::kHalf || !(gradient_bound < 1e30)) return 1.0;
  const int exponent = static_cast<int>(std::floor(13.0 - std::log2(std::max(gradient_bound, 1.0))));
  return std::ldexp(1.0, std::clamp(exponent, 0, 13));
}

double elementwise_gradient_bound(ElementwiseLoss kind, const ElementwiseConstants& c) {
  // (1 - p_t)**g ce has |d/dx| <= 1 + g max(p log(1/p)) <= 1 + g / e: 1 + g / 2 with margin.
  const auto focal = [](double g) { return 1.0 + 0.5 * g; };
  switch (kind) {
    case ElementwiseLoss::kSigmoidFocal: {
      const double alpha = c.alpha < 0 ? 1.0 : std::max({std::abs(c.alpha), std::abs(1.0 - c.alpha), 1.0});
      return alpha * (focal(c.gamma) + 0.25 * std::abs(c.poly_epsilon) * (c.gamma + 1.0));
    }
    case ElementwiseLoss::kVarifocal: return std::max(1.0, std::abs(c.alpha)) * focal(c.gamma);
    case ElementwiseLoss::kQualityFocal: return focal(c.gamma);
    case ElementwiseLoss::kAsymmetric: return focal(std::max(c.gamma, c.gamma_neg));
    case ElementwiseLoss::kBinaryFocal: break;  // d/dp of log p is unbounded
  }
  return std::numeric_limits<double>::infinity();
}

double softmax_gradient_bound(double gamma, double poly_epsilon) {
  // q_j h_j and p_j sum_c q_c h_c, each at most the focal bound
  return 2.0 * (1.0 + 0.5 * gamma + std::abs(poly_epsilon) * (gamma + 1.0));
}

}  // namespace

double grad_prescale(const ElementwiseCall& call) {
  return prescale_for(call.input.scalar_type(), elementwise_gradient_bound(call.kind, call.constants));
}

double grad_prescale(const SoftmaxCall& call) {
  return prescale_for(call.input.scalar_type(), softmax_gradient_bound(call.gamma, call.poly_epsilon));
}

}  // namespace focal
