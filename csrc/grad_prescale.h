// Half-precision gradients survive the loss scale (docs/design.md §8): the forward stores an fp16 gradient times
// a power of two, the largest that keeps every unit-weight gradient below 2**13 (fp16's largest is 65504: room
// for weights up to 8), and grad_scale carries its inverse in float, so a gradient below fp16's range is still a
// normal fp16 when grad_output (a GradScaler's 2**15, a sum) arrives. Shared by both backends.
#pragma once

#include "ops.h"

namespace focal {

// The power of two the stored gradient of this call carries: 1 but for fp16 with a bounded gradient.
double grad_prescale(const ElementwiseCall& call);
double grad_prescale(const SoftmaxCall& call);

}  // namespace focal
