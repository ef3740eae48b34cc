// Names shared by the op glue and both backends' kernels; no math here, so any header may include it
// (focal_math.h must come after csrc/cpu/vec_math.h in the CPU kernels).
#pragma once

#include <cstdint>

namespace focal {

// Same codes as at::Reduction.
enum Reduction : int64_t { kNone = 0, kMean = 1, kSum = 2 };

// The focal exponent as a template argument: 0..3 have an unrolled power, kGammaAny calls pow
// (gamma_dispatch.h picks one at run time).
constexpr int kGammaAny = -1;

// The elementwise losses (docs/design.md §5): one traversal per layout, one point function each (focal_math.h).
enum class ElementwiseLoss : int { kSigmoidFocal, kBinaryFocal, kVarifocal, kQualityFocal, kAsymmetric };

// A constant weight multiplying loss and gradient: per element (the input's shape), per row (the input's
// leading dims, read once per row) or per class (the last dim).
enum class WeightMode : int { kNone, kElement, kRow, kClass };

// The scalar arguments of an elementwise loss; each loss reads its own.
struct ElementwiseConstants {
  double alpha = -1.0;           // sigmoid / binary focal: < 0 disables; varifocal: the negatives' weight
  double gamma = 2.0;            // the focal exponent; quality focal: beta; asymmetric: gamma_pos
  double gamma_neg = 4.0;        // asymmetric
  double clip = 0.05;            // asymmetric
  double eps = 1e-8;             // asymmetric
  double label_smoothing = 0.0;  // sigmoid focal
  double poly_epsilon = 0.0;     // sigmoid focal
  bool iou_weighted = true;      // varifocal
  bool detach_modulation = true; // asymmetric
};

}  // namespace focal
