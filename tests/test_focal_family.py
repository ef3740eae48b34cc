"""The focal family (docs/design.md §5): per-element / per-row / per-class weight, per-class sigmoid alpha, Poly-1,
Varifocal, Quality Focal and Asymmetric loss, on the CPU kernels and the emulated CUDA kernels (`backend`).

Each loss is compared with focal_cuda.reference (float64, value and gradient under a random grad_output),
with independent facts (special cases that reduce to BCE or to the plain focal loss), and with the formulas
as written in the original repositories (mmdet's varifocal / GFL losses, Alibaba-MIIL's ASL).
"""
import pytest
import torch
import torch.nn.functional as F
from torch.library import opcheck

import focal_cuda
from focal_cuda import reference

from conftest import check_against_reference, floating_dtypes, reductions
from naive_formulas import naive

FAMILY = {
    "varifocal": (focal_cuda.varifocal_loss, reference.varifocal_loss),
    "quality_focal": (focal_cuda.quality_focal_loss, reference.quality_focal_loss),
    "asymmetric": (focal_cuda.asymmetric_loss, reference.asymmetric_loss),
}
SCORED = ("varifocal", "quality_focal")  # the losses that take an IoU score with class-index targets


def logits(shape, dtype=torch.float32, scale=3.0):
    return (torch.randn(shape, dtype=torch.float64) * scale).to(dtype)


def targets(form, shape, dtype):
    """(target, extra kwargs): dense soft targets (a third exactly 0), class indices (C = background, some rows
    ignored), or class indices with a per-row score."""
    C = shape[-1]
    if form == "dense":
        t = torch.rand(shape, dtype=torch.float64)
        t[torch.rand(shape) < 0.34] = 0.0
        return t.to(dtype), {}
    index = torch.randint(0, C + 1, shape[:-1])
    index.view(-1)[::5] = -100
    if form == "index":
        return index, {}
    return index, {"score": torch.rand(shape[:-1], dtype=torch.float64).to(dtype)}


def forms_for(name):
    return ["dense", "index", "index_score"] if name in SCORED else ["dense", "index"]


CASES = [(name, form) for name in FAMILY for form in forms_for(name)]


@pytest.mark.parametrize("reduction", reductions)
@pytest.mark.parametrize("dtype", floating_dtypes)
@pytest.mark.parametrize("name,form", CASES)
def test_matches_reference(backend, name, form, dtype, reduction):
    function, reference_function = FAMILY[name]
    x = logits((13, 7), dtype)
    t, kwargs = targets(form, (13, 7), dtype)
    check_against_reference(function, reference_function, x, t, reduction=reduction, **kwargs)


@pytest.mark.parametrize("C", [1, 8, 17, 80])
@pytest.mark.parametrize("name", sorted(FAMILY))
def test_class_counts_and_multi_block_inputs(backend, name, C):
    function, reference_function = FAMILY[name]
    rows = 20000 // C + 3  # more than one 8192-element block
    x = logits((rows, C))
    t, kwargs = targets("index_score" if name in SCORED else "index", (rows, C), torch.float32)
    check_against_reference(function, reference_function, x, t, reduction="mean", **kwargs)


@pytest.mark.parametrize("exponent", [0.0, 0.5, 1.0, 2.0, 2.5, 3.0])
@pytest.mark.parametrize("name", sorted(FAMILY))
def test_exponents(backend, name, exponent):
    function, reference_function = FAMILY[name]
    x = logits((9, 11))
    t, kwargs = targets("dense", (9, 11), torch.float32)
    kwargs.update({"varifocal": {"gamma": exponent}, "quality_focal": {"beta": exponent},
                   "asymmetric": {"gamma_pos": exponent, "gamma_neg": exponent + 1.0}}[name])
    check_against_reference(function, reference_function, x, t, reduction="sum", **kwargs)


def test_asymmetric_options(backend):
    x = logits((9, 11))
    t, _ = targets("dense", (9, 11), torch.float32)
    for clip in (0.0, 0.05, 0.3):
        for detach in (True, False):
            check_against_reference(focal_cuda.asymmetric_loss, reference.asymmetric_loss, x, t, gamma_pos=1.0,
                                    gamma_neg=4.0, clip=clip, detach_modulation=detach, reduction="mean")


