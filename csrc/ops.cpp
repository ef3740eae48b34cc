// The focal_cuda operator library: one schema per op, the tensor-level argument checks every backend runs,
// and the device-independent glue around the kernels. Backends register in cpu/ and cuda/.
#include "ops.h"

#include "focal_math.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace focal {
namespace {

void check_reduction(int64_t reduction) {
  TORCH_CHECK_VALUE(reduction == kNone || reduction == kMean || reduction == kSum,
                    "reduction: expected 0 (none), 1 (mean) or 2 (sum), got ", reduction);
}

void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), name,
                   ": expected a floating tensor (float16, bfloat16, float32, float64), got ", t.scalar_type());
}

void check_same_device(const at::Tensor& input, const at::Tensor& other, const char* name) {
  TORCH_CHECK(other.device() == input.device(), name, ": expected a tensor on the input's device (",
              input.device(), "), got one on ", other.device());
}

void check_normalizer(const at::Tensor& input, const std::optional<at::Tensor>& normalizer) {
  if (!normalizer.has_value()) return;
  const at::Tensor& n = *normalizer;
  TORCH_CHECK_VALUE(n.dim() == 0, "normalizer: expected a number or a 0-dim tensor, got a tensor of shape ",
                    n.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(n.scalar_type()) || at::isIntegralType(n.scalar_type(), false),
                   "normalizer: expected a real number tensor, got ", n.scalar_type());
  check_same_device(input, n, "normalizer");
}

// Dense targets share the input's shape and dtype (functional.py converts the dtype).
void check_dense_target(const at::Tensor& input, const at::Tensor& target, const char* input_name) {
  TORCH_CHECK_VALUE(target.sizes() == input.sizes(), "target: expected the shape of ", input_name, " ",
                    input.sizes(), ", got ", target.sizes());
  TORCH_CHECK_TYPE(target.scalar_type() == input.scalar_type(), "target: expected dtype ", input.scalar_type(),
                   " (the ", input_name, "'s), got ", target.scalar_type());
}

// An optional opmath tensor argument on the input's device that autograd does not differentiate.
void check_constant_opmath(const at::Tensor& input, const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == opmath_dtype(input), name, ": expected dtype ", opmath_dtype(input), ", got ",
                   t.scalar_type());
  check_same_device(input, t, name);
  TORCH_CHECK_VALUE(!t.requires_grad(), name, ": expected a constant tensor (requires_grad=False): the loss is not ",
                    "differentiated with respect to it");
}

}  // namespace

WeightMode check_elementwise_extras(const at::Tensor& input, const at::Tensor& target,
                                    const std::optional<at::Tensor>& score, const std::optional<at::Tensor>& weight,
                                    const std::optional<at::Tensor>& class_alpha) {
  const bool index_target = target.scalar_type() == at::kLong;
  const int64_t C = input.dim() == 0 ? 1 : input.size(-1);
  if (score.has_value()) {
    TORCH_CHECK_VALUE(index_target, "score: only with class-index targets (a dense target carries its values)");
    TORCH_CHECK_VALUE(score->sizes() == target.sizes(), "score: expected the target's shape ", target.sizes(),
                      ", got ", score->sizes());
    TORCH_CHECK_TYPE(score->scalar_type() == input.scalar_type(), "score: expected dtype ", input.scalar_type(),
                     " (the input's), got ", score->scalar_type());
    check_same_device(input, *score, "score");
  }
  if (class_alpha.has_value()) {
    check_constant_opmath(input, *class_alpha, "alpha");
    TORCH_CHECK_VALUE(class_alpha->dim() == 1 && class_alpha->size(0) == C, "alpha: expected ", C,
                      " per-class values (the input's last dim), got a tensor of shape ", class_alpha->sizes());
  }
  if (!weight.has_value()) return WeightMode::kNone;
  const at::Tensor& w = *weight;
  check_constant_opmath(input, w, "weight");
  if (w.sizes() == input.sizes()) return WeightMode::kElement;
  TORCH_CHECK_VALUE(w.dim() == input.dim() && input.dim() >= 1,
                    "weight: expected the input's shape ", input.sizes(), ", its rows' shape with a last dim of 1, or ",
                    "(1, ..., 1, C), got ", w.sizes());
  bool rows = w.size(-1) == 1, classes = w.size(-1) == C;
  for (int64_t d = 0; d + 1 < input.dim(); ++d) {
    rows &= w.size(d) == input.size(d);
    classes &= w.size(d) == 1;
  }
  TORCH_CHECK_VALUE(rows || classes, "weight: expected the input's shape ", input.sizes(),
                    ", its rows' shape with a last dim of 1, or (1, ..., 1, C), got ", w.sizes());
  return rows ? WeightMode::kRow : WeightMode::kClass;
}

