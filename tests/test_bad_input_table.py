"""The bad-input table: every way to call the three functions and three modules wrongly, one row each.

Each row names the exception type the call must raise and the argument its message must name, followed on
the same line by what was expected ("<argument>: expected ..." or "... must ..."), and the test checks that no tensor passed in
(inputs, targets, alpha, normalizer, module constructor tensors) was modified or got a gradient.
tests/test_bad_input.py (the correctness suite's smaller table) checks the same contract on its own cases.

Rows are built per device; "mixed device" rows put one tensor on the other device and need a GPU. Out-of-range
class indices are a TORCH_CHECK on CPU only: on CUDA they are a device-side assert, which ends the context.

Also here: NaN and inf in the logits are not errors; they propagate as in PyTorch (test at the end).
"""

import math
import re

import pytest
import torch
import torch.nn.functional as F

import focal_cuda
from conftest import devices

cuda_available = torch.cuda.is_available()


class Row:
    """One bad call: build(device, other_device) -> (function, args, kwargs, constructor_tensors)."""

    def __init__(self, name, error, argument, build, mixed_device=False, cpu_only=False):
        self.name, self.error, self.argument, self.build = name, error, argument, build
        self.mixed_device, self.cpu_only = mixed_device, cpu_only


def call(function, *args, **kwargs):
    return function, args, kwargs, []


def module(cls, constructor_kwargs, *forward_args):
    """Construct and call in one step: the error may come from either (and must name the argument)."""
    tensors = [v for v in constructor_kwargs.values() if isinstance(v, torch.Tensor)]
    return (lambda *args: cls(**constructor_kwargs)(*args)), forward_args, {}, tensors


sigmoid, softmax, binary = focal_cuda.sigmoid_focal_loss, focal_cuda.softmax_focal_loss, focal_cuda.binary_focal_loss
FocalLoss, SigmoidFocalLoss, BCEFocalLoss = focal_cuda.FocalLoss, focal_cuda.SigmoidFocalLoss, focal_cuda.BCEFocalLoss


def logits(d, *shape):
    return torch.randn(*shape or (4, 3), device=d)


def probs(d, *shape):
    return torch.rand(*shape or (4, 3), device=d)


def indices(d, *values):
    return torch.tensor(values or (0, 1, 2, 1), device=d)


nan, inf = float("nan"), float("inf")