# A clip below eps: p_neg = q + clip reaches eps for q < eps - clip (x above 18.4), where ASL's clamp holds the log at
# log(eps) and its gradient at 0; a clip above eps never lets p_neg get there.
@pytest.mark.parametrize("clip", [1e-9, 1e-6])
def test_asymmetric_clip_against_eps(backend, clip):
    x = torch.cat([logits((64,)), torch.linspace(-10, 30, 61, dtype=torch.float64).float()]).reshape(5, 25)
    t, _ = targets("dense", (5, 25), torch.float32)
    check_against_reference(focal_cuda.asymmetric_loss, reference.asymmetric_loss, x, t, clip=clip, eps=1e-8,
                            reduction="none")


def test_varifocal_iou_weighted_off(backend):
    x = logits((9, 11))
    t, kwargs = targets("index_score", (9, 11), torch.float32)
    check_against_reference(focal_cuda.varifocal_loss, reference.varifocal_loss, x, t, iou_weighted=False,
                            alpha=0.5, reduction="mean", **kwargs)


@pytest.mark.parametrize("normalizer", [3.5, "tensor"])
@pytest.mark.parametrize("name", sorted(FAMILY))
def test_normalizer(backend, name, normalizer):
    function, reference_function = FAMILY[name]
    normalizer = torch.tensor(6.0) if normalizer == "tensor" else normalizer
    x = logits((9, 11))
    t, kwargs = targets("index", (9, 11), torch.float32)
    check_against_reference(function, reference_function, x, t, reduction="mean", normalizer=normalizer, **kwargs)


# ---- weight: per row, per class, broadcast, full; for every elementwise loss and softmax --------------------------

WEIGHT_FORMS = {
    "row": lambda shape: torch.rand(shape[:-1], dtype=torch.float64) + 0.5,
    "class": lambda shape: torch.rand(shape[-1], dtype=torch.float64) + 0.5,
    "row_column": lambda shape: torch.rand(shape[:-1] + (1,), dtype=torch.float64) + 0.5,
    "full": lambda shape: torch.rand(shape, dtype=torch.float64) + 0.5,
    "scalar": lambda shape: torch.tensor(1.7, dtype=torch.float64),
    "middle": lambda shape: torch.rand((shape[0], 1) + shape[2:], dtype=torch.float64) + 0.5,
}
ELEMENTWISE = dict(FAMILY, sigmoid_focal=(focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss))


@pytest.mark.parametrize("form", sorted(WEIGHT_FORMS))
@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_weight_forms(backend, name, form):
    function, reference_function = ELEMENTWISE[name]
    shape = (5, 6, 7)
    x = logits(shape)
    t, kwargs = targets("index", shape, torch.float32)
    weight = WEIGHT_FORMS[form](shape)
    check_against_reference(function, reference_function, x, t, reduction="sum", weight=weight, **kwargs)


@pytest.mark.parametrize("dtype", floating_dtypes)
def test_weight_with_dense_targets_and_mean(backend, dtype):
    x = logits((33, 9), dtype)
    t, _ = targets("dense", (33, 9), dtype)
    for form in ("row", "class", "full"):
        check_against_reference(focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, x, t, reduction="mean",
                                weight=WEIGHT_FORMS[form]((33, 9)))


@pytest.mark.parametrize("reduction", reductions)
def test_binary_focal_weight(backend, reduction):
    p = torch.rand(21, 5, dtype=torch.float64).clamp(0.01, 0.99).float()
    t = (torch.rand(21, 5) > 0.5).float()
    for form in ("row", "class", "full"):
        check_against_reference(focal_cuda.binary_focal_loss, reference.binary_focal_loss, p, t, reduction=reduction,
                                weight=WEIGHT_FORMS[form]((21, 5)))


