"""Property-based tests: focal_cuda equals the float64 reference (focal_cuda.reference) on random valid input.

Hypothesis draws shapes, dtypes, gamma (the fast paths 0, 1, 2, 3 often, 0 < gamma < 1 included), alpha forms,
ignore masks, label smoothing, reductions, normalizers, non-contiguous layouts and saturated logits; every example
checks the loss and the gradient (under a random grad_output) against the reference evaluated on the same values in
float64, with the tolerance table of conftest.py, and some also the forward-only kernel path (no gradient buffer).

Sizes are drawn by class, not by dimension, so that the hard regions are reached often: empty inputs are a small
minority (about 3 %), class counts come from the vector-width list 1, 2, 7, 8, 16, 17, 80, 129, 1000 as well as
from 1..40, and about a tenth of the inputs span several 8192-element reduction blocks (or 256-position spatial
units). `pytest tests/test_fuzz.py --hypothesis-show-statistics` prints the share of each (hypothesis events).

Profiles (registered in conftest.py, chosen by HYPOTHESIS_PROFILE): "ci" (default, derandomized) and "dev" (10x
more, random). Reproduce a failure from the printed blob with @reproduce_failure, or rerun the same profile: "ci"
draws the same examples every run.
"""

import math

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import event, given, note, reject, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import focal_cuda  # noqa: E402
from conftest import assert_close, to_ground_truth  # noqa: E402
from focal_cuda import reference  # noqa: E402

DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
# The largest finite logit magnitude drawn per dtype: beyond it the true loss (about |x| per element, summed
# over <= 200 elements) no longer fits the output dtype, and inf would be the correct rounded answer.
MAX_LOGIT = {torch.float64: 1e30, torch.float32: 1e30, torch.bfloat16: 1e30, torch.float16: 250.0}
EXTREME_LOGITS = [0.0, 15.0, 20.0, 30.0, 88.0, 100.0, 250.0, 1e4, 1e30]
CLASS_COUNTS = [1, 2, 7, 8, 16, 17, 80, 129, 1000]
BLOCK = 8192  # elements per CPU reduction block (csrc/cpu kBlock)
SPATIAL_CHUNK = 256  # spatial positions per spatial-softmax work unit

# No subnormal parameters: the float64 reference's own gradient is NaN for a label smoothing of 1e-311 (its
# (1 - p_t)**gamma of a subnormal base), so it is no ground truth there; focal_cuda is finite.
gammas = st.one_of(
    st.sampled_from([0.0, 1.0, 2.0, 3.0, 0.5, 2.5]),  # the fast paths of dispatch_gamma, and pow below/above 1
    st.floats(min_value=0.0, max_value=1.0, exclude_min=True, exclude_max=True,  # the fractional-power edge
              allow_subnormal=False),
    st.floats(min_value=0.0, max_value=6.0, allow_subnormal=False),
)
reductions = st.sampled_from(["none", "mean", "sum"])
label_smoothings = st.one_of(st.just(0.0), st.sampled_from([1.0]),
                             st.floats(min_value=0.0, max_value=1.0, allow_subnormal=False))
unit_floats = st.floats(min_value=0.0, max_value=1.0, allow_subnormal=False)


def random_logits(draw, shape, dtype, generator):
    """Gaussian logits at a drawn scale; a drawn share of the entries (none, a few, a tenth, half) saturated at
    drawn extreme magnitudes and signs, written at random positions."""
    scale = draw(st.sampled_from([0.1, 1.0, 5.0, 20.0]), label="logit scale")
    logits = torch.randn(shape, dtype=torch.float64, generator=generator) * scale
    if logits.numel() > 0:
        limit = MAX_LOGIT[dtype]
        magnitude = draw(st.sampled_from([v for v in EXTREME_LOGITS if v <= limit]), label="extreme magnitude")
        share = draw(st.sampled_from([0.0, 0.02, 0.1, 0.5]), label="saturated share")
        flat = logits.view(-1)
        chosen = torch.rand(flat.shape, generator=generator) < share
        if share > 0:
            chosen[torch.randint(0, flat.numel(), (1,), generator=generator)] = True  # at least one
        signs = torch.where(torch.rand(flat.shape, generator=generator) < 0.5, -1.0, 1.0).to(torch.float64)
        flat[chosen] = (signs * magnitude)[chosen]
        if share > 0 and magnitude >= 20:
            event("saturated logits (|x| >= 20)")
    return logits.to(dtype)


# Size classes by weight (of 100). Hypothesis leans towards the first entries and the bounds of a draw, so
# "empty" sits in the middle (at the front it made a third of the inputs empty).
SIZE_TABLE = ["small"] * 30 + ["medium"] * 15 + ["empty"] * 3 + ["multi-block"] * 12 + ["medium"] * 15 + \
    ["small"] * 25


