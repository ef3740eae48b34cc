// Names shared by the op glue and both backends' kernels; no math here, so any header may include it
// (focal_math.h must come after csrc/cpu/vec_math.h in the CPU kernels).
#pragma once

namespace focal {

// The elementwise losses (design.md §5): one traversal per layout, one point function each (focal_math.h).
enum class ElementwiseLoss : int { kSigmoidFocal, kBinaryFocal, kVarifocal, kQualityFocal, kAsymmetric };

// A constant weight multiplying loss and gradient: per element (the input's shape), per row (the input's
// leading dims, read once per row) or per class (the last dim).
enum class WeightMode : int { kNone, kElement, kRow, kClass };

}  // namespace focal