@pytest.mark.parametrize("shape", [(12, 5), (3, 5, 4), (5,)])
@pytest.mark.parametrize("reduction", reductions)
def test_softmax_weight_per_row(backend, shape, reduction):
    x = logits(shape)
    target_shape = () if len(shape) == 1 else (shape[0],) + shape[2:]
    t = torch.randint(0, shape[0] if len(shape) == 1 else shape[1], target_shape)
    weight = torch.rand(target_shape, dtype=torch.float64) + 0.5
    for smoothing in (0.0, 0.1):
        check_against_reference(focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, x, t,
                                reduction=reduction, weight=weight, label_smoothing=smoothing)


def test_weight_of_ones_changes_nothing(backend):
    x = logits((8, 6)).requires_grad_(True)
    t, _ = targets("index", (8, 6), torch.float32)
    for function in (focal_cuda.sigmoid_focal_loss, focal_cuda.varifocal_loss, focal_cuda.quality_focal_loss,
                     focal_cuda.asymmetric_loss):
        plain = function(x, t, reduction="sum")
        weighted = function(x, t, reduction="sum", weight=torch.ones(8, 6))
        torch.testing.assert_close(weighted, plain, rtol=0, atol=0)
        torch.testing.assert_close(torch.autograd.grad(weighted, x)[0], torch.autograd.grad(plain, x)[0],
                                   rtol=0, atol=0)


def test_weight_is_read_per_row_without_a_full_size_copy(backend):
    # A (N,) weight for (N, C) logits is mmdet's per-anchor weight: row r's weight scales all of row r.
    x = logits((4, 4))  # N == C: per row must win over broadcasting along the last dim
    t, _ = targets("dense", (4, 4), torch.float32)
    w = torch.tensor([0.0, 1.0, 2.0, 3.0])
    loss = focal_cuda.sigmoid_focal_loss(x, t, weight=w)
    plain = focal_cuda.sigmoid_focal_loss(x, t)
    torch.testing.assert_close(loss, plain * w[:, None])


# ---- sigmoid: per-class alpha, Poly-1 --------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["dense", "index"])
@pytest.mark.parametrize("dtype", floating_dtypes)
def test_sigmoid_per_class_alpha(backend, form, dtype):
    x = logits((11, 9), dtype)
    t, _ = targets(form, (11, 9), dtype)
    alpha = torch.rand(9, dtype=torch.float64)
    check_against_reference(focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, x, t, alpha=alpha,
                            reduction="mean")


def test_sigmoid_per_class_alpha_equal_values_is_scalar_alpha(backend):
    x = logits((11, 9)).requires_grad_(True)
    t, _ = targets("index", (11, 9), torch.float32)
    scalar = focal_cuda.sigmoid_focal_loss(x, t, alpha=0.3, reduction="sum")
    per_class = focal_cuda.sigmoid_focal_loss(x, t, alpha=[0.3] * 9, reduction="sum")
    torch.testing.assert_close(per_class, scalar)
    torch.testing.assert_close(torch.autograd.grad(per_class, x)[0], torch.autograd.grad(scalar, x)[0])


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 3.0])
@pytest.mark.parametrize("poly_epsilon", [-1.0, 1.0, 2.5])
def test_poly_sigmoid(backend, gamma, poly_epsilon):
    x = logits((10, 7))
    t, _ = targets("dense", (10, 7), torch.float32)
    check_against_reference(focal_cuda.sigmoid_focal_loss, reference.sigmoid_focal_loss, x, t, gamma=gamma,
                            poly_epsilon=poly_epsilon, reduction="mean")


@pytest.mark.parametrize("shape", [(10, 7), (2, 7, 5), (3, 1100)])
@pytest.mark.parametrize("poly_epsilon", [-1.0, 1.0])
def test_poly_softmax(backend, shape, poly_epsilon):
    x = logits(shape)
    t = torch.randint(0, shape[1], (shape[0],) + shape[2:])
    for smoothing in (0.0, 0.1):
        check_against_reference(focal_cuda.softmax_focal_loss, reference.softmax_focal_loss, x, t,
                                poly_epsilon=poly_epsilon, label_smoothing=smoothing, alpha=[0.5] * shape[1])


