"""Grids over the regions where the kernels branch: every loss against the float64 reference.

Each test states one behaviour: the loss (every reduction) and its gradient under a random grad_output equal
focal_cuda.reference on the same values, within the tolerance table of conftest.py, for
- class counts 1, 2, 7, 8, 16, 17, 80, 129, 1000: below, at and past the 8 (AVX2 float) and 16-lane vector
  widths, and long rows (C = 1000 spans many vectors and a short tail);
- gamma 0, 1, 2, 3 (the unrolled fast paths of focal_math.h's dispatch_gamma) and 0.5, 2.5 (the pow path,
  below and above 1);
- inputs spanning several reduction blocks (csrc/cpu: 8192 elements per block; 256 spatial positions per
  spatial softmax unit) with a partial last block;
- saturated logits +-20, +-100, +-1e4, where p_t rounds to 0 or 1 and softmax rows carry a huge max;
- ignored rows (with an ignore_index that is a real class id, so "ignore" is not confused with "negative"),
  both sigmoid target forms (dense soft/hard, class index with C = background), label smoothing, alpha forms.

Every test takes the `backend` fixture (conftest.py): "cpu" runs the CPU kernels, "emulated_cuda" the CUDA
kernels through focal_cuda.testing.emulated_cuda() (skipped with the reason while that does not exist).
"""

import pytest
import torch

import focal_cuda
from focal_cuda import reference
from conftest import assert_close, reductions, to_ground_truth

CLASS_COUNTS = [1, 2, 7, 8, 16, 17, 80, 129, 1000]
GRID_GAMMAS = [0.0, 1.0, 2.0, 3.0, 0.5, 2.5]
SATURATION = [20.0, 100.0, 1e4]
# Elements per reduction block of the CPU kernels (csrc/cpu kBlock); inputs here span at least 3 of them.
BLOCK = 8192
SPATIAL_CHUNK = 256


def expect_matches_reference(function, reference_function, input, target, grad_mask=None, **kwargs):
    """Loss and gradient (random grad_output) of `function` in input's dtype equal the float64 reference on the
    same values. grad_mask: where gradients are compared (all elements when None)."""
    dtype = input.dtype
    leaf = input.detach().clone().requires_grad_(True)
    loss = function(leaf, target, **kwargs)
    truth_leaf = to_ground_truth(input).requires_grad_(True)
    expected = reference_function(truth_leaf, to_ground_truth(target),
                                  **{k: to_ground_truth(v) for k, v in kwargs.items()})
    context = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if not isinstance(v, torch.Tensor))
    assert loss.dtype == dtype, f"{context}: loss dtype {loss.dtype}"
    assert_close(loss, expected, dtype, f"loss [{context}]")
    grad_output = torch.randn(loss.shape, dtype=torch.float64).to(dtype)
    (grad,) = torch.autograd.grad(loss, leaf, grad_output)
    (expected_grad,) = torch.autograd.grad(expected, truth_leaf, grad_output.to(torch.float64))
    assert grad.shape == input.shape and grad.dtype == dtype
    if grad_mask is not None:
        grad, expected_grad = grad[grad_mask], expected_grad[grad_mask]
    assert torch.isfinite(grad).all(), f"{context}: non-finite gradient on finite input"
    assert_close(grad, expected_grad, dtype, f"gradient [{context}]")


def rows_for(num_classes):
    """Enough rows for a few hundred elements, never a multiple of a vector width."""
    return 3 + 257 // num_classes


def ignore_index_for(num_classes):
    """A real class id when there is one (a count that skips 'negative' rows, or only -100, is caught)."""
    return 1 if num_classes > 1 else -1


def soft_and_hard_targets(shape, dtype):
    hard = (torch.rand(shape) < 0.3).to(torch.float64)
    return torch.where(torch.rand(shape) < 0.5, torch.rand(shape, dtype=torch.float64), hard).to(dtype)


def class_index_targets(rows_shape, num_classes, ignore_index, background=True):
    """Class ids (0..C-1, and C = background when `background`), a quarter of the rows ignored; the last row is
    never ignored (a traversal that drops it must show)."""
    target = torch.randint(0, num_classes + (1 if background else 0), rows_shape)
    ignored = torch.rand(rows_shape) < 0.25
    ignored.view(-1)[-1:] = False
    return torch.where(ignored, torch.full_like(target, ignore_index), target)


def saturated(shape, magnitude, dtype):
    """+-magnitude with small noise: sigmoid rounds to 0/1; a softmax row's max is huge and ties at the top
    keep some log p moderate (where x - (max + lse) would lose them)."""
    signs = torch.where(torch.rand(shape) < 0.5, -1.0, 1.0).to(torch.float64)
    noise = torch.randn(shape, dtype=torch.float64) * 0.5
    return (signs * magnitude + noise).to(dtype)


