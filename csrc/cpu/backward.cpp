#include "backward.h"

#include "../ops.h"

#include <ATen/ATen.h>

namespace focal::cpu {
namespace {

// What grad is multiplied by: grad_output (over dim 1 for the softmax 'none' loss) times grad_scale, in opmath.
at::Tensor grad_output_factor(const at::Tensor& grad, const at::Tensor& grad_output, const at::Tensor& grad_scale,
                              int64_t reduction, bool class_dim_reduced) {
  if (reduction == kNone) {
    const bool batched = grad.dim() >= 2;
    const at::Tensor per_element = class_dim_reduced && batched ? grad_output.unsqueeze(1) : grad_output;
    if (grad.scalar_type() != at::kHalf) return per_element;  // grad_scale is 1: no pass to form the factor
    return per_element.to(grad_scale.scalar_type()) * grad_scale;
  }
  return grad_output.to(grad_scale.scalar_type()) * grad_scale;
}

}  // namespace

at::Tensor focal_bwd(const at::Tensor& grad, const at::Tensor& grad_output, const at::Tensor& grad_scale,
                     int64_t reduction, bool class_dim_reduced) {
  check_backward_args(grad, grad_output, grad_scale, reduction, class_dim_reduced, /*in_place=*/false);
  return (grad * grad_output_factor(grad, grad_output, grad_scale, reduction, class_dim_reduced))
      .to(grad.scalar_type());
}

void focal_bwd_(const at::Tensor& grad, const at::Tensor& grad_output, const at::Tensor& grad_scale,
                int64_t reduction, bool class_dim_reduced) {
  check_backward_args(grad, grad_output, grad_scale, reduction, class_dim_reduced, /*in_place=*/true);
  grad.mul_(grad_output_factor(grad, grad_output, grad_scale, reduction, class_dim_reduced));
}

}  // namespace focal::cpu