def test_poly_epsilon_zero_is_the_focal_loss(backend):
    x = logits((10, 7)).requires_grad_(True)
    t = torch.randint(0, 7, (10,))
    for function in (focal_cuda.sigmoid_focal_loss, focal_cuda.softmax_focal_loss):
        a = function(x, t, reduction="sum")
        b = function(x, t, reduction="sum", poly_epsilon=0.0)
        assert torch.equal(a, b)


def test_poly1_cross_entropy_formula(backend):
    # Poly-1 with gamma = 0 is PolyLoss's CE + eps (1 - p_t) (Leng et al. 2022, eq. 2).
    x = logits((30, 6)).double().requires_grad_(True)
    t = torch.randint(0, 6, (30,))
    loss = focal_cuda.softmax_focal_loss(x, t, gamma=0.0, poly_epsilon=2.0)
    p_t = F.softmax(x, dim=1).gather(1, t[:, None]).squeeze(1)
    expected = (F.cross_entropy(x, t, reduction="none") + 2.0 * (1 - p_t)).mean()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(torch.autograd.grad(loss, x)[0], torch.autograd.grad(expected, x)[0])


# ---- independent facts ----------------------------------------------------------------------------------------

def test_varifocal_with_all_zero_targets_is_alpha_p_gamma_weighted_bce(backend):
    x = logits((12, 5)).double().requires_grad_(True)
    q = torch.zeros(12, 5, dtype=torch.float64)
    loss = focal_cuda.varifocal_loss(x, q, alpha=0.6, gamma=1.5, reduction="sum")
    expected = (0.6 * torch.sigmoid(x) ** 1.5 * F.binary_cross_entropy_with_logits(x, q, reduction="none")).sum()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(torch.autograd.grad(loss, x)[0], torch.autograd.grad(expected, x)[0])


def test_quality_focal_with_beta_zero_is_bce_with_logits(backend):
    x = logits((12, 5)).double().requires_grad_(True)
    y = torch.rand(12, 5, dtype=torch.float64)
    loss = focal_cuda.quality_focal_loss(x, y, beta=0.0)
    expected = F.binary_cross_entropy_with_logits(x, y)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(torch.autograd.grad(loss, x)[0], torch.autograd.grad(expected, x)[0])


def test_asymmetric_without_focusing_or_clip_is_bce_with_logits(backend):
    x = logits((12, 5), scale=2.0).double().requires_grad_(True)
    t = (torch.rand(12, 5) > 0.5).double()
    loss = focal_cuda.asymmetric_loss(x, t, gamma_pos=0.0, gamma_neg=0.0, clip=0.0)
    expected = F.binary_cross_entropy_with_logits(x, t)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(torch.autograd.grad(loss, x)[0], torch.autograd.grad(expected, x)[0])


def test_class_index_targets_equal_their_dense_form(backend):
    x = logits((9, 6)).requires_grad_(True)
    index = torch.tensor([0, 6, 3, 5, 1, 6, 2, 4, 0])  # 6 == C: background
    score = torch.rand(9)
    dense = F.one_hot(index, 7)[:, :6].float() * score[:, None]
    for function in (focal_cuda.varifocal_loss, focal_cuda.quality_focal_loss):
        a = function(x, index, score=score, reduction="sum")
        b = function(x, dense, reduction="sum")
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(torch.autograd.grad(a, x)[0], torch.autograd.grad(b, x)[0])


# ---- the formulas as the original repositories write them (benchmarks/naive.py) -------------------------------------

@pytest.mark.parametrize("iou_weighted", [True, False])
def test_varifocal_matches_mmdet(backend, iou_weighted):
    x = logits((40, 8), scale=2.0).double().requires_grad_(True)
    q = torch.rand(40, 8, dtype=torch.float64) * (torch.rand(40, 8) > 0.7)
    loss = focal_cuda.varifocal_loss(x, q, iou_weighted=iou_weighted, reduction="sum")
    expected = naive.mmdet_varifocal_loss(x, q, iou_weighted=iou_weighted, reduction="sum")
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(torch.autograd.grad(loss, x)[0], torch.autograd.grad(expected, x)[0])