void check_softmax_weight(const at::Tensor& input, const at::Tensor& target, const std::optional<at::Tensor>& weight) {
  if (!weight.has_value()) return;
  check_constant_opmath(input, *weight, "weight");
  TORCH_CHECK_VALUE(weight->sizes() == target.sizes(), "weight: expected one weight per row, the target's shape ",
                    target.sizes(), ", got ", weight->sizes());
}

namespace {

ElementwiseCall elementwise_call(ElementwiseLoss kind, const ElementwiseConstants& constants, const at::Tensor& input,
                                 const at::Tensor& target, const std::optional<at::Tensor>& score,
                                 const std::optional<at::Tensor>& weight,
                                 const std::optional<at::Tensor>& class_alpha,
                                 const std::optional<at::Tensor>& normalizer, int64_t reduction, int64_t ignore_index,
                                 bool compute_grad) {
  ElementwiseCall call;
  call.kind = kind;
  call.constants = constants;
  call.input = input;
  call.target = target;
  call.score = score;
  call.weight = weight;
  call.weight_mode = check_elementwise_extras(input, target, score, weight, class_alpha);
  call.class_alpha = class_alpha;
  call.normalizer = normalizer;
  call.reduction = reduction;
  call.ignore_index = ignore_index;
  call.compute_grad = compute_grad;
  return call;
}

}  // namespace

ElementwiseCall sigmoid_focal_call(const at::Tensor& input, const at::Tensor& target, double alpha, double gamma,
                                   int64_t reduction, int64_t ignore_index, double label_smoothing,
                                   const std::optional<at::Tensor>& normalizer, bool compute_grad,
                                   const std::optional<at::Tensor>& weight,
                                   const std::optional<at::Tensor>& class_alpha, double poly_epsilon) {
  check_sigmoid_args(input, target, reduction, normalizer);
  ElementwiseConstants c;
  c.alpha = alpha;
  c.gamma = gamma;
  c.label_smoothing = label_smoothing;
  c.poly_epsilon = poly_epsilon;
  return elementwise_call(ElementwiseLoss::kSigmoidFocal, c, input, target, std::nullopt, weight, class_alpha,
                          normalizer, reduction, ignore_index, compute_grad);
}

ElementwiseCall binary_focal_call(const at::Tensor& prob, const at::Tensor& target, double alpha, double gamma,
                                  int64_t reduction, bool compute_grad, const std::optional<at::Tensor>& weight) {
  check_binary_args(prob, target, reduction);
  ElementwiseConstants c;
  c.alpha = alpha;
  c.gamma = gamma;
  return elementwise_call(ElementwiseLoss::kBinaryFocal, c, prob, target, std::nullopt, weight, std::nullopt,
                          std::nullopt, reduction, /*ignore_index=*/-100, compute_grad);
}

ElementwiseCall varifocal_call(const at::Tensor& input, const at::Tensor& target,
                               const std::optional<at::Tensor>& score, double alpha, double gamma, bool iou_weighted,
                               int64_t reduction, int64_t ignore_index, const std::optional<at::Tensor>& normalizer,
                               bool compute_grad, const std::optional<at::Tensor>& weight) {
  check_sigmoid_args(input, target, reduction, normalizer);
  ElementwiseConstants c;
  c.alpha = alpha;
  c.gamma = gamma;
  c.iou_weighted = iou_weighted;
  return elementwise_call(ElementwiseLoss::kVarifocal, c, input, target, score, weight, std::nullopt, normalizer,
                          reduction, ignore_index, compute_grad);
}

ElementwiseCall quality_focal_call(const at::Tensor& input, const at::Tensor& target,
                                   const std::optional<at::Tensor>& score, double beta, int64_t reduction,
                                   int64_t ignore_index, const std::optional<at::Tensor>& normalizer,
                                   bool compute_grad, const std::optional<at::Tensor>& weight) {
  check_sigmoid_args(input, target, reduction, normalizer);
  ElementwiseConstants c;
  c.gamma = beta;
  return elementwise_call(ElementwiseLoss::kQualityFocal, c, input, target, score, weight, std::nullopt, normalizer,
                          reduction, ignore_index, compute_grad);
}

