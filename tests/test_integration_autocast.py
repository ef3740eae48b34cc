"""Autocast: the ops take low-precision logits as they are and return the loss in the logits' dtype.

Documented behaviour (focal_cuda/_ops.py registers no autocast rule): under torch.autocast a focal_cuda
loss runs in the dtype of the tensor it is given. A Linear under autocast yields bf16/fp16 logits, so
the loss (and the gradient into the logits) is bf16/fp16, computed in float32 inside the kernel; a
float32 tensor passed under autocast stays float32 and gives the same result as outside autocast.
No upcast copy of the logits is made (checked with the profiler).
"""

import pytest
import torch
import torch.nn.functional as F

import focal_cuda
from focal_cuda import reference

from conftest import tolerances

NUM_CLASSES = 6
FEATURES = 12

autocast_cases = [
    pytest.param("cpu", torch.bfloat16, id="cpu-bf16"),
    pytest.param(
        "cuda", torch.bfloat16, id="cuda-bf16",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available"),
    ),
    pytest.param(
        "cuda", torch.float16, id="cuda-fp16",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available"),
    ),
]

# name -> (focal_cuda call, reference call); each takes (op input, targets). The op input is the logits,
# except for binary_focal_loss, which takes probabilities (the sigmoid of the logits, in their dtype).
ALPHA = torch.linspace(0.25, 1.0, NUM_CLASSES)
LOSSES = {
    "softmax": (
        lambda x, t: focal_cuda.FocalLoss(NUM_CLASSES, alpha=ALPHA).to(x.device)(x, t["index"]),
        lambda x, t: reference.softmax_focal_loss(x, t["index"], alpha=ALPHA),
    ),
    "sigmoid_index": (
        lambda x, t: focal_cuda.sigmoid_focal_loss(x, t["index_with_background"], reduction="sum"),
        lambda x, t: reference.sigmoid_focal_loss(x, t["index_with_background"], reduction="sum"),
    ),
    "sigmoid_dense_none": (
        lambda x, t: focal_cuda.sigmoid_focal_loss(x, t["dense"].to(x.dtype), reduction="none"),
        lambda x, t: reference.sigmoid_focal_loss(x, t["dense"].to(x.dtype), reduction="none"),
    ),
    "binary": (
        lambda p, t: focal_cuda.binary_focal_loss(p, t["dense"].to(p.dtype)),
        lambda p, t: reference.binary_focal_loss(p, t["dense"].to(p.dtype)),
    ),
}


def make_data(device, batch=64):
    features = torch.randn(batch, FEATURES, device=device)
    targets = {
        "index": torch.randint(0, NUM_CLASSES, (batch,), device=device),
        "index_with_background": torch.randint(0, NUM_CLASSES + 1, (batch,), device=device),
        "dense": (torch.rand(batch, NUM_CLASSES, device=device) < 0.3).float(),
    }
    return features, targets


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("device_type, low_dtype", autocast_cases)
def test_loss_under_autocast_has_logits_dtype_and_matches_float64(device_type, low_dtype, name):
    focal_call, reference_call = LOSSES[name]
    linear = torch.nn.Linear(FEATURES, NUM_CLASSES).to(device_type)
    features, targets = make_data(device_type)
    with torch.autocast(device_type, dtype=low_dtype):
        logits = linear(features)
        assert logits.dtype == low_dtype, "autocast should make the Linear output low precision"
        op_input = torch.sigmoid(logits) if name == "binary" else logits
        assert op_input.dtype == low_dtype
        op_input.retain_grad()
        loss = focal_call(op_input, targets)
    assert loss.dtype == low_dtype, f"{name}: loss dtype {loss.dtype}, expected the input's dtype {low_dtype}"
    loss.sum().backward()
    assert op_input.grad.dtype == low_dtype
    assert linear.weight.grad.dtype == torch.float32 and torch.isfinite(linear.weight.grad).all()

    # ground truth: the same low-precision input values, upcast to float64, through the reference
    truth_input = op_input.detach().double().requires_grad_()
    expected = reference_call(truth_input, targets)
    expected.sum().backward()
    tolerance = tolerances[low_dtype]
    torch.testing.assert_close(loss.double(), expected.detach(), **tolerance, msg=lambda m: f"{name} loss: {m}")
    # gradients are small (mean over the batch): compare relative to their largest magnitude
    grad_scale = truth_input.grad.abs().max().item()
    torch.testing.assert_close(
        op_input.grad.double(), truth_input.grad, rtol=tolerance["rtol"], atol=tolerance["rtol"] * grad_scale,
        msg=lambda m: f"{name} gradient: {m}",
    )


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("device_type, low_dtype", autocast_cases)
def test_float32_logits_under_autocast_stay_float32(device_type, low_dtype, name):
    focal_call, _ = LOSSES[name]
    logits = torch.randn(32, NUM_CLASSES, device=device_type)
    if name == "binary":
        logits = torch.sigmoid(logits)  # probabilities
    _, targets = make_data(device_type, batch=32)
    outside = focal_call(logits, targets)
    with torch.autocast(device_type, dtype=low_dtype):
        inside = focal_call(logits, targets)
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, outside, rtol=0, atol=0)