def test_quality_focal_matches_mmdet(backend):
    x = logits((40, 8), scale=2.0).double().requires_grad_(True)
    y = torch.rand(40, 8, dtype=torch.float64) * (torch.rand(40, 8) > 0.7)
    loss = focal_cuda.quality_focal_loss(x, y, reduction="sum")
    expected = naive.mmdet_quality_focal_loss_tensor_target(x, y, reduction="sum")
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(torch.autograd.grad(loss, x)[0], torch.autograd.grad(expected, x)[0])


@pytest.mark.parametrize("detach", [True, False])
def test_asymmetric_matches_alibaba_miil(backend, detach):
    x = logits((40, 8), scale=2.0).double().requires_grad_(True)
    y = (torch.rand(40, 8) > 0.8).double()
    loss = focal_cuda.asymmetric_loss(x, y, gamma_pos=1.0, gamma_neg=4.0, clip=0.05, reduction="sum",
                                      detach_modulation=detach)
    expected = naive.AsymmetricLoss(disable_torch_grad_focal_loss=detach)(x, y)  # the original's -loss.sum()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(torch.autograd.grad(loss, x)[0], torch.autograd.grad(expected, x)[0])


# ---- finite everywhere, gradcheck, opcheck, compile -------------------------------------------------------------

@pytest.mark.parametrize("dtype", floating_dtypes)
@pytest.mark.parametrize("name", sorted(FAMILY))
def test_finite_at_saturated_logits_and_small_exponents(backend, name, dtype):
    function, _ = FAMILY[name]
    x = torch.tensor([-1e4, -100.0, -20.0, -1.0, 0.0, 1.0, 20.0, 100.0, 1e4]).to(dtype).repeat(4, 1)
    x.requires_grad_(True)
    t = torch.tensor([0.0, 1.0, 0.3, 0.999]).to(dtype)[:, None].expand(4, 9).contiguous()
    exponent = {"varifocal": {"gamma": 0.5}, "quality_focal": {"beta": 0.5},
                "asymmetric": {"gamma_pos": 0.5, "gamma_neg": 0.25, "detach_modulation": False}}[name]
    loss = function(x, t, reduction="sum", **exponent)
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()


@pytest.mark.parametrize("name,form", CASES)
def test_gradcheck(backend, name, form):
    function, _ = FAMILY[name]
    x = logits((4, 5), torch.float64).requires_grad_(True)
    t, kwargs = targets(form, (4, 5), torch.float64)
    weight = torch.rand(4, dtype=torch.float64) + 0.5
    if name == "asymmetric":
        kwargs["detach_modulation"] = False  # a detached factor is, by design, not the numerical derivative
    assert torch.autograd.gradcheck(lambda v: function(v, t, reduction="mean", weight=weight, **kwargs), (x,))


@pytest.mark.parametrize("reduction", reductions)
@pytest.mark.parametrize("name", ["varifocal_fwd", "quality_focal_fwd", "asymmetric_fwd"])
def test_opcheck(name, reduction):
    code = {"none": 0, "mean": 1, "sum": 2}[reduction]
    x = torch.randn(6, 5, requires_grad=True)
    t = torch.randint(0, 6, (6,))
    score, weight, per_row = torch.rand(6), torch.rand(6), 1  # weight_mode 1: one weight per row
    args = {
        "varifocal_fwd": (x, t, score, 0.75, 2.0, True, code, -100, None, True, weight, per_row),
        "quality_focal_fwd": (x, t, score, 2.0, code, -100, torch.tensor(3.0), True, weight, per_row),
        "asymmetric_fwd": (x, t, 1.0, 4.0, 0.05, 1e-8, True, code, -100, None, True, weight, per_row),
    }[name]
    opcheck(getattr(torch.ops.focal_cuda, name).default, args)


