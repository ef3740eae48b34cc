"""Property-based tests: focal_cuda equals the float64 reference (focal_cuda.reference) on random valid input.

Hypothesis draws shapes, dtypes, gamma (0 < gamma < 1 included), alpha forms, ignore masks, label smoothing,
reductions, normalizers, non-contiguous layouts and extreme logits; each example checks the loss and the
gradient (under a random grad_output) against the reference evaluated on the same values in float64, with
the tolerance table of conftest.py. Examples with requires_grad=False check the forward-only kernel path.

Profiles (registered in conftest.py, chosen by HYPOTHESIS_PROFILE): "ci" (default, derandomized, 4 x 550
examples) and "dev" (10x more, random). Reproduce a failure from the printed blob with
@reproduce_failure, or rerun the same profile: "ci" draws the same examples every run.
"""

import math

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, note, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import focal_cuda  # noqa: E402
from conftest import assert_close, to_ground_truth  # noqa: E402
from focal_cuda import reference  # noqa: E402

DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
# The largest finite logit magnitude drawn per dtype: beyond it the true loss (about |x| per element, summed
# over <= 200 elements) no longer fits the output dtype, and inf would be the correct rounded answer.
MAX_LOGIT = {torch.float64: 1e30, torch.float32: 1e30, torch.bfloat16: 1e30, torch.float16: 250.0}
EXTREME_LOGITS = [0.0, 15.0, 30.0, 88.0, 100.0, 250.0, 1e4, 1e30]

# No subnormal parameters: the float64 reference's own gradient is NaN for a label smoothing of 1e-311 (its
# (1 - p_t)**gamma of a subnormal base), so it is no ground truth there; focal_cuda is finite.
gammas = st.one_of(
    st.sampled_from([0.0, 0.5, 1.0, 2.0]),
    st.floats(min_value=0.0, max_value=1.0, exclude_min=True, exclude_max=True,  # the fractional-power edge
              allow_subnormal=False),
    st.floats(min_value=0.0, max_value=6.0, allow_subnormal=False),
)
reductions = st.sampled_from(["none", "mean", "sum"])
label_smoothings = st.one_of(st.just(0.0), st.sampled_from([1.0]),
                             st.floats(min_value=0.0, max_value=1.0, allow_subnormal=False))
unit_floats = st.floats(min_value=0.0, max_value=1.0, allow_subnormal=False)


def random_logits(draw, shape, dtype, generator):
    """Gaussian logits at a drawn scale, with a few drawn extreme values written at drawn positions."""
    scale = draw(st.sampled_from([0.1, 1.0, 5.0, 20.0]), label="logit scale")
    logits = torch.randn(shape, dtype=torch.float64, generator=generator) * scale
    if logits.numel() > 0:
        limit = MAX_LOGIT[dtype]
        extremes = st.sampled_from([v for v in EXTREME_LOGITS if v <= limit])
        flat = logits.view(-1)
        for _ in range(draw(st.integers(0, 4), label="extreme count")):
            position = draw(st.integers(0, flat.numel() - 1), label="extreme position")
            flat[position] = draw(extremes) * draw(st.sampled_from([1.0, -1.0]))
    return logits.to(dtype)


def maybe_non_contiguous(draw, tensor):
    """The same values as a strided view (every other element along a drawn dim) half of the time."""
    if tensor.dim() == 0 or not draw(st.booleans(), label="non-contiguous"):
        return tensor
    dim = draw(st.integers(0, tensor.dim() - 1), label="strided dim")
    wide_shape = list(tensor.shape)
    wide_shape[dim] *= 2
    wide = torch.full(wide_shape, float("nan"), dtype=tensor.dtype)  # NaN padding: a wrong stride shows up
    index = [slice(None)] * tensor.dim()
    index[dim] = slice(None, None, 2)
    wide[tuple(index)] = tensor
    view = wide[tuple(index)]
    assert torch.equal(view, tensor)
    return view