rows = [
    # ---- sigmoid_focal_loss -----------------------------------------------------------------------------------
    Row("sigmoid/int32-input", TypeError, "input",
        lambda d, o: call(sigmoid, torch.ones(4, 3, dtype=torch.int32, device=d), probs(d))),
    Row("sigmoid/complex128-input", TypeError, "input",
        lambda d, o: call(sigmoid, torch.ones(4, 3, dtype=torch.complex128, device=d), probs(d))),
    Row("sigmoid/bool-input", TypeError, "input",
        lambda d, o: call(sigmoid, torch.ones(4, 3, dtype=torch.bool, device=d), probs(d))),
    Row("sigmoid/input-is-a-numpy-like-list", TypeError, "input", lambda d, o: call(sigmoid, [0.5, -0.5], probs(d, 2))),
    Row("sigmoid/dense-target-broadcastable-but-not-equal", ValueError, "target",
        lambda d, o: call(sigmoid, logits(d), probs(d, 1, 3))),
    Row("sigmoid/class-index-target-one-dim-short", ValueError, "target",
        lambda d, o: call(sigmoid, logits(d, 2, 4, 3), torch.zeros(2, dtype=torch.long, device=d))),
    Row("sigmoid/float-class-indices", ValueError, "target",
        lambda d, o: call(sigmoid, logits(d), torch.tensor([0.0, 2.0, 1.0, 1.0], device=d))),
    Row("sigmoid/complex-target", TypeError, "target",
        lambda d, o: call(sigmoid, logits(d), torch.zeros(4, 3, dtype=torch.complex64, device=d))),
    Row("sigmoid/target-is-a-number", TypeError, "target", lambda d, o: call(sigmoid, logits(d), 1.0)),
    Row("sigmoid/class-index-past-background", RuntimeError, "target",
        lambda d, o: call(sigmoid, logits(d), indices(d, 0, 1, 2, 5)), cpu_only=True),
    Row("sigmoid/uint8-class-index-past-background", RuntimeError, "target",
        lambda d, o: call(sigmoid, logits(d), torch.tensor([0, 1, 200, 1], dtype=torch.uint8, device=d)),
        cpu_only=True),
    Row("sigmoid/negative-class-index-not-ignore-index", RuntimeError, "target",
        lambda d, o: call(sigmoid, logits(d), indices(d, 0, -1, 2, 1)), cpu_only=True),
    Row("sigmoid/gamma-negative-tiny", ValueError, "gamma",
        lambda d, o: call(sigmoid, logits(d), probs(d), gamma=-1e-12)),
    Row("sigmoid/gamma-nan", ValueError, "gamma", lambda d, o: call(sigmoid, logits(d), probs(d), gamma=nan)),
    Row("sigmoid/gamma-bool", TypeError, "gamma", lambda d, o: call(sigmoid, logits(d), probs(d), gamma=True)),
    Row("sigmoid/gamma-int-beyond-float-range", ValueError, "gamma",
        lambda d, o: call(sigmoid, logits(d), probs(d), gamma=10**400)),
    Row("sigmoid/alpha-minus-inf", ValueError, "alpha", lambda d, o: call(sigmoid, logits(d), probs(d), alpha=-inf)),
    # a tensor alpha holds C per-class values (docs/design.md section 5): one value for several classes is an error
    Row("sigmoid/alpha-tensor-not-one-per-class", ValueError, "alpha",
        lambda d, o: call(sigmoid, logits(d), probs(d), alpha=torch.tensor(0.25, device=d))),
    Row("sigmoid/alpha-string", TypeError, "alpha", lambda d, o: call(sigmoid, logits(d), probs(d), alpha="0.25")),
    Row("sigmoid/label-smoothing-just-above-1", ValueError, "label_smoothing",
        lambda d, o: call(sigmoid, logits(d), probs(d), label_smoothing=1.0 + 1e-9)),
    Row("sigmoid/label-smoothing-inf", ValueError, "label_smoothing",
        lambda d, o: call(sigmoid, logits(d), probs(d), label_smoothing=inf)),
    Row("sigmoid/ignore-index-beyond-int64", ValueError, "ignore_index",
        lambda d, o: call(sigmoid, logits(d), indices(d), ignore_index=2**70)),
    Row("sigmoid/normalizer-shape-1", ValueError, "normalizer",
        lambda d, o: call(sigmoid, logits(d), probs(d), reduction="mean", normalizer=torch.ones(1, device=d))),
    Row("sigmoid/normalizer-complex", TypeError, "normalizer",
        lambda d, o: call(sigmoid, logits(d), probs(d), reduction="mean",
                          normalizer=torch.tensor(2 + 0j, device=d))),
    Row("sigmoid/normalizer-nan", ValueError, "normalizer",
        lambda d, o: call(sigmoid, logits(d), probs(d), reduction="mean", normalizer=nan)),
    Row("sigmoid/reduction-elementwise-mean", ValueError, "reduction",
        lambda d, o: call(sigmoid, logits(d), probs(d), reduction="elementwise_mean")),
    Row("sigmoid/normalizer-zero", ValueError, "normalizer",
        lambda d, o: call(sigmoid, logits(d), probs(d), reduction="mean", normalizer=0)),
    Row("sigmoid/normalizer-negative-float", ValueError, "normalizer",
        lambda d, o: call(sigmoid, logits(d), probs(d), reduction="mean", normalizer=-2.5)),
    Row("sigmoid/normalizer-inf", ValueError, "normalizer",
        lambda d, o: call(sigmoid, logits(d), probs(d), reduction="mean", normalizer=inf)),
    Row("sigmoid/target-requires-grad", ValueError, "target",
        lambda d, o: call(sigmoid, logits(d), probs(d).requires_grad_(True))),
    Row("sigmoid/normalizer-requires-grad", ValueError, "normalizer",
        lambda d, o: call(sigmoid, logits(d), probs(d), reduction="mean",
                          normalizer=torch.tensor(3.0, device=d, requires_grad=True))),
    Row("sigmoid/alpha-tensor-requires-grad", ValueError, "alpha",
        lambda d, o: call(sigmoid, logits(d), probs(d), alpha=torch.rand(3, device=d, requires_grad=True))),
    Row("sigmoid/normalizer-with-reduction-sum", ValueError, "normalizer",
        lambda d, o: call(sigmoid, logits(d), probs(d), reduction="sum", normalizer=4.0)),
    Row("sigmoid/normalizer-with-reduction-none", ValueError, "normalizer",
        lambda d, o: call(sigmoid, logits(d), probs(d), normalizer=torch.tensor(4.0, device=d))),
    Row("sigmoid/mixed-device-target", RuntimeError, "target",
        lambda d, o: call(sigmoid, logits(d), probs(o)), mixed_device=True),
    Row("sigmoid/mixed-device-class-index-target", RuntimeError, "target",
        lambda d, o: call(sigmoid, logits(d), indices(o)), mixed_device=True),
    Row("sigmoid/mixed-device-normalizer", RuntimeError, "normalizer",
        lambda d, o: call(sigmoid, logits(d), probs(d), reduction="mean", normalizer=torch.tensor(3.0, device=o)),
        mixed_device=True),
    # ---- softmax_focal_loss -----------------------------------------------------------------------------------
    Row("softmax/int64-input", TypeError, "input",
        lambda d, o: call(softmax, torch.zeros(4, 3, dtype=torch.long, device=d), indices(d))),
    Row("softmax/complex64-input", TypeError, "input",
        lambda d, o: call(softmax, torch.zeros(4, 3, dtype=torch.complex64, device=d), indices(d))),
    Row("softmax/input-not-a-tensor", TypeError, "input", lambda d, o: call(softmax, None, indices(d))),
    Row("softmax/float-class-indices", TypeError, "target",
        lambda d, o: call(softmax, logits(d), torch.tensor([0.0, 1.0, 2.0, 1.0], device=d))),
    Row("softmax/bool-target", TypeError, "target",
        lambda d, o: call(softmax, logits(d), torch.tensor([True, False, True, False], device=d))),
    Row("softmax/one-hot-target", ValueError, "target",
        lambda d, o: call(softmax, logits(d), F.one_hot(indices(d), 3))),
    Row("softmax/target-list", TypeError, "target", lambda d, o: call(softmax, logits(d), [0, 1, 2, 1])),
    Row("softmax/spatial-target-transposed", ValueError, "target",
        lambda d, o: call(softmax, logits(d, 2, 3, 4, 5), torch.zeros(2, 5, 4, dtype=torch.long, device=d))),
    Row("softmax/class-index-equal-C-spatial", RuntimeError, "target",
        lambda d, o: call(softmax, logits(d, 2, 3, 2), torch.tensor([[0, 1], [3, 2]], device=d)), cpu_only=True),
    Row("softmax/unbatched-class-index-out-of-range", RuntimeError, "target",
        lambda d, o: call(softmax, logits(d, 3), torch.tensor(-2, device=d)), cpu_only=True),
    Row("softmax/gamma-minus-inf", ValueError, "gamma", lambda d, o: call(softmax, logits(d), indices(d), gamma=-inf)),
    Row("softmax/gamma-none", TypeError, "gamma", lambda d, o: call(softmax, logits(d), indices(d), gamma=None)),
    Row("softmax/alpha-float-nan", ValueError, "alpha", lambda d, o: call(softmax, logits(d), indices(d), alpha=nan)),
    Row("softmax/alpha-list-with-inf", ValueError, "alpha",
        lambda d, o: call(softmax, logits(d), indices(d), alpha=[1.0, inf, 1.0])),
    Row("softmax/alpha-list-too-long", ValueError, "alpha",
        lambda d, o: call(softmax, logits(d), indices(d), alpha=[1.0, 1.0, 1.0, 1.0])),
    Row("softmax/alpha-empty-list", ValueError, "alpha", lambda d, o: call(softmax, logits(d), indices(d), alpha=[])),
    Row("softmax/alpha-2x2-tensor-for-3-classes", ValueError, "alpha",
        lambda d, o: call(softmax, logits(d), indices(d), alpha=torch.ones(2, 2, device=d))),
    Row("softmax/alpha-bool-tensor", TypeError, "alpha",
        lambda d, o: call(softmax, logits(d), indices(d), alpha=torch.ones(3, dtype=torch.bool, device=d))),
    Row("softmax/alpha-list-of-strings", TypeError, "alpha",
        lambda d, o: call(softmax, logits(d), indices(d), alpha=["1", "1", "1"])),
    Row("softmax/alpha-dict", TypeError, "alpha", lambda d, o: call(softmax, logits(d), indices(d), alpha={0: 1.0})),
    Row("softmax/mixed-device-alpha", RuntimeError, "alpha",
        lambda d, o: call(softmax, logits(d), indices(d), alpha=torch.ones(3, device=o)), mixed_device=True),
    Row("softmax/mixed-device-target", RuntimeError, "target",
        lambda d, o: call(softmax, logits(d), indices(o)), mixed_device=True),
    Row("softmax/label-smoothing-negative", ValueError, "label_smoothing",
        lambda d, o: call(softmax, logits(d), indices(d), label_smoothing=-1e-6)),
    Row("softmax/label-smoothing-string", TypeError, "label_smoothing",
        lambda d, o: call(softmax, logits(d), indices(d), label_smoothing="0.1")),
    Row("softmax/normalizer-2-dim", ValueError, "normalizer",
        lambda d, o: call(softmax, logits(d), indices(d), normalizer=torch.ones(1, 1, device=d))),
    Row("softmax/normalizer-bool-tensor", TypeError, "normalizer",
        lambda d, o: call(softmax, logits(d), indices(d), normalizer=torch.tensor(True, device=d))),
    Row("softmax/normalizer-list", TypeError, "normalizer",
        lambda d, o: call(softmax, logits(d), indices(d), normalizer=[4.0])),
    Row("softmax/normalizer-zero-float", ValueError, "normalizer",
        lambda d, o: call(softmax, logits(d), indices(d), normalizer=0.0)),
    Row("softmax/normalizer-minus-inf", ValueError, "normalizer",
        lambda d, o: call(softmax, logits(d), indices(d), normalizer=-inf)),
    Row("softmax/reduction-uppercase", ValueError, "reduction",
        lambda d, o: call(softmax, logits(d), indices(d), reduction="MEAN")),
    Row("softmax/alpha-tensor-requires-grad", ValueError, "alpha",
        lambda d, o: call(softmax, logits(d), indices(d), alpha=torch.rand(3, device=d, requires_grad=True))),
    Row("softmax/normalizer-requires-grad", ValueError, "normalizer",
        lambda d, o: call(softmax, logits(d), indices(d), normalizer=torch.tensor(3.0, device=d, requires_grad=True))),
    Row("softmax/normalizer-with-reduction-sum", ValueError, "normalizer",
        lambda d, o: call(softmax, logits(d), indices(d), reduction="sum", normalizer=4.0)),
    Row("softmax/reduction-int-code", ValueError, "reduction",
        lambda d, o: call(softmax, logits(d), indices(d), reduction=1)),
    Row("softmax/ignore-index-string", TypeError, "ignore_index",
        lambda d, o: call(softmax, logits(d), indices(d), ignore_index="-100")),
    # ---- binary_focal_loss ------------------------------------------------------------------------------------
    Row("binary/int-prob", TypeError, "prob",
        lambda d, o: call(binary, torch.ones(4, 3, dtype=torch.int64, device=d), probs(d))),
    Row("binary/complex-prob", TypeError, "prob",
        lambda d, o: call(binary, torch.ones(4, 3, dtype=torch.complex64, device=d), probs(d))),
    Row("binary/prob-is-a-float", TypeError, "prob", lambda d, o: call(binary, 0.5, probs(d, 1))),
    Row("binary/target-transposed", ValueError, "target", lambda d, o: call(binary, probs(d), probs(d).T)),
    Row("binary/target-one-fewer-dim", ValueError, "target", lambda d, o: call(binary, probs(d), probs(d, 4))),
    Row("binary/target-list", TypeError, "target", lambda d, o: call(binary, probs(d), [[1.0] * 3] * 4)),
    Row("binary/gamma-negative", ValueError, "gamma", lambda d, o: call(binary, probs(d), probs(d), gamma=-0.5)),
    Row("binary/gamma-inf", ValueError, "gamma", lambda d, o: call(binary, probs(d), probs(d), gamma=inf)),
    Row("binary/alpha-nan", ValueError, "alpha", lambda d, o: call(binary, probs(d), probs(d), alpha=nan)),
    Row("binary/alpha-list", TypeError, "alpha", lambda d, o: call(binary, probs(d), probs(d), alpha=[0.25])),
    Row("binary/target-requires-grad", ValueError, "target",
        lambda d, o: call(binary, probs(d), probs(d).requires_grad_(True))),
    Row("binary/reduction-none-object", ValueError, "reduction",
        lambda d, o: call(binary, probs(d), probs(d), reduction=None)),
    # like torch.nn.BCELoss on CPU (a device-side assert on CUDA: checking there would be a host sync)
    Row("binary/prob-above-1", RuntimeError, "prob",
        lambda d, o: call(binary, torch.tensor([0.2, 1.0 + 1e-6, 0.5], device=d), probs(d, 3)), cpu_only=True),
    Row("binary/prob-negative", RuntimeError, "prob",
        lambda d, o: call(binary, torch.tensor([[0.2, 0.3], [-1e-3, 0.5]], device=d), probs(d, 2, 2)),
        cpu_only=True),
    Row("binary/prob-logits-passed-by-mistake-bf16", RuntimeError, "prob",
        lambda d, o: call(binary, torch.randn(64, 5, device=d).to(torch.bfloat16),
                          probs(d, 64, 5).to(torch.bfloat16)), cpu_only=True),
    Row("binary/prob-inf-non-contiguous", RuntimeError, "prob",
        lambda d, o: call(binary, torch.tensor([[0.5, inf], [0.25, 0.75]], device=d).t(), probs(d, 2, 2)),
        cpu_only=True),
    Row("binary/mixed-device-target", RuntimeError, "target",
        lambda d, o: call(binary, probs(d), probs(o)), mixed_device=True),
    # ---- FocalLoss --------------------------------------------------------------------------------------------
    Row("FocalLoss/class-num-zero", ValueError, "class_num", lambda d, o: module(FocalLoss, dict(class_num=0))),
    Row("FocalLoss/class-num-float", ValueError, "class_num", lambda d, o: module(FocalLoss, dict(class_num=3.0))),
    Row("FocalLoss/alpha-length-not-class-num", ValueError, "alpha",
        lambda d, o: module(FocalLoss, dict(class_num=3, alpha=torch.ones(4, 1, device=d)))),
    Row("FocalLoss/alpha-string", TypeError, "alpha", lambda d, o: module(FocalLoss, dict(class_num=3, alpha="abc"))),
    Row("FocalLoss/alpha-complex-tensor", TypeError, "alpha",
        lambda d, o: module(FocalLoss, dict(class_num=3, alpha=torch.ones(3, dtype=torch.complex64, device=d)))),
    Row("FocalLoss/input-classes-not-class-num", ValueError, "input",
        lambda d, o: module(FocalLoss, dict(class_num=3), logits(d, 4, 5), indices(d))),
    Row("FocalLoss/input-classes-not-alpha-length", ValueError, "input",
        lambda d, o: module(FocalLoss, dict(class_num=3, alpha=[1.0, 2.0, 3.0]), logits(d, 4, 5), indices(d))),
    Row("FocalLoss/gamma-negative", ValueError, "gamma",
        lambda d, o: module(FocalLoss, dict(class_num=3, gamma=-2.0), logits(d), indices(d))),
    Row("FocalLoss/label-smoothing-above-1", ValueError, "label_smoothing",
        lambda d, o: module(FocalLoss, dict(class_num=3, label_smoothing=1.5), logits(d), indices(d))),
    Row("FocalLoss/reduction-unknown", ValueError, "reduction",
        lambda d, o: module(FocalLoss, dict(class_num=3, reduction="batchmean"), logits(d), indices(d))),
    Row("FocalLoss/float-target", TypeError, "target",
        lambda d, o: module(FocalLoss, dict(class_num=3), logits(d), indices(d).float())),
    Row("FocalLoss/size-average-string", TypeError, "size_average",
        lambda d, o: module(FocalLoss, dict(class_num=3, size_average="mean"), logits(d), indices(d))),
    Row("FocalLoss/size-average-int", TypeError, "size_average",
        lambda d, o: module(FocalLoss, dict(class_num=3, size_average=0), logits(d), indices(d))),
    Row("FocalLoss/size-average-tensor", TypeError, "size_average",
        lambda d, o: module(FocalLoss, dict(class_num=3, size_average=torch.tensor(True)), logits(d), indices(d))),
    Row("FocalLoss/normalizer-negative", ValueError, "normalizer",
        lambda d, o: module(FocalLoss, dict(class_num=3), logits(d), indices(d), -1.0)),
    Row("FocalLoss/alpha-buffer-not-moved-to-input-device", RuntimeError, "alpha",
        lambda d, o: module(FocalLoss, dict(class_num=3, alpha=torch.ones(3, device=o)), logits(d), indices(d)),
        mixed_device=True),
    # ---- SigmoidFocalLoss -------------------------------------------------------------------------------------
    Row("SigmoidFocalLoss/alpha-nan", ValueError, "alpha",
        lambda d, o: module(SigmoidFocalLoss, dict(alpha=nan), logits(d), probs(d))),
    Row("SigmoidFocalLoss/gamma-string", TypeError, "gamma",
        lambda d, o: module(SigmoidFocalLoss, dict(gamma="2"), logits(d), probs(d))),
    Row("SigmoidFocalLoss/normalizer-with-reduction-sum", ValueError, "normalizer",
        lambda d, o: module(SigmoidFocalLoss, dict(reduction="sum"), logits(d), probs(d), 4.0)),
    Row("SigmoidFocalLoss/reduction-unknown", ValueError, "reduction",
        lambda d, o: module(SigmoidFocalLoss, dict(reduction="avg"), logits(d), probs(d))),
    Row("SigmoidFocalLoss/ignore-index-float", TypeError, "ignore_index",
        lambda d, o: module(SigmoidFocalLoss, dict(ignore_index=-100.0), logits(d), indices(d))),
    Row("SigmoidFocalLoss/label-smoothing-negative", ValueError, "label_smoothing",
        lambda d, o: module(SigmoidFocalLoss, dict(label_smoothing=-0.1), logits(d), probs(d))),
    Row("SigmoidFocalLoss/normalizer-vector", ValueError, "normalizer",
        lambda d, o: module(SigmoidFocalLoss, {}, logits(d), probs(d), torch.ones(4, device=d))),
    Row("SigmoidFocalLoss/target-shape", ValueError, "target",
        lambda d, o: module(SigmoidFocalLoss, {}, logits(d), probs(d, 3, 4))),
    # ---- BCEFocalLoss -----------------------------------------------------------------------------------------
    Row("BCEFocalLoss/gamma-nan", ValueError, "gamma",
        lambda d, o: module(BCEFocalLoss, dict(gamma=nan), probs(d), probs(d))),
    Row("BCEFocalLoss/alpha-inf", ValueError, "alpha",
        lambda d, o: module(BCEFocalLoss, dict(alpha=inf), probs(d), probs(d))),
    Row("BCEFocalLoss/reduction-elementwise-sum", ValueError, "reduction",
        lambda d, o: module(BCEFocalLoss, dict(reduction="elementwise_sum"), probs(d), probs(d))),
    Row("BCEFocalLoss/prob-above-1", RuntimeError, "prob",
        lambda d, o: module(BCEFocalLoss, {}, probs(d) + 1.0, probs(d)), cpu_only=True),
    Row("BCEFocalLoss/integer-prob", TypeError, "prob",
        lambda d, o: module(BCEFocalLoss, {}, indices(d), indices(d))),
    Row("BCEFocalLoss/target-shape", ValueError, "target",
        lambda d, o: module(BCEFocalLoss, {}, probs(d), probs(d, 2, 3))),
]


