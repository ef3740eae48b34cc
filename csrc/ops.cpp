// The focal_cuda operator library: one schema per op and the tensor-level argument checks every backend runs
// (each builds its kernel's call through the *_call functions). Backends register in cpu/ and cuda/.
#include "ops.h"


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


// The weight of an elementwise loss in the layout functional.py chose (weight_mode): the input's shape, one per row
// (input.shape[:-1]) or one per class ((C,)); never expanded to a full-size copy.
WeightMode check_weight(const at::Tensor& input, const std::optional<at::Tensor>& weight, int64_t weight_mode) {
  TORCH_CHECK_VALUE(weight_mode == kWeightPerElement || weight_mode == kWeightPerRow || weight_mode == kWeightPerClass,
                    "weight_mode: expected 0 (per element), 1 (per row) or 2 (per class), got ", weight_mode);
  if (!weight.has_value()) return WeightMode::kNone;
  const at::Tensor& w = *weight;
  check_constant_opmath(input, w, "weight");
  if (weight_mode == kWeightPerElement) {
    TORCH_CHECK_VALUE(w.sizes() == input.sizes(), "weight: expected the input's shape ", input.sizes(),
                      " (weight_mode 0, per element), got ", w.sizes());
    return WeightMode::kElement;
  }
  TORCH_CHECK_VALUE(input.dim() >= 1, "weight: a per-row or per-class weight needs input of shape (..., C), got a ",
                    "0-dim input");
  if (weight_mode == kWeightPerRow) {
    const auto rows_shape = input.sizes().slice(0, input.dim() - 1);
    TORCH_CHECK_VALUE(w.sizes() == rows_shape, "weight: expected one weight per row, shape input.shape[:-1] = ",
                      rows_shape, " (weight_mode 1), got ", w.sizes());
    return WeightMode::kRow;
  }
  TORCH_CHECK_VALUE(w.dim() == 1 && w.size(0) == input.size(-1), "weight: expected one weight per class, shape (",
                    input.size(-1), ",) (weight_mode 2), got ", w.sizes());
  return WeightMode::kClass;
}

// C per-class alphas (sigmoid: the last dim; softmax: dim 1), as one convention for both losses.
void check_class_alpha(const at::Tensor& input, const std::optional<at::Tensor>& class_alpha, int64_t C) {
  if (!class_alpha.has_value()) return;
  check_constant_opmath(input, *class_alpha, "alpha");
  TORCH_CHECK_VALUE(class_alpha->dim() == 1 && class_alpha->size(0) == C, "alpha: expected ", C,
                    " per-class values (one per class of input), got a tensor of shape ", class_alpha->sizes());
}

// The elementwise losses' logits and target: dense (the input's shape and dtype) or class indices (input.shape[:-1]).
void check_logits_and_target(const at::Tensor& input, const at::Tensor& target, int64_t reduction,
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

void check_score(const at::Tensor& input, const at::Tensor& target, const std::optional<at::Tensor>& score) {
  if (!score.has_value()) return;
  TORCH_CHECK_VALUE(target.scalar_type() == at::kLong,
                    "score: only with class-index targets (a dense target carries its values)");
  TORCH_CHECK_VALUE(score->sizes() == target.sizes(), "score: expected the target's shape ", target.sizes(), ", got ",
                    score->sizes());
  TORCH_CHECK_TYPE(score->scalar_type() == input.scalar_type(), "score: expected dtype ", input.scalar_type(),
                   " (the input's), got ", score->scalar_type());
  check_same_device(input, *score, "score");
}

// A single alpha: None (no alpha weighting) or a number >= 0.
void check_alpha(std::optional<double> alpha) {
  TORCH_CHECK_VALUE(!alpha.has_value() || *alpha >= 0, "alpha: expected None (no weighting) or a number >= 0, got ",
                    alpha.value_or(0.0));
}

ElementwiseCall elementwise_call(ElementwiseLoss kind, const ElementwiseConstants& constants, const at::Tensor& input,
                                 const at::Tensor& target, const std::optional<at::Tensor>& score,
                                 const std::optional<at::Tensor>& weight, int64_t weight_mode,
                                 const std::optional<at::Tensor>& normalizer, int64_t reduction, int64_t ignore_index,
                                 bool compute_grad) {
  check_logits_and_target(input, target, reduction, normalizer);
  check_score(input, target, score);
  ElementwiseCall call;
  call.kind = kind;
  call.constants = constants;
  call.input = input;
  call.target = target;
  call.score = score;
  call.weight = weight;
  call.weight_mode = check_weight(input, weight, weight_mode);
  call.normalizer = normalizer;
  call.reduction = reduction;
  call.ignore_index = ignore_index;
  call.compute_grad = compute_grad;
  return call;
}

}  // namespace