@pytest.mark.parametrize("device_type, low_dtype", autocast_cases)
def test_no_upcast_copy_of_low_precision_logits(device_type, low_dtype):
    """The kernels read bf16/fp16 logits directly: no _to_copy/copy_ of a logits-shaped tensor runs."""
    logits = torch.randn(128, NUM_CLASSES, device=device_type, dtype=low_dtype).requires_grad_()
    index = torch.randint(0, NUM_CLASSES, (128,), device=device_type)
    with torch.autocast(device_type, dtype=low_dtype):
        with torch.profiler.profile(record_shapes=True) as profile:
            softmax = focal_cuda.softmax_focal_loss(logits, index)
            sigmoid = focal_cuda.sigmoid_focal_loss(logits, index, reduction="mean")
    (softmax + sigmoid).backward()
    copies = [
        (event.name, event.input_shapes)
        for event in profile.events()
        if event.name in ("aten::_to_copy", "aten::copy_")
        and event.input_shapes
        and list(event.input_shapes[0]) == list(logits.shape)
    ]
    focal_ops = {event.name for event in profile.events() if event.name.startswith("focal_cuda::")}
    assert {"focal_cuda::softmax_focal_fwd", "focal_cuda::sigmoid_focal_fwd"} <= focal_ops, focal_ops
    assert not copies, f"logits-shaped copies under autocast: {copies}"
    assert softmax.dtype == sigmoid.dtype == logits.grad.dtype == low_dtype


def test_softmax_gamma_zero_under_autocast_is_cross_entropy_within_one_bf16_rounding():
    """gamma = 0 is cross-entropy: on bf16 logits under CPU autocast the loss is the float64 cross-entropy of
    the same values up to the final rounding to bf16 (the math inside runs in float32)."""
    logits = (4 * torch.randn(256, NUM_CLASSES)).to(torch.bfloat16)
    target = torch.randint(0, NUM_CLASSES, (256,))
    exact = F.cross_entropy(logits.double(), target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        focal = focal_cuda.softmax_focal_loss(logits, target, gamma=0.0)
    assert focal.dtype == torch.bfloat16
    # one bf16 rounding of the result away from the exact value
    torch.testing.assert_close(focal.double(), exact, rtol=2**-8, atol=0)


@pytest.mark.parametrize("loss_name", ["sigmoid", "softmax"])
def test_fp16_head_under_a_loss_scale_matches_float_math(loss_name):
    """fp16 logits of a detection-style head (a Linear under autocast fp16 where it runs, else cast), with a
    GradScaler-size loss scale (2**15, 'sum' over many easy negatives): the logits' gradient, unscaled, matches
    float64 math on the same fp16 logits to fp16 rounding wherever its scaled value is a normal fp16. The per-logit
    gradients (1e-8..1e-5) lie below fp16's range until the scale arrives, so a kernel storing them unscaled in fp16
    loses most of them (docs/design.md §2)."""
    torch.manual_seed(0)
    features = torch.randn(512, FEATURES)
    weight = torch.randn(80, FEATURES) * 0.1
    bias = torch.full((80,), -5.0)
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            logits = F.linear(features, weight, bias)
    except RuntimeError:  # torch builds whose CPU autocast has no fp16
        logits = F.linear(features, weight, bias)
    logits = logits.half().detach()
    scale = 2.0**15

    def logits_grad(x, function):
        x = x.clone().requires_grad_(True)
        if loss_name == "sigmoid":
            loss = function(x, torch.full((512,), 80), reduction="sum")  # all background
        else:
            loss = function(torch.cat([torch.full((512, 1), 3.0, dtype=x.dtype), x], 1),
                            torch.zeros(512, dtype=torch.long), gamma=1.0, reduction="sum")
        (loss * scale).backward()
        return x.grad.double()

    ours = logits_grad(logits, getattr(focal_cuda, f"{loss_name}_focal_loss"))
    truth = logits_grad(logits.double(), getattr(reference, f"{loss_name}_focal_loss"))
    representable = truth.abs() >= torch.finfo(torch.float16).tiny
    assert representable.float().mean() > 0.5
    relative = ((ours - truth).abs() / truth.abs())[representable]
    assert relative.max() <= 0.02, f"{int((relative > 0.02).sum())} scaled fp16 gradients off by more than 2 %"