def size_class(draw, generator):
    """empty (a few %), small, medium or several reduction blocks (about a tenth)."""
    kind = draw(st.sampled_from(SIZE_TABLE), label="size class")
    event(f"size: {kind}")
    return kind


def class_count(draw):
    num_classes = draw(st.one_of(st.sampled_from(CLASS_COUNTS), st.integers(1, 40)), label="C")
    bucket = "1" if num_classes == 1 else "2-7" if num_classes < 8 else "8-16" if num_classes <= 16 else \
        "17-129" if num_classes <= 129 else "1000"
    event(f"C in {bucket}")
    if num_classes % 8 == 0:
        event("C a multiple of 8")
    return num_classes


def rows_for(draw, kind, num_classes, generator):
    """The number of rows of num_classes elements for a size class (0 only when empty)."""
    if kind == "empty":
        return 0
    if kind == "multi-block":
        return (2 * BLOCK) // num_classes + 1 + int(torch.randint(0, BLOCK // num_classes + 1, (), generator=generator))
    budget = 40 if kind == "small" else 1500
    return 1 + int(torch.randint(0, max(1, budget // num_classes), (), generator=generator))


def note_gamma(gamma):
    event(f"gamma {gamma:g}" if gamma in (0.0, 1.0, 2.0, 3.0) else "gamma in (0, 1)" if gamma < 1 else "gamma other")


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


def compare_with_reference(function, reference_function, input, target, kwargs, seed, forward_only,
                           grad_mask=None):
    """Loss and gradient (under a seeded random grad_output) of focal_cuda in input's dtype equal the reference on
    the same values in float64; with forward_only also the loss of a call under no_grad (the kernel path that
    writes no gradient). grad_mask: where gradients are compared."""
    dtype = input.dtype
    if input.numel() > 2 * BLOCK:
        event("spans several reduction blocks")
    truth_leaf = to_ground_truth(input).requires_grad_(True)
    expected = reference_function(truth_leaf, to_ground_truth(target), **{k: ground_truth_argument(v)
                                                                          for k, v in kwargs.items()})
    if expected.numel() and expected.detach().abs().max() > torch.finfo(dtype).max / 2:
        reject()  # the true loss does not fit the output dtype: inf would be the correctly rounded answer
    if input.numel() == 0:
        event("empty input")
    if forward_only:
        with torch.no_grad():
            loss = function(input, target, **kwargs)
        assert loss.dtype == dtype
        assert_close(loss, expected, dtype, "loss (forward only)")
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


def dense_shape(draw, kind, generator):
    """A shape of 0 to 3 dims for the elementwise losses, its element count set by the size class."""
    if kind == "empty":
        return draw(st.sampled_from([[0], [0, 5], [3, 0], [2, 0, 4]]), label="empty shape")
    if kind == "multi-block":
        n = 2 * BLOCK + 1 + int(torch.randint(0, 2 * BLOCK, (), generator=generator))
        return draw(st.sampled_from([[n], [n // 17 + 1, 17], [n // 129 + 1, 129], [3, n // 24 + 1, 8]]),
                    label="multi-block shape")
    num_classes = class_count(draw)
    rows = rows_for(draw, kind, num_classes, generator)
    return draw(st.sampled_from([[rows, num_classes], [num_classes], [1, rows, num_classes], []]), label="layout")


@given(data=st.data(), dtype=st.sampled_from(DTYPES), seed=seeds, gamma=gammas, reduction=reductions,
       forward_only=st.booleans())
def test_sigmoid_dense_target_matches_reference(data, dtype, seed, gamma, reduction, forward_only):
    draw = data.draw
    generator = torch.Generator().manual_seed(seed)
    note_gamma(gamma)
    shape = dense_shape(draw, size_class(draw, generator), generator)
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
                           seed, forward_only)


@given(data=st.data(), dtype=st.sampled_from(DTYPES), seed=seeds, gamma=gammas, reduction=reductions,
       forward_only=st.booleans())
def test_sigmoid_class_index_target_matches_reference(data, dtype, seed, gamma, reduction, forward_only):
    draw = data.draw
    generator = torch.Generator().manual_seed(seed)
    note_gamma(gamma)
    kind = size_class(draw, generator)
    num_classes = class_count(draw)
    rows = rows_for(draw, kind, num_classes, generator)
    rows_shape = draw(st.sampled_from([[rows], [1, rows]] + ([[rows // 2, 2]] if rows % 2 == 0 else [])),
                      label="rows shape")
    if kind == "empty" and draw(st.booleans(), label="no classes"):
        rows_shape, num_classes = [3], 0  # zero classes: empty rows
    input = maybe_non_contiguous(draw, random_logits(draw, rows_shape + [num_classes], dtype, generator))
    ignore_index = draw(st.sampled_from([-100, -1, 0, num_classes]), label="ignore_index")
    # classes 0..C-1, background C, and the ignore index, in drawn proportions
    ignore_fraction = draw(st.sampled_from([0.0, 0.3, 1.0]), label="ignored fraction")
    target = torch.randint(0, num_classes + 1, rows_shape, generator=generator)
    ignored = torch.rand(rows_shape, generator=generator) < ignore_fraction
    target = torch.where(ignored, torch.full_like(target, ignore_index), target)
    target = target.to(draw(st.sampled_from([torch.int64, torch.int32, torch.uint8]), label="index dtype")
                       if 0 <= ignore_index and num_classes < 255 else torch.int64)
    kwargs = dict(
        alpha=draw(st.one_of(st.none(), st.just(-1.0), unit_floats), label="alpha"),
        gamma=gamma, reduction=reduction, ignore_index=ignore_index,
        label_smoothing=draw(label_smoothings, label="label_smoothing"),
        normalizer=maybe_normalizer(draw, reduction, dtype),
    )
    note(f"input={input!r}\ntarget={target!r}")
    compare_with_reference(focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, input, target, kwargs,
                           seed, forward_only)


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
       forward_only=st.booleans())
def test_softmax_matches_reference(data, dtype, seed, gamma, reduction, forward_only):
    draw = data.draw
    generator = torch.Generator().manual_seed(seed)
    note_gamma(gamma)
    kind = size_class(draw, generator)
    num_classes = class_count(draw)
    layout = draw(st.sampled_from(["unbatched", "batched", "spatial"]) if kind != "empty" else
                  st.sampled_from(["batched", "spatial"]), label="layout")
    event(f"softmax layout: {layout}")
    if layout == "unbatched":
        input_shape, target_shape = [num_classes], []
    elif layout == "batched":
        batch = rows_for(draw, kind, num_classes, generator)
        input_shape, target_shape = [batch, num_classes], [batch]
    else:
        positions = rows_for(draw, kind, num_classes, generator)
        if kind == "multi-block":
            positions = max(positions, 2 * SPATIAL_CHUNK + 1)
        batch = draw(st.integers(1, 3), label="N") if kind != "empty" else draw(st.integers(0, 2), label="N")
        if kind == "empty" and batch > 0:
            positions = 0
        if positions > 2 * SPATIAL_CHUNK:
            event("spans several reduction blocks")
        spatial = draw(st.sampled_from([[positions], [1, positions]] +
                                       ([[positions // 3, 3]] if positions % 3 == 0 else [])), label="spatial")
        input_shape, target_shape = [batch, num_classes] + spatial, [batch] + spatial
    input = maybe_non_contiguous(draw, random_logits(draw, input_shape, dtype, generator))
    ignore_index = draw(st.sampled_from([-100, -1, 0, num_classes - 1]), label="ignore_index")
    ignore_fraction = draw(st.sampled_from([0.0, 0.3, 1.0]), label="ignored fraction")
    target = torch.randint(0, num_classes, target_shape, generator=generator)
    ignored = torch.rand(target_shape, generator=generator) < ignore_fraction
    target = torch.where(ignored, torch.full_like(target, ignore_index), target)
    if ignore_index >= 0 and num_classes < 255:
        target = target.to(draw(st.sampled_from([torch.int64, torch.int32, torch.uint8]), label="index dtype"))
    kwargs = dict(
        alpha=softmax_alpha(draw, num_classes, dtype), gamma=gamma, reduction=reduction, ignore_index=ignore_index,
        label_smoothing=draw(label_smoothings, label="label_smoothing"),
        normalizer=maybe_normalizer(draw, reduction, dtype),
    )
    note(f"input={input!r}\ntarget={target!r}")
    compare_with_reference(focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, input, target, kwargs,
                           seed, forward_only)


# Probabilities closer to 0 or 1 than this have a gradient (about 1/p) beyond float16's range (65504), so inf
# would be the correctly rounded gradient there.
MIN_PROB_MARGIN = {torch.float64: 1e-30, torch.float32: 1e-30, torch.bfloat16: 1e-30, torch.float16: 2e-4}


@given(data=st.data(), dtype=st.sampled_from(DTYPES), seed=seeds, gamma=gammas, reduction=reductions,
       forward_only=st.booleans())
def test_binary_matches_reference(data, dtype, seed, gamma, reduction, forward_only):
    draw = data.draw
    generator = torch.Generator().manual_seed(seed)
    note_gamma(gamma)
    shape = dense_shape(draw, size_class(draw, generator), generator)
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
                           forward_only, grad_mask=inside)


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