@pytest.mark.parametrize("mode,weight_shape,message", [
    (0, (6,), r"weight: expected the input's shape \[6, 5\] \(weight_mode 0, per element\), got \[6\]"),
    (1, (6, 1), r"weight: expected one weight per row, shape input.shape\[:-1\] = \[6\] \(weight_mode 1\)"),
    (2, (1, 5), r"weight: expected one weight per class, shape \(5,\) \(weight_mode 2\), got \[1, 5\]"),
    (3, (6, 5), r"weight_mode: expected 0 \(per element\), 1 \(per row\) or 2 \(per class\), got 3"),
], ids=["element", "row", "class", "unknown"])
def test_op_checks_the_weight_against_its_declared_layout(mode, weight_shape, message):
    """functional.py decides the weight's layout and passes it as weight_mode; the op checks the shape against it
    (no layout is inferred from a shape in C++)."""
    x, t = torch.randn(6, 5), torch.rand(6, 5)
    with pytest.raises(ValueError, match=message):
        torch.ops.focal_cuda.sigmoid_focal_fwd(x, t, 0.25, 2.0, 1, -100, 0.0, None, False, torch.rand(weight_shape),
                                               mode)


def test_op_takes_one_alpha_or_per_class_alphas_not_both():
    x, t = torch.randn(6, 5), torch.rand(6, 5)
    with pytest.raises(ValueError, match="alpha: expected one number or C per-class values"):
        torch.ops.focal_cuda.sigmoid_focal_fwd(x, t, 0.25, 2.0, 1, -100, 0.0, None, False, None, 0, torch.rand(5))
    with pytest.raises(ValueError, match="alpha: expected None .* or a number >= 0, got -1"):
        torch.ops.focal_cuda.binary_focal_fwd(torch.rand(6, 5), t, -1.0, 2.0, 1, False)
    with pytest.raises(ValueError, match=r"alpha: expected 5 per-class values .* got a tensor of shape \[4\]"):
        torch.ops.focal_cuda.softmax_focal_fwd(x, torch.randint(0, 5, (6,)), torch.rand(4), 2.0, 1, -100, 0.0, None,
                                               False)


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_compile_fullgraph(name):
    function, _ = FAMILY[name]
    x = logits((16, 5)).requires_grad_(True)
    t, kwargs = targets("index", (16, 5), torch.float32)
    weight = torch.rand(16)

    def step(v):
        return function(v, t, weight=weight, normalizer=4.0, **kwargs)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), step(x))
    torch.testing.assert_close(torch.autograd.grad(compiled(x), x)[0], torch.autograd.grad(step(x), x)[0])


# ---- modules -------------------------------------------------------------------------------------------------

def test_modules_match_the_reference(backend):
    x = logits((10, 6)).double().requires_grad_(True)
    t = torch.randint(0, 7, (10,))
    score, weight = torch.rand(10, dtype=torch.float64), torch.rand(10, dtype=torch.float64)
    pairs = [
        (focal_cuda.VarifocalLoss(alpha=0.5, gamma=1.5)(x, t, weight, 3.0, score),
         reference.varifocal_loss(x, t, 0.5, 1.5, score=score, weight=weight, normalizer=3.0)),
        (focal_cuda.QualityFocalLoss(beta=1.5)(x, t, weight=weight, score=score),
         reference.quality_focal_loss(x, t, 1.5, score=score, weight=weight)),
        (focal_cuda.AsymmetricLoss(gamma_pos=1.0, clip=0.1, detach_modulation=False)(x, t, weight=weight),
         reference.asymmetric_loss(x, t, 1.0, clip=0.1, detach_modulation=False, weight=weight)),
    ]
    for loss, expected in pairs:
        torch.testing.assert_close(loss, expected)
        torch.testing.assert_close(torch.autograd.grad(loss, x)[0], torch.autograd.grad(expected, x)[0])


# ---- bad input -----------------------------------------------------------------------------------------------------