def maybe_normalizer(draw, reduction, dtype):
    """None, a float, or a 0-dim tensor (float or integer), only for "mean" (the one reduction it affects)."""
    if reduction != "mean":
        return None
    kind = draw(st.sampled_from(["none", "float", "tensor", "integer tensor"]), label="normalizer kind")
    if kind == "none":
        return None
    if kind == "integer tensor":
        return torch.tensor(draw(st.integers(1, 1000)))
    value = draw(st.floats(min_value=0.5, max_value=1000.0))
    if kind == "float":
        return value
    return torch.tensor(value, dtype=torch.float64 if dtype == torch.float64 else torch.float32)


def ground_truth_argument(value):
    """to_ground_truth, and a list/tuple of weights as a float64 tensor: reference.py's torch.as_tensor would
    round a Python list to float32 (the default dtype), which is not ground truth for a float64 input."""
    if isinstance(value, (list, tuple)):
        return torch.tensor(value, dtype=torch.float64)
    return to_ground_truth(value)


def compare_with_reference(function, reference_function, input, target, kwargs, seed, requires_grad,
                           grad_mask=None):
    """Loss (and, with requires_grad, gradient under a seeded random grad_output) of focal_cuda in input's
    dtype equal the reference on the same values in float64. grad_mask: where gradients are compared."""
    dtype = input.dtype
    truth_leaf = to_ground_truth(input).requires_grad_(True)
    expected = reference_function(truth_leaf, to_ground_truth(target), **{k: ground_truth_argument(v)
                                                                          for k, v in kwargs.items()})
    if not requires_grad:
        with torch.no_grad():
            loss = function(input, target, **kwargs)
        assert loss.dtype == dtype
        assert_close(loss, expected, dtype, "loss (forward only)")
        return
    input_leaf = input.detach().clone().requires_grad_(True)
    loss = function(input_leaf, target, **kwargs)
    assert loss.dtype == dtype, f"loss dtype {loss.dtype} != input dtype {dtype}"
    assert_close(loss, expected, dtype, "loss")

    generator = torch.Generator().manual_seed(seed)
    grad_output = torch.randn(loss.shape, dtype=torch.float64, generator=generator).to(dtype)
    (grad,) = torch.autograd.grad(loss, input_leaf, grad_output)
    (expected_grad,) = torch.autograd.grad(expected, truth_leaf, grad_output.to(torch.float64))
    assert grad.dtype == dtype and grad.shape == input.shape
    if grad_mask is not None:
        grad, expected_grad = grad[grad_mask], expected_grad[grad_mask]
    assert torch.isfinite(grad).all(), "non-finite gradient on finite input"
    assert_close(grad, expected_grad, dtype, "gradient")


seeds = st.integers(0, 2**32 - 1)


@given(data=st.data(), dtype=st.sampled_from(DTYPES), seed=seeds, gamma=gammas, reduction=reductions,
       requires_grad=st.booleans())
def test_sigmoid_dense_target_matches_reference(data, dtype, seed, gamma, reduction, requires_grad):
    draw = data.draw
    generator = torch.Generator().manual_seed(seed)
    shape = draw(st.lists(st.integers(0, 4), min_size=0, max_size=3), label="shape")
    input = maybe_non_contiguous(draw, random_logits(draw, shape, dtype, generator))
    target_kind = draw(st.sampled_from(["hard", "soft"]), label="target kind")
    target = torch.rand(shape, dtype=torch.float64, generator=generator)
    target = (target < 0.5).to(dtype) if target_kind == "hard" else target.to(dtype)
    target = maybe_non_contiguous(draw, target)
    kwargs = dict(
        alpha=draw(st.one_of(st.none(), st.just(-1.0), unit_floats), label="alpha"),
        gamma=gamma, reduction=reduction,
        label_smoothing=draw(label_smoothings, label="label_smoothing"),
        normalizer=maybe_normalizer(draw, reduction, dtype),
    )
    note(f"input={input!r}\ntarget={target!r}")
    compare_with_reference(focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, input, target, kwargs,
                           seed, requires_grad)


@given(data=st.data(), dtype=st.sampled_from(DTYPES), seed=seeds, gamma=gammas, reduction=reductions,
       requires_grad=st.booleans())