# ---- sigmoid_focal_loss ------------------------------------------------------------------------------------

@pytest.mark.parametrize("gamma", GRID_GAMMAS)
@pytest.mark.parametrize("num_classes", CLASS_COUNTS)
def test_sigmoid_dense_target_every_class_count_and_gamma(backend, num_classes, gamma):
    input = torch.randn(rows_for(num_classes), num_classes) * 4
    target = soft_and_hard_targets(input.shape, torch.float32)
    for reduction in reductions:
        expect_matches_reference(focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, input, target,
                                 alpha=0.25, gamma=gamma, reduction=reduction)


@pytest.mark.parametrize("gamma", GRID_GAMMAS)
@pytest.mark.parametrize("num_classes", CLASS_COUNTS)
def test_sigmoid_class_index_target_every_class_count_and_gamma(backend, num_classes, gamma):
    input = torch.randn(rows_for(num_classes), num_classes) * 4
    ignore_index = ignore_index_for(num_classes)
    target = class_index_targets(input.shape[:-1], num_classes, ignore_index)
    for reduction in reductions:
        expect_matches_reference(focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, input, target,
                                 alpha=0.25, gamma=gamma, reduction=reduction, ignore_index=ignore_index)


@pytest.mark.parametrize("label_smoothing", [0.1, 0.6, 1.0])
@pytest.mark.parametrize("form", ["dense", "index"])
@pytest.mark.parametrize("num_classes", [1, 7, 17, 129])
def test_sigmoid_label_smoothing_moves_targets_towards_one_half(backend, num_classes, form, label_smoothing):
    input = torch.randn(rows_for(num_classes), num_classes) * 4
    if form == "dense":
        target, extra = soft_and_hard_targets(input.shape, torch.float32), {}
    else:
        target, extra = class_index_targets(input.shape[:-1], num_classes, -1), dict(ignore_index=-1)
    for gamma in [2.0, 2.5]:
        for reduction in reductions:
            expect_matches_reference(focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, input, target,
                                     alpha=0.25, gamma=gamma, reduction=reduction, label_smoothing=label_smoothing,
                                     **extra)


@pytest.mark.parametrize("alpha", [None, -1.0, 0.0, 0.25, 0.8, 1.0])
@pytest.mark.parametrize("form", ["dense", "index"])
def test_sigmoid_alpha_weights_positives_and_negatives(backend, form, alpha):
    input = torch.randn(21, 17) * 4
    if form == "dense":
        target, extra = soft_and_hard_targets(input.shape, torch.float32), {}
    else:
        target, extra = class_index_targets(input.shape[:-1], 17, 3), dict(ignore_index=3)
    for gamma in [0.0, 2.0, 3.0]:
        for reduction in reductions:
            expect_matches_reference(focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, input, target,
                                     alpha=alpha, gamma=gamma, reduction=reduction, **extra)


@pytest.mark.parametrize("gamma", GRID_GAMMAS)
@pytest.mark.parametrize("magnitude", SATURATION)
@pytest.mark.parametrize("form", ["dense", "index"])
def test_sigmoid_saturated_logits(backend, form, magnitude, gamma):
    input = saturated((13, 17), magnitude, torch.float32)
    if form == "dense":
        # hard targets (p_t exactly 0 or 1) and soft ones (the BCE term must not cancel at large |x|)
        target, extra = soft_and_hard_targets(input.shape, torch.float32), {}
    else:
        target, extra = class_index_targets(input.shape[:-1], 17, 5), dict(ignore_index=5)
    for reduction in reductions:
        expect_matches_reference(focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, input, target,
                                 alpha=0.25, gamma=gamma, reduction=reduction, **extra)


@pytest.mark.parametrize("gamma", GRID_GAMMAS)
@pytest.mark.parametrize("magnitude", SATURATION)
def test_sigmoid_soft_targets_near_1_at_saturated_logits_keep_their_digits(backend, magnitude, gamma):
    """docs/design.md section 2: BCE on logits without cancellation. For t = 1 - k 2**-13 and x ~ +1e4 the loss is
    x (1 - t) ~ 1.2 k, which max(x, 0) - t x would get wrong by up to half an ulp of x (5e-4): a few elements of
    every such input then miss the table's float32 tolerance."""
    input = (magnitude + torch.randn(13, 17, dtype=torch.float64) * 0.5).abs().to(torch.float32)
    target = (1 - torch.randint(1, 3, (13, 17)).to(torch.float64) * 2.0**-13).to(torch.float32)
    for reduction in reductions:
        expect_matches_reference(focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, input, target,
                                 alpha=0.25, gamma=gamma, reduction=reduction)