BAD_INPUT = [
    ("weight requires grad", lambda x, t: focal_cuda.varifocal_loss(x, t, weight=torch.ones(4, requires_grad=True)),
     ValueError, "weight"),
    ("weight not broadcastable", lambda x, t: focal_cuda.quality_focal_loss(x, t, weight=torch.ones(3)),
     ValueError, "weight"),
    ("softmax weight shape", lambda x, t: focal_cuda.softmax_focal_loss(x, t.clamp(max=4), weight=torch.ones(3)),
     ValueError, "weight"),
    ("score with dense target", lambda x, t: focal_cuda.varifocal_loss(x, torch.rand(4, 5), score=torch.rand(4)),
     ValueError, "score"),
    ("score shape", lambda x, t: focal_cuda.varifocal_loss(x, t, score=torch.rand(5)), ValueError, "score"),
    ("score requires grad", lambda x, t: focal_cuda.quality_focal_loss(x, t, score=torch.rand(4, requires_grad=True)),
     ValueError, "score"),
    ("negative beta", lambda x, t: focal_cuda.quality_focal_loss(x, t, beta=-1.0), ValueError, "beta"),
    ("negative gamma_neg", lambda x, t: focal_cuda.asymmetric_loss(x, t, gamma_neg=-1.0), ValueError, "gamma_neg"),
    ("clip above 1", lambda x, t: focal_cuda.asymmetric_loss(x, t, clip=1.5), ValueError, "clip"),
    ("eps zero", lambda x, t: focal_cuda.asymmetric_loss(x, t, eps=0.0), ValueError, "eps"),
    ("iou_weighted not bool", lambda x, t: focal_cuda.varifocal_loss(x, t, iou_weighted=1), TypeError, "iou_weighted"),
    ("detach not bool", lambda x, t: focal_cuda.asymmetric_loss(x, t, detach_modulation="yes"), TypeError,
     "detach_modulation"),
    ("per-class alpha size", lambda x, t: focal_cuda.sigmoid_focal_loss(x, t, alpha=torch.rand(4)), ValueError,
     "alpha"),
    ("poly_epsilon not a number", lambda x, t: focal_cuda.sigmoid_focal_loss(x, t, poly_epsilon="1"), TypeError,
     "poly_epsilon"),
    ("class index out of range", lambda x, t: focal_cuda.asymmetric_loss(x, torch.tensor([0, 1, 6, 2])),
     RuntimeError, "target"),
    ("AsymmetricLoss with score", lambda x, t: focal_cuda.AsymmetricLoss()(x, t, score=torch.rand(4)), ValueError,
     "score"),
]


@pytest.mark.parametrize("case", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input(case):
    _, call, error, name = case
    x = torch.randn(4, 5, requires_grad=True)
    t = torch.tensor([0, 5, 3, 1])
    before = x.detach().clone()
    with pytest.raises(error, match=name):
        call(x, t)
    assert torch.equal(x.detach(), before)


# ---- edges where the family once lost every digit (docs/design.md §2; tests/test_edge_accuracy.py has the full grid) --


def test_asymmetric_easy_positive_uses_the_logit_form(backend):
    """t = 1 at x = 15: -log p = log1p(e^-15) = 3.06e-7. The log of the rounded float sigmoid is 17 % off."""
    x = torch.tensor([12.0, 15.0, 20.0], requires_grad=True)
    loss = focal_cuda.asymmetric_loss(x, torch.ones(3), gamma_pos=0.0, reduction="none")
    expected = F.softplus(-x.detach().double())
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=0)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    torch.testing.assert_close(grad.double(), -torch.sigmoid(-x.detach().double()), rtol=1e-5, atol=0)


@pytest.mark.parametrize("name", ["varifocal_loss", "quality_focal_loss"])
def test_target_one_at_large_logits_keeps_its_gradient(backend, name):
    """q = 1 at x >= 17: the gradient is -(1 - p) = -sigmoid(-x), not 0 (1 - p taken from the rounded sigmoid)."""
    x = torch.tensor([17.0, 19.0, 23.0], requires_grad=True)
    kwargs = {"beta": 0.0} if name == "quality_focal_loss" else {}
    loss = getattr(focal_cuda, name)(x, torch.ones(3), reduction="sum", **kwargs)
    (grad,) = torch.autograd.grad(loss, x)
    torch.testing.assert_close(grad.double(), -torch.sigmoid(-x.detach().double()), rtol=1e-5, atol=0)