def test_sigmoid_class_index_target_matches_reference(data, dtype, seed, gamma, reduction, requires_grad):
    draw = data.draw
    generator = torch.Generator().manual_seed(seed)
    rows_shape = draw(st.lists(st.integers(0, 4), min_size=0, max_size=2), label="rows shape")
    num_classes = draw(st.integers(0, 6), label="C")
    input = maybe_non_contiguous(draw, random_logits(draw, rows_shape + [num_classes], dtype, generator))
    ignore_index = draw(st.sampled_from([-100, -1, 0, num_classes]), label="ignore_index")
    # classes 0..C-1, background C, and the ignore index, in drawn proportions
    ignore_fraction = draw(st.sampled_from([0.0, 0.3, 1.0]), label="ignored fraction")
    target = torch.randint(0, num_classes + 1, rows_shape, generator=generator)
    ignored = torch.rand(rows_shape, generator=generator) < ignore_fraction
    target = torch.where(ignored, torch.full_like(target, ignore_index), target)
    target = target.to(draw(st.sampled_from([torch.int64, torch.int32, torch.uint8]), label="index dtype")
                       if ignore_index >= 0 else torch.int64)
    kwargs = dict(
        alpha=draw(st.one_of(st.none(), st.just(-1.0), unit_floats), label="alpha"),
        gamma=gamma, reduction=reduction, ignore_index=ignore_index,
        label_smoothing=draw(label_smoothings, label="label_smoothing"),
        normalizer=maybe_normalizer(draw, reduction, dtype),
    )
    note(f"input={input!r}\ntarget={target!r}")
    compare_with_reference(focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, input, target, kwargs,
                           seed, requires_grad)


def softmax_alpha(draw, num_classes, dtype):
    """Every accepted alpha form: None, a number, a list, a tuple, a (C,) or (C, 1) tensor."""
    kind = draw(st.sampled_from(["none", "float", "list", "tuple", "tensor", "column tensor"]), label="alpha kind")
    if kind == "none":
        return None
    if kind == "float":
        return draw(st.floats(min_value=0.0, max_value=2.0))
    values = draw(st.lists(st.floats(min_value=0.0, max_value=2.0), min_size=num_classes, max_size=num_classes))
    if kind == "list":
        return values
    if kind == "tuple":
        return tuple(values)
    weights = torch.tensor(values, dtype=draw(st.sampled_from([torch.float32, torch.float64])))
    return weights.reshape(num_classes, 1) if kind == "column tensor" else weights


@given(data=st.data(), dtype=st.sampled_from(DTYPES), seed=seeds, gamma=gammas, reduction=reductions,
       requires_grad=st.booleans())
def test_softmax_matches_reference(data, dtype, seed, gamma, reduction, requires_grad):
    draw = data.draw
    generator = torch.Generator().manual_seed(seed)
    num_classes = draw(st.integers(1, 6), label="C")
    layout = draw(st.sampled_from(["unbatched", "batched", "spatial"]), label="layout")
    if layout == "unbatched":
        input_shape, target_shape = [num_classes], []
    else:
        batch = draw(st.integers(0, 5), label="N")
        spatial = draw(st.lists(st.integers(0, 3), min_size=1, max_size=2), label="spatial") \
            if layout == "spatial" else []
        input_shape, target_shape = [batch, num_classes] + spatial, [batch] + spatial
    input = maybe_non_contiguous(draw, random_logits(draw, input_shape, dtype, generator))
    ignore_index = draw(st.sampled_from([-100, -1, 0, num_classes - 1]), label="ignore_index")
    ignore_fraction = draw(st.sampled_from([0.0, 0.3, 1.0]), label="ignored fraction")
    target = torch.randint(0, num_classes, target_shape, generator=generator)
    ignored = torch.rand(target_shape, generator=generator) < ignore_fraction
    target = torch.where(ignored, torch.full_like(target, ignore_index), target)
    if ignore_index >= 0:
        target = target.to(draw(st.sampled_from([torch.int64, torch.int32, torch.uint8]), label="index dtype"))
    kwargs = dict(
        alpha=softmax_alpha(draw, num_classes, dtype), gamma=gamma, reduction=reduction, ignore_index=ignore_index,
        label_smoothing=draw(label_smoothings, label="label_smoothing"),
        normalizer=maybe_normalizer(draw, reduction, dtype),
    )
    note(f"input={input!r}\ntarget={target!r}")
    compare_with_reference(focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, input, target, kwargs,
                           seed, requires_grad)