ElementwiseCall asymmetric_call(const at::Tensor& input, const at::Tensor& target, double gamma_pos,
                                double gamma_neg, double clip, double eps, bool detach_modulation, int64_t reduction,
                                int64_t ignore_index, const std::optional<at::Tensor>& normalizer, bool compute_grad,
                                const std::optional<at::Tensor>& weight) {
  check_sigmoid_args(input, target, reduction, normalizer);
  ElementwiseConstants c;
  c.gamma = gamma_pos;
  c.gamma_neg = gamma_neg;
  c.clip = clip;
  c.eps = eps;
  c.detach_modulation = detach_modulation;
  return elementwise_call(ElementwiseLoss::kAsymmetric, c, input, target, std::nullopt, weight, std::nullopt,
                          normalizer, reduction, ignore_index, compute_grad);
}

at::ScalarType opmath_dtype(const at::Tensor& input) {
  return input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

void check_sigmoid_args(const at::Tensor& input, const at::Tensor& target, int64_t reduction,
                        const std::optional<at::Tensor>& normalizer) {
  check_floating(input, "input");
  check_reduction(reduction);
  check_same_device(input, target, "target");
  check_normalizer(input, normalizer);
  if (target.scalar_type() == at::kLong) {
    TORCH_CHECK_VALUE(input.dim() >= 1, "input: class-index targets need input of shape (..., C), got a 0-dim tensor");
    const auto rows_shape = input.sizes().slice(0, input.dim() - 1);
    TORCH_CHECK_VALUE(target.sizes() == rows_shape, "target: class-index target must have shape input.shape[:-1] = ",
                      rows_shape, ", got ", target.sizes());
  } else {
    TORCH_CHECK_TYPE(at::isFloatingType(target.scalar_type()),
                     "target: expected a floating tensor (dense) or int64 class indices, got ", target.scalar_type());
    check_dense_target(input, target, "input");
  }
}

void check_softmax_args(const at::Tensor& input, const at::Tensor& target, const std::optional<at::Tensor>& alpha,
                        int64_t reduction, const std::optional<at::Tensor>& normalizer) {
  check_floating(input, "input");
  check_reduction(reduction);
  check_same_device(input, target, "target");
  check_normalizer(input, normalizer);
  TORCH_CHECK_VALUE(input.dim() >= 1, "input: expected shape (N, C), (N, C, d1, ..., dk) or (C,), got a 0-dim tensor");
  TORCH_CHECK_TYPE(target.scalar_type() == at::kLong, "target: expected integer class indices (int64), got ",
                   target.scalar_type());
  const int64_t C = input.dim() == 1 ? input.size(0) : input.size(1);
  TORCH_CHECK_VALUE(C >= 1, "input: expected at least one class (dim ", input.dim() == 1 ? 0 : 1,
                    " of size >= 1), got shape ", input.sizes());
  std::vector<int64_t> expected;
  if (input.dim() >= 2) {
    expected.push_back(input.size(0));
    for (int64_t d = 2; d < input.dim(); ++d) expected.push_back(input.size(d));
  }
  TORCH_CHECK_VALUE(target.sizes() == at::IntArrayRef(expected), "target: expected shape ", at::IntArrayRef(expected),
                    " for input of shape ", input.sizes(), ", got ", target.sizes());
  if (alpha.has_value()) {
    const at::Tensor& a = *alpha;
    TORCH_CHECK_VALUE(a.dim() == 1 && a.size(0) == C, "alpha: expected ", C, " per-class weights (one per class of ",
                      "input), got a tensor of shape ", a.sizes());
    TORCH_CHECK_TYPE(a.scalar_type() == opmath_dtype(input), "alpha: expected dtype ", opmath_dtype(input), ", got ",
                     a.scalar_type());
    check_same_device(input, a, "alpha");
  }
}

void check_binary_args(const at::Tensor& prob, const at::Tensor& target, int64_t reduction) {
  check_floating(prob, "prob");
  check_reduction(reduction);
  check_same_device(prob, target, "target");
  check_dense_target(prob, target, "prob");
}

double grad_prescale(at::ScalarType dtype, double gradient_bound) {
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

LossGradScale finish_forward(const at::Tensor& input, const at::Tensor& loss_none, const at::Tensor& loss_sum,
                             const at::Tensor& count, const at::Tensor& grad,
                             const std::optional<at::Tensor>& normalizer, int64_t reduction, double grad_scale) {
  const auto opmath = input.options().dtype(opmath_dtype(input));
  const at::Tensor grad_out = grad.defined() ? grad : at::empty({0}, input.options());
  const at::Tensor scale = at::scalar_tensor(grad_scale, opmath);
  if (reduction == kNone) return {loss_none, grad_out, scale};
  if (reduction == kSum) return {loss_sum.to(input.scalar_type()), grad_out, scale};
  // kMean: divide by the normalizer, or by the count; a mean over nothing is 0.
  const at::Tensor denominator =
      normalizer.has_value() ? normalizer->to(opmath_dtype(input)) : count.to(opmath_dtype(input)).clamp_min(1);
  return {(loss_sum / denominator).to(input.scalar_type()), grad_out, scale};
}

void check_backward_args(const at::Tensor& grad_output, const at::Tensor& grad, const at::Tensor& grad_scale,
                         int64_t reduction, bool class_dim_reduced) {
  check_reduction(reduction);
  check_same_device(grad, grad_output, "grad_output");
  check_same_device(grad, grad_scale, "grad_scale");
  TORCH_CHECK_VALUE(grad_scale.dim() == 0 && grad_scale.scalar_type() == opmath_dtype(grad),
                    "grad_scale: expected a 0-dim ", opmath_dtype(grad), " tensor, got shape ", grad_scale.sizes(),
                    " of dtype ", grad_scale.scalar_type());
  if (reduction != kNone) {
    TORCH_CHECK_VALUE(grad_output.dim() == 0, "grad_output: expected a 0-dim tensor for a reduced loss, got shape ",
                      grad_output.sizes());
    return;
  }
  if (!class_dim_reduced || grad.dim() <= 1) {
    TORCH_CHECK_VALUE(class_dim_reduced ? grad_output.dim() == 0 : grad_output.sizes() == grad.sizes(),
                      "grad_output: expected the loss's shape, got ", grad_output.sizes(), " for a gradient of shape ",
                      grad.sizes());
    return;
  }
  std::vector<int64_t> loss_shape(grad.sizes().begin(), grad.sizes().end());
  loss_shape.erase(loss_shape.begin() + 1);
  TORCH_CHECK_VALUE(grad_output.sizes() == at::IntArrayRef(loss_shape), "grad_output: expected the loss's shape ",
                    at::IntArrayRef(loss_shape), ", got ", grad_output.sizes());
}

void check_backward_in_place_args(const at::Tensor& grad, const at::Tensor& grad_output, const at::Tensor& grad_scale,
                                  int64_t reduction, bool class_dim_reduced) {
  check_backward_args(grad_output, grad, grad_scale, reduction, class_dim_reduced);
  TORCH_CHECK_VALUE(grad.is_contiguous(), "grad: expected a contiguous tensor (it is overwritten in place), got ",
                    "strides ", grad.strides(), " for shape ", grad.sizes());
  TORCH_CHECK_TYPE(grad_output.scalar_type() == grad.scalar_type(), "grad_output: expected dtype ",
                   grad.scalar_type(), " (the grad's, which holds the result), got ", grad_output.scalar_type());
}

namespace {

// What the backward multiplies grad by: grad_output (its class dim broadcast for the softmax 'none' loss, whose
// grad_output has the target's shape), or grad_output * grad_scale for 'mean'/'sum'. An fp16 gradient carries a
// prescale whose inverse is in grad_scale for 'none' too: the factor is then formed in float.
at::Tensor grad_output_factor(const at::Tensor& grad_output, const at::Tensor& grad, const at::Tensor& grad_scale,
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

at::Tensor apply_grad_output(const at::Tensor& grad_output, const at::Tensor& grad, const at::Tensor& grad_scale,
                             int64_t reduction, bool class_dim_reduced) {
  check_backward_args(grad_output, grad, grad_scale, reduction, class_dim_reduced);
  // (the product takes grad's dtype: a 0-dim factor is read in opmath, a float factor of 'none' is cast back)
  return (grad * grad_output_factor(grad_output, grad, grad_scale, reduction, class_dim_reduced))
      .to(grad.scalar_type());
}

void apply_grad_output_(const at::Tensor& grad, const at::Tensor& grad_output, const at::Tensor& grad_scale,
                        int64_t reduction, bool class_dim_reduced) {
  check_backward_in_place_args(grad, grad_output, grad_scale, reduction, class_dim_reduced);
  grad.mul_(grad_output_factor(grad_output, grad, grad_scale, reduction, class_dim_reduced));
}

at::Tensor elementwise_focal_bwd(const at::Tensor& grad_output, const at::Tensor& grad, const at::Tensor& grad_scale,
                                 int64_t reduction) {
  return apply_grad_output(grad_output, grad, grad_scale, reduction, /*class_dim_reduced=*/false);
}

at::Tensor softmax_focal_bwd(const at::Tensor& grad_output, const at::Tensor& grad, const at::Tensor& grad_scale,
                             int64_t reduction) {
  return apply_grad_output(grad_output, grad, grad_scale, reduction, /*class_dim_reduced=*/true);
}

}  // namespace focal

// reduction: 0 none, 1 mean, 2 sum. The forward returns (loss, grad, grad_scale): grad is d(sum of the
// per-element losses)/d(input) from the same pass (empty unless compute_grad), and grad_scale the factor
// (1/denominator for mean) the backward applies with grad_output.
FOCAL_TORCH_LIBRARY(FOCAL_OPS_NAMESPACE, m) {
  const std::vector<at::Tag> tags = {at::Tag::pt2_compliant_tag};
  // weight, per-class alpha, poly_epsilon and score: the focal family (design.md §5); see check_elementwise_extras.
  m.def(
      "sigmoid_focal_fwd(Tensor input, Tensor target, float alpha, float gamma, int reduction, int ignore_index, "
      "float label_smoothing, Tensor? normalizer, bool compute_grad, Tensor? weight=None, Tensor? class_alpha=None, "
      "float poly_epsilon=0.0) -> (Tensor, Tensor, Tensor)",
      tags);
  m.def(
      "softmax_focal_fwd(Tensor input, Tensor target, Tensor? alpha, float gamma, int reduction, int ignore_index, "
      "float label_smoothing, Tensor? normalizer, bool compute_grad, Tensor? weight=None, float poly_epsilon=0.0) "
      "-> (Tensor, Tensor, Tensor)",
      tags);
  m.def(
      "binary_focal_fwd(Tensor prob, Tensor target, float alpha, float gamma, int reduction, bool compute_grad, "
      "Tensor? weight=None) -> (Tensor, Tensor, Tensor)",
      tags);
  m.def(
      "varifocal_fwd(Tensor input, Tensor target, Tensor? score, float alpha, float gamma, bool iou_weighted, "
      "int reduction, int ignore_index, Tensor? normalizer, bool compute_grad, Tensor? weight=None) "
      "-> (Tensor, Tensor, Tensor)",
      tags);
  m.def(
      "quality_focal_fwd(Tensor input, Tensor target, Tensor? score, float beta, int reduction, int ignore_index, "
      "Tensor? normalizer, bool compute_grad, Tensor? weight=None) -> (Tensor, Tensor, Tensor)",
      tags);
  m.def(
      "asymmetric_fwd(Tensor input, Tensor target, float gamma_pos, float gamma_neg, float clip, float eps, "
      "bool detach_modulation, int reduction, int ignore_index, Tensor? normalizer, bool compute_grad, "
      "Tensor? weight=None) -> (Tensor, Tensor, Tensor)",
      tags);
  m.def("sigmoid_focal_bwd(Tensor grad_output, Tensor grad, Tensor grad_scale, int reduction) -> Tensor", tags);
  m.def("softmax_focal_bwd(Tensor grad_output, Tensor grad, Tensor grad_scale, int reduction) -> Tensor", tags);
  m.def("binary_focal_bwd(Tensor grad_output, Tensor grad, Tensor grad_scale, int reduction) -> Tensor", tags);
  // The backward ops' result written over grad (the forward's saved gradient, when autograd reads it no more):
  // saves a gradient-sized buffer. class_dim_reduced: the softmax loss (grad_output has the target's shape).
  m.def(
      "apply_grad_output_(Tensor(a!) grad, Tensor grad_output, Tensor grad_scale, int reduction, "
      "bool class_dim_reduced) -> ()",
      tags);
}