@pytest.mark.parametrize("gamma", GRID_GAMMAS)
@pytest.mark.parametrize("form", ["dense", "index"])
def test_sigmoid_input_spanning_several_blocks(backend, form, gamma):
    if form == "dense":
        input = torch.randn(3 * BLOCK + 29) * 4  # 1-D: blocks cut anywhere, partial last block
        target, extra = soft_and_hard_targets(input.shape, torch.float32), {}
    else:
        rows = 3 * (BLOCK // 7) + 11  # C = 7 does not divide the block: rows straddle block ends
        input = torch.randn(rows, 7) * 4
        target, extra = class_index_targets(input.shape[:-1], 7, 2), dict(ignore_index=2)
    for reduction in reductions:
        expect_matches_reference(focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, input, target,
                                 alpha=0.25, gamma=gamma, reduction=reduction, **extra)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("num_classes", [7, 16, 17, 129])
def test_sigmoid_other_dtypes_on_vector_tails(backend, num_classes, dtype):
    input = (torch.randn(rows_for(num_classes), num_classes) * 4).to(dtype)
    target = soft_and_hard_targets(input.shape, dtype)
    index_target = class_index_targets(input.shape[:-1], num_classes, 1)
    for gamma in [0.5, 3.0]:
        for reduction in reductions:
            expect_matches_reference(focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, input, target,
                                     alpha=0.25, gamma=gamma, reduction=reduction, label_smoothing=0.1)
            expect_matches_reference(focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, input,
                                     index_target, alpha=0.25, gamma=gamma, reduction=reduction, ignore_index=1)


# ---- softmax_focal_loss ------------------------------------------------------------------------------------

def softmax_alpha(form, num_classes):
    weights = (0.2 + 0.8 * torch.rand(num_classes)).to(torch.float64)
    return {"none": None, "float": 0.75, "list": weights.tolist(), "tensor": weights,
            "column tensor": weights.reshape(num_classes, 1)}[form]


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("gamma", GRID_GAMMAS)
@pytest.mark.parametrize("num_classes", CLASS_COUNTS)
def test_softmax_rows_every_class_count_and_gamma(backend, num_classes, gamma, label_smoothing):
    input = torch.randn(rows_for(num_classes), num_classes) * 3
    ignore_index = ignore_index_for(num_classes)
    target = class_index_targets(input.shape[:1], num_classes, ignore_index, background=False)
    for reduction in reductions:
        expect_matches_reference(focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, input, target,
                                 alpha=softmax_alpha("tensor", num_classes), gamma=gamma, reduction=reduction,
                                 ignore_index=ignore_index, label_smoothing=label_smoothing)


@pytest.mark.parametrize("gamma", GRID_GAMMAS)
@pytest.mark.parametrize("num_classes", [1, 2, 7, 8, 17, 80])
def test_softmax_spatial_every_class_count_and_gamma(backend, num_classes, gamma):
    input = torch.randn(2, num_classes, 5, 7) * 3  # 35 positions: 4 full 8-lane groups and a tail of 3
    ignore_index = ignore_index_for(num_classes)
    target = class_index_targets((2, 5, 7), num_classes, ignore_index, background=False)
    for label_smoothing in [0.0, 0.2]:
        for reduction in reductions:
            expect_matches_reference(focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, input, target,
                                     alpha=softmax_alpha("list", num_classes), gamma=gamma, reduction=reduction,
                                     ignore_index=ignore_index, label_smoothing=label_smoothing)


@pytest.mark.parametrize("alpha_form", ["none", "float", "list", "tensor", "column tensor"])
@pytest.mark.parametrize("layout", ["rows", "spatial", "unbatched"])
def test_softmax_alpha_forms_weight_each_class(backend, layout, alpha_form):
    shape = {"rows": (19, 17), "spatial": (3, 17, 11), "unbatched": (17,)}[layout]
    input = torch.randn(shape) * 3
    target = torch.randint(0, 17, ()) if layout == "unbatched" else \
        class_index_targets(shape[:1] + shape[2:], 17, 4, background=False)
    for gamma in [0.0, 2.0, 3.0]:
        for label_smoothing in [0.0, 0.1]:
            for reduction in reductions:
                expect_matches_reference(focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, input, target,
                                         alpha=softmax_alpha(alpha_form, 17), gamma=gamma, reduction=reduction,
                                         ignore_index=4, label_smoothing=label_smoothing)


@pytest.mark.parametrize("gamma", GRID_GAMMAS)
@pytest.mark.parametrize("magnitude", SATURATION)
@pytest.mark.parametrize("layout", ["rows", "spatial"])
def test_softmax_saturated_logits(backend, layout, magnitude, gamma):
    shape = (13, 17) if layout == "rows" else (2, 17, 13)
    input = saturated(shape, magnitude, torch.float32)
    target = class_index_targets(shape[:1] + shape[2:], 17, 6, background=False)
    for label_smoothing in [0.0, 0.1]:
        for reduction in reductions:
            expect_matches_reference(focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, input, target,
                                     gamma=gamma, reduction=reduction, ignore_index=6,
                                     label_smoothing=label_smoothing)


@pytest.mark.parametrize("gamma", GRID_GAMMAS)
@pytest.mark.parametrize("layout", ["rows", "spatial"])
def test_softmax_input_spanning_several_blocks(backend, layout, gamma):
    if layout == "rows":
        rows = 3 * (BLOCK // 17) + 7  # rows straddle the 8192-element blocks
        input = torch.randn(rows, 17) * 3
        target = class_index_targets((rows,), 17, 2, background=False)
    else:
        positions = 3 * SPATIAL_CHUNK + 13  # several spatial work units per sample, a partial last one
        input = torch.randn(2, 5, positions) * 3
        target = class_index_targets((2, positions), 5, 2, background=False)
    for label_smoothing in [0.0, 0.1]:
        for reduction in reductions:
            expect_matches_reference(focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, input, target,
                                     gamma=gamma, reduction=reduction, ignore_index=2,
                                     label_smoothing=label_smoothing)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("num_classes", [7, 16, 17, 129])
def test_softmax_other_dtypes_on_vector_tails(backend, num_classes, dtype):
    input = (torch.randn(rows_for(num_classes), num_classes) * 3).to(dtype)
    target = class_index_targets(input.shape[:1], num_classes, 1, background=False)
    spatial = (torch.randn(2, num_classes, 11) * 3).to(dtype)
    spatial_target = class_index_targets((2, 11), num_classes, 1, background=False)
    for gamma in [0.5, 3.0]:
        for label_smoothing in [0.0, 0.1]:
            for x, t in [(input, target), (spatial, spatial_target)]:
                expect_matches_reference(focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, x, t,
                                         gamma=gamma, reduction="mean", ignore_index=1,
                                         label_smoothing=label_smoothing)


# ---- binary_focal_loss -------------------------------------------------------------------------------------

def probabilities(shape, dtype, margin=1e-3):
    return (margin + (1 - 2 * margin) * torch.rand(shape, dtype=torch.float64)).to(dtype)


@pytest.mark.parametrize("gamma", GRID_GAMMAS)
@pytest.mark.parametrize("alpha", [None, 0.25, 0.8])
@pytest.mark.parametrize("num_classes", [1, 7, 8, 17, 129])
def test_binary_every_width_alpha_and_gamma(backend, num_classes, alpha, gamma):
    prob = probabilities((rows_for(num_classes), num_classes), torch.float32)
    target = soft_and_hard_targets(prob.shape, torch.float32)
    for reduction in reductions:
        expect_matches_reference(focal_cuda.binary_focal_loss, reference.binary_focal_loss, prob, target,
                                 alpha=alpha, gamma=gamma, reduction=reduction)


@pytest.mark.parametrize("gamma", GRID_GAMMAS)
@pytest.mark.parametrize("magnitude", SATURATION)
def test_binary_saturated_probabilities(backend, magnitude, gamma):
    """sigmoid(+-20) is 2e-9 away from 0/1; +-100 and +-1e4 round to exactly 0 or 1 (the -100 log clamp).
    Gradients are compared where p (1 - p) > 2e-12 (at 0 or 1 the clamp's convention differs from BCELoss's)."""
    prob = torch.sigmoid(saturated((11, 17), magnitude, torch.float64)).to(torch.float32)
    target = (torch.rand(prob.shape) < 0.5).to(torch.float32)
    exact = prob.to(torch.float64)
    inside = exact * (1 - exact) > 2e-12
    for reduction in reductions:
        expect_matches_reference(focal_cuda.binary_focal_loss, reference.binary_focal_loss, prob, target,
                                 grad_mask=inside if reduction == "none" else None if inside.all() else inside,
                                 alpha=0.25, gamma=gamma, reduction=reduction)


@pytest.mark.parametrize("gamma", GRID_GAMMAS)
def test_binary_input_spanning_several_blocks(backend, gamma):
    prob = probabilities((3 * BLOCK + 29,), torch.float32)
    target = soft_and_hard_targets(prob.shape, torch.float32)
    for reduction in reductions:
        expect_matches_reference(focal_cuda.binary_focal_loss, reference.binary_focal_loss, prob, target,
                                 alpha=0.25, gamma=gamma, reduction=reduction)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_binary_other_dtypes_on_vector_tails(backend, dtype):
    prob = probabilities((9, 17), dtype, margin=1e-2)
    target = soft_and_hard_targets(prob.shape, dtype)
    for gamma in [0.5, 3.0]:
        for reduction in reductions:
            expect_matches_reference(focal_cuda.binary_focal_loss, reference.binary_focal_loss, prob, target,
                                     alpha=0.25, gamma=gamma, reduction=reduction)