def row_params():
    params = []
    for row in rows:
        marks = []
        if row.mixed_device:
            marks.append(pytest.mark.skipif(not cuda_available, reason="a mixed-device case needs a GPU"))
        params.append(pytest.param(row, id=row.name, marks=marks))
    return params


def snapshot(value):
    return value.detach().clone() if isinstance(value, torch.Tensor) else None


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("row", row_params())
def test_bad_input_raises_a_clear_error_and_changes_nothing(row, device):
    if row.cpu_only and device != "cpu":
        pytest.skip("an out-of-range class index or probability is a device-side assert on CUDA (as in "
                    "F.cross_entropy and nn.BCELoss)")
    other_device = "cuda" if device == "cpu" else "cpu"
    function, args, kwargs, constructor_tensors = row.build(device, other_device)
    tensors = [t for t in [*args, *kwargs.values(), *constructor_tensors] if isinstance(t, torch.Tensor)]
    # a failed call must not leave a gradient either. Only the input may require grad: a target, alpha or
    # normalizer that does is an error of its own (its rows in the table)
    for tensor in [args[0], *constructor_tensors] if args else constructor_tensors:
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            tensor.requires_grad_(True)
    before = [snapshot(t) for t in tensors]
    versions = [t._version for t in tensors]

    # "<argument>: expected ..." / "<argument> ... must ...": the argument first, then what was expected
    with pytest.raises(row.error, match=rf"(?i)\b{re.escape(row.argument)}\b[^\n]*\b(expected|must)\b"):
        function(*args, **kwargs)

    for tensor, original, version in zip(tensors, before, versions):
        assert tensor._version == version, "a failed call wrote into one of its arguments"
        assert tensor.dtype == original.dtype and tensor.shape == original.shape
        assert torch.equal(tensor.detach(), original), "a failed call modified one of its arguments"
        assert tensor.grad is None


