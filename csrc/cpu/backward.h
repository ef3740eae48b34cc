// The CPU backward ops (ops.cpp: focal_bwd, focal_bwd_): grad * grad_output * grad_scale, one ATen pass.
#pragma once

#include <ATen/core/Tensor.h>

namespace focal::cpu {

at::Tensor focal_bwd(const at::Tensor& grad, const at::Tensor& grad_output, const at::Tensor& grad_scale,
                     int64_t reduction, bool class_dim_reduced);
void focal_bwd_(const at::Tensor& grad, const at::Tensor& grad_output, const at::Tensor& grad_scale,
                int64_t reduction, bool class_dim_reduced);

}  // namespace focal::cpu