at::ScalarType opmath_dtype(const at::Tensor& input) {
  return input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

ElementwiseCall sigmoid_focal_call(const at::Tensor& input, const at::Tensor& target, std::optional<double> alpha,
                                   double gamma, int64_t reduction, int64_t ignore_index, double label_smoothing,
                                   const std::optional<at::Tensor>& normalizer, bool compute_grad,
                                   const std::optional<at::Tensor>& weight, int64_t weight_mode,
                                   const std::optional<at::Tensor>& class_alpha, double poly_epsilon) {
  check_alpha(alpha);
  TORCH_CHECK_VALUE(!(alpha.has_value() && class_alpha.has_value()),
                    "alpha: expected one number or C per-class values (class_alpha), got both");
  ElementwiseConstants c;
  c.alpha = alpha.value_or(-1.0);  // the kernels' AlphaWeight: < 0 is a_t = 1
  c.gamma = gamma;
  c.label_smoothing = label_smoothing;
  c.poly_epsilon = poly_epsilon;
  ElementwiseCall call = elementwise_call(ElementwiseLoss::kSigmoidFocal, c, input, target, std::nullopt, weight,
                                          weight_mode, normalizer, reduction, ignore_index, compute_grad);
  check_class_alpha(input, class_alpha, input.dim() == 0 ? 1 : input.size(-1));
  call.class_alpha = class_alpha;
  return call;
}

ElementwiseCall binary_focal_call(const at::Tensor& prob, const at::Tensor& target, std::optional<double> alpha,
                                  double gamma, int64_t reduction, bool compute_grad,
                                  const std::optional<at::Tensor>& weight, int64_t weight_mode) {
  check_floating(prob, "prob");
  check_reduction(reduction);
  check_same_device(prob, target, "target");
  check_dense_target(prob, target, "prob");
  check_alpha(alpha);
  ElementwiseConstants c;
  c.alpha = alpha.value_or(-1.0);
  c.gamma = gamma;
  return elementwise_call(ElementwiseLoss::kBinaryFocal, c, prob, target, std::nullopt, weight, weight_mode,
                          std::nullopt, reduction, /*ignore_index=*/-100, compute_grad);
}

ElementwiseCall varifocal_call(const at::Tensor& input, const at::Tensor& target,
                               const std::optional<at::Tensor>& score, double alpha, double gamma, bool iou_weighted,
                               int64_t reduction, int64_t ignore_index, const std::optional<at::Tensor>& normalizer,
                               bool compute_grad, const std::optional<at::Tensor>& weight, int64_t weight_mode) {
  ElementwiseConstants c;
  c.alpha = alpha;  // the negatives' weight
  c.gamma = gamma;
  c.iou_weighted = iou_weighted;
  return elementwise_call(ElementwiseLoss::kVarifocal, c, input, target, score, weight, weight_mode, normalizer,
                          reduction, ignore_index, compute_grad);
}

ElementwiseCall quality_focal_call(const at::Tensor& input, const at::Tensor& target,
                                   const std::optional<at::Tensor>& score, double beta, int64_t reduction,
                                   int64_t ignore_index, const std::optional<at::Tensor>& normalizer,
                                   bool compute_grad, const std::optional<at::Tensor>& weight, int64_t weight_mode) {
  ElementwiseConstants c;
  c.gamma = beta;
  return elementwise_call(ElementwiseLoss::kQualityFocal, c, input, target, score, weight, weight_mode, normalizer,
                          reduction, ignore_index, compute_grad);
}

ElementwiseCall asymmetric_call(const at::Tensor& input, const at::Tensor& target, double gamma_pos,
                                double gamma_neg, double clip, double eps, bool detach_modulation, int64_t reduction,
                                int64_t ignore_index, const std::optional<at::Tensor>& normalizer, bool compute_grad,
                                const std::optional<at::Tensor>& weight, int64_t weight_mode) {
  ElementwiseConstants c;
  c.gamma = gamma_pos;
  c.gamma_neg = gamma_neg;
  c.clip = clip;
  c.eps = eps;
  c.detach_modulation = detach_modulation;
  return elementwise_call(ElementwiseLoss::kAsymmetric, c, input, target, std::nullopt, weight, weight_mode,
                          normalizer, reduction, ignore_index, compute_grad);
}

SoftmaxCall softmax_focal_call(const at::Tensor& input, const at::Tensor& target,
                               const std::optional<at::Tensor>& class_alpha, double gamma, int64_t reduction,
                               int64_t ignore_index, double label_smoothing,
                               const std::optional<at::Tensor>& normalizer, bool compute_grad,
                               const std::optional<at::Tensor>& weight, double poly_epsilon) {
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
  check_class_alpha(input, class_alpha, C);
  if (weight.has_value()) {
    check_constant_opmath(input, *weight, "weight");
    TORCH_CHECK_VALUE(weight->sizes() == target.sizes(), "weight: expected one weight per row, the target's shape ",
                      target.sizes(), ", got ", weight->sizes());
  }
  SoftmaxCall call;
  call.input = input;
  call.target = target;
  call.class_alpha = class_alpha;
  call.weight = weight;
  call.normalizer = normalizer;
  call.gamma = gamma;
  call.label_smoothing = label_smoothing;
  call.poly_epsilon = poly_epsilon;
  call.reduction = reduction;
  call.ignore_index = ignore_index;
  call.compute_grad = compute_grad;
  return call;
}

void check_backward_args(const at::Tensor& grad, const at::Tensor& grad_output, const at::Tensor& grad_scale,
                         int64_t reduction, bool class_dim_reduced, bool in_place) {
  check_reduction(reduction);
  check_same_device(grad, grad_output, "grad_output");
  check_same_device(grad, grad_scale, "grad_scale");
  TORCH_CHECK_VALUE(grad_scale.dim() == 0 && grad_scale.scalar_type() == opmath_dtype(grad),
                    "grad_scale: expected a 0-dim ", opmath_dtype(grad), " tensor, got shape ", grad_scale.sizes(),
                    " of dtype ", grad_scale.scalar_type());
  if (in_place) {
    TORCH_CHECK_VALUE(grad.is_contiguous(), "grad: expected a contiguous tensor (it is overwritten in place), got ",
                      "strides ", grad.strides(), " for shape ", grad.sizes());
    TORCH_CHECK_TYPE(grad_output.scalar_type() == grad.scalar_type(), "grad_output: expected dtype ",
                     grad.scalar_type(), " (the grad's, which holds the result), got ", grad_output.scalar_type());
  }
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

}  // namespace focal

FOCAL_TORCH_LIBRARY(FOCAL_OPS_NAMESPACE, m) {
  const std::vector<at::Tag> tags = {at::Tag::pt2_compliant_tag};
  // Forward ops: (loss, grad, grad_scale). loss is per element (the softmax loss: per row) for reduction 0
  // (none), else 0-dim; grad = d(sum of losses)/d(input) times the gradient's prescale (empty when compute_grad is
  // false); grad_scale (0-dim opmath) is what focal_bwd multiplies grad * grad_output by. alpha: None or a number;
  // class_alpha: C per-class values; weight_mode: 0 per element, 1 per row (input.shape[:-1]), 2 per class (C,).
  m.def(
      "sigmoid_focal_fwd(Tensor input, Tensor target, float? alpha, float gamma, int reduction, int ignore_index, "
      "float label_smoothing, Tensor? normalizer, bool compute_grad, Tensor? weight=None, int weight_mode=0, "
      "Tensor? class_alpha=None, float poly_epsilon=0.0) -> (Tensor, Tensor, Tensor)",
      tags);
  m.def(
      "softmax_focal_fwd(Tensor input, Tensor target, Tensor? class_alpha, float gamma, int reduction, "
      "int ignore_index, float label_smoothing, Tensor? normalizer, bool compute_grad, Tensor? weight=None, "
      "float poly_epsilon=0.0) -> (Tensor, Tensor, Tensor)",
      tags);
  m.def(
      "binary_focal_fwd(Tensor prob, Tensor target, float? alpha, float gamma, int reduction, bool compute_grad, "
      "Tensor? weight=None, int weight_mode=0) -> (Tensor, Tensor, Tensor)",
      tags);
  m.def(
      "varifocal_fwd(Tensor input, Tensor target, Tensor? score, float alpha, float gamma, bool iou_weighted, "
      "int reduction, int ignore_index, Tensor? normalizer, bool compute_grad, Tensor? weight=None, "
      "int weight_mode=0) -> (Tensor, Tensor, Tensor)",
      tags);
  m.def(
      "quality_focal_fwd(Tensor input, Tensor target, Tensor? score, float beta, int reduction, int ignore_index, "
      "Tensor? normalizer, bool compute_grad, Tensor? weight=None, int weight_mode=0) -> (Tensor, Tensor, Tensor)",
      tags);
  m.def(
      "asymmetric_fwd(Tensor input, Tensor target, float gamma_pos, float gamma_neg, float clip, float eps, "
      "bool detach_modulation, int reduction, int ignore_index, Tensor? normalizer, bool compute_grad, "
      "Tensor? weight=None, int weight_mode=0) -> (Tensor, Tensor, Tensor)",
      tags);
  // The backward of every forward op: grad * grad_output (broadcast over dim 1 when class_dim_reduced: the softmax
  // 'none' loss) * grad_scale, in opmath. focal_bwd_ writes it over grad (one gradient buffer).
  m.def("focal_bwd(Tensor grad, Tensor grad_output, Tensor grad_scale, int reduction, bool class_dim_reduced) -> Tensor",
        tags);
  m.def(
      "focal_bwd_(Tensor(a!) grad, Tensor grad_output, Tensor grad_scale, int reduction, bool class_dim_reduced) -> ()",
      tags);
}