def test_table_covers_every_function_and_module():
    covered = {row.name.split("/")[0] for row in rows}
    assert covered == {"sigmoid", "softmax", "binary", "FocalLoss", "SigmoidFocalLoss", "BCEFocalLoss"}
    assert len(rows) >= 30


# ---- NaN / inf logits: not errors; they propagate as in PyTorch -------------------------------------------------
# Checking would cost a host synchronisation (the design forbids one on the call path), so, like
# F.cross_entropy and F.binary_cross_entropy_with_logits, a NaN logit gives a NaN loss and NaN gradient exactly
# where it enters (its element for sigmoid/binary, its row for softmax), every other entry is unaffected, and a
# reduction over it is NaN. An infinite logit gives a non-finite loss wherever PyTorch's own loss is non-finite.

@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_nan_logits_propagate_to_their_own_entries(device, gamma):
    nan_at = (1, 2)
    logits_clean = torch.randn(3, 4, device=device)
    logits_nan = logits_clean.clone()
    logits_nan[nan_at] = nan
    prob_clean = torch.rand(3, 4, device=device)
    prob_nan = prob_clean.clone()
    prob_nan[nan_at] = nan
    cases = [
        ("sigmoid", sigmoid, logits_clean, logits_nan, probs(device, 3, 4), dict(alpha=0.25), "element"),
        ("softmax", softmax, logits_clean, logits_nan, torch.tensor([0, 3, 1], device=device), {}, "row"),
        ("binary", binary, prob_clean, prob_nan, (probs(device, 3, 4) > 0.5).float(), dict(alpha=0.25), "element"),
    ]
    for name, function, clean, dirty, target, kwargs, extent in cases:
        leaf = dirty.clone().requires_grad_(True)
        loss = function(leaf, target, gamma=gamma, reduction="none", **kwargs)
        (grad,) = torch.autograd.grad(loss.sum(), leaf)
        clean_loss = function(clean, target, gamma=gamma, reduction="none", **kwargs)

        expected_nan_loss = torch.zeros_like(loss, dtype=torch.bool)
        expected_nan_grad = torch.zeros_like(grad, dtype=torch.bool)
        if extent == "element":
            expected_nan_loss[nan_at] = True
            expected_nan_grad[nan_at] = True
        else:
            expected_nan_loss[nan_at[0]] = True
            expected_nan_grad[nan_at[0]] = True  # the whole row's gradient depends on the NaN through the softmax
        assert torch.equal(loss.isnan(), expected_nan_loss), f"{name}: NaN loss at {loss.isnan().nonzero().tolist()}"
        assert torch.equal(grad.isnan(), expected_nan_grad), f"{name}: NaN grad at {grad.isnan().nonzero().tolist()}"
        unaffected = ~expected_nan_loss
        assert torch.equal(loss[unaffected], clean_loss[unaffected]), f"{name}: a NaN changed other entries"
        for reduction in ["mean", "sum"]:
            assert function(dirty, target, gamma=gamma, reduction=reduction, **kwargs).isnan(), (name, reduction)