# Probabilities closer to 0 or 1 than this have a gradient (about 1/p) beyond float16's range (65504), so inf
# would be the correctly rounded gradient there.
MIN_PROB_MARGIN = {torch.float64: 1e-30, torch.float32: 1e-30, torch.bfloat16: 1e-30, torch.float16: 2e-4}


@given(data=st.data(), dtype=st.sampled_from(DTYPES), seed=seeds, gamma=gammas, reduction=reductions,
       requires_grad=st.booleans())
def test_binary_matches_reference(data, dtype, seed, gamma, reduction, requires_grad):
    draw = data.draw
    generator = torch.Generator().manual_seed(seed)
    shape = draw(st.lists(st.integers(0, 4), min_size=0, max_size=3), label="shape")
    logits = random_logits(draw, shape, torch.float64, generator).clamp(-80.0, 80.0)
    margin = MIN_PROB_MARGIN[dtype]
    prob = torch.sigmoid(logits).clamp(margin, 1 - margin)
    if prob.numel() > 0 and draw(st.booleans(), label="exact 0 or 1"):
        # saturated probabilities as a sigmoid in low precision gives them: logs clamp at -100 (BCELoss)
        flat = prob.view(-1)
        flat[draw(st.integers(0, flat.numel() - 1))] = draw(st.sampled_from([0.0, 1.0]))
    prob = maybe_non_contiguous(draw, prob.to(dtype))
    target = torch.rand(shape, dtype=torch.float64, generator=generator)
    target = (target < 0.5).to(dtype) if draw(st.booleans(), label="hard target") else target.to(dtype)
    kwargs = dict(alpha=draw(st.one_of(st.none(), st.just(-1.0), unit_floats), label="alpha"), gamma=gamma,
                  reduction=reduction)
    note(f"prob={prob!r}\ntarget={target!r}")
    # Gradients follow torch.nn.BCELoss's convention d(ce)/dp = (p - t) / max(p (1 - p), 1e-12) (focal_math.h),
    # the reference the exact derivative: they agree, and are compared, where p (1 - p) is clearly above 1e-12.
    exact_p = prob.to(torch.float64)
    inside = exact_p * (1 - exact_p) > 2e-12
    compare_with_reference(focal_cuda.binary_focal_loss, reference.binary_focal_loss, prob, target, kwargs, seed,
                           requires_grad, grad_mask=inside)


def test_ci_profile_runs_at_least_2000_examples():
    """The CI profile's budget: 4 property tests x max_examples >= 2000 (the issue's floor)."""
    property_tests = [test_sigmoid_dense_target_matches_reference, test_sigmoid_class_index_target_matches_reference,
                      test_softmax_matches_reference, test_binary_matches_reference]
    ci = settings.get_profile("ci")
    assert len(property_tests) * ci.max_examples >= 2000
    assert ci.derandomize and ci.deadline is None
    assert math.isfinite(ci.max_examples)


def test_binary_tiny_probability_regression():
    """Found by the dev profile: for p << 2**-24 and t = 0, log(1 - p) in float32 rounds 1 - p to 1 - 2**-24
    or to 1, so the cross-entropy term -log(1 - p) ~ p (and the gradient through it) is 12%-100% off;
    log1p(-p) keeps it exact. Falsifying example: float32, gamma = 0.5, p = [6.79e-8, 3.0e-9], t = 0."""
    prob = torch.tensor([6.7908e-08, 3.0057e-09, 1.0e-12, 1.4399e-05], dtype=torch.float32)
    target = torch.tensor([0.0, 0.0, 0.0, 1.0])
    for gamma in [0.0, 0.5, 2.0]:
        leaf = prob.clone().requires_grad_(True)
        loss = focal_cuda.binary_focal_loss(leaf, target, alpha=None, gamma=gamma, reduction="none")
        (grad,) = torch.autograd.grad(loss.sum(), leaf)
        truth = prob.to(torch.float64).requires_grad_(True)
        expected = reference.binary_focal_loss(truth, target.double(), alpha=None, gamma=gamma, reduction="none")
        (expected_grad,) = torch.autograd.grad(expected.sum(), truth)
        # relative, without the absolute floor: these values are all far below atol
        torch.testing.assert_close(loss.double(), expected.detach(), rtol=1e-4, atol=0)
        torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-4, atol=0)