@pytest.mark.parametrize("device", devices)
def test_infinite_logits_are_non_finite_where_pytorch_is(device):
    input = torch.tensor([[inf, -inf, 0.5, 1.0], [-inf, inf, 2.0, -1.0], [0.1, 0.2, 0.3, 0.4]], device=device)
    dense = torch.tensor([[1.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]], device=device)
    # gamma = 0 and no alpha: the focal losses are exactly BCE-with-logits and cross-entropy
    ours = sigmoid(input, dense, alpha=None, gamma=0.0, reduction="none")
    theirs = F.binary_cross_entropy_with_logits(input, dense, reduction="none")
    assert torch.equal(ours.isfinite(), theirs.isfinite()), (ours, theirs)
    torch.testing.assert_close(ours[theirs.isfinite()], theirs[theirs.isfinite()])

    target = torch.tensor([0, 2, 1], device=device)
    ours = softmax(input, target, gamma=0.0, reduction="none")
    theirs = F.cross_entropy(input, target, reduction="none")
    assert torch.equal(ours.isfinite(), theirs.isfinite()), (ours, theirs)
    torch.testing.assert_close(ours[theirs.isfinite()], theirs[theirs.isfinite()])
    assert not math.isfinite(softmax(input, target, gamma=2.0, reduction="sum").item())
