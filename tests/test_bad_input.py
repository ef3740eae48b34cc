"""Bad input: a ValueError/TypeError/RuntimeError whose message names the argument; nothing modified."""

import pytest
import torch

import focal_cuda

ERRORS = (ValueError, TypeError, RuntimeError)


def randn(*shape, device):
    return torch.randn(*shape, device=device)


def index(*values, device):
    return torch.tensor(values, device=device)


# (case id, argument the message must name, builder(device) -> (callable, args, kwargs), CPU only)
# CPU only: an out-of-range class index is a device-side assert on CUDA, which ends the CUDA context.
cases = [
    # sigmoid_focal_loss
    ("sigmoid-integer-input", "input",
     lambda d: (focal_cuda.sigmoid_focal_loss, (torch.randint(0, 3, (4, 3), device=d), randn(4, 3, device=d)), {}), False),
    ("sigmoid-complex-input", "input",
     lambda d: (focal_cuda.sigmoid_focal_loss, (torch.randn(4, 3, dtype=torch.complex64, device=d), randn(4, 3, device=d)), {}), False),
    ("sigmoid-dense-target-shape", "target",
     lambda d: (focal_cuda.sigmoid_focal_loss, (randn(4, 3, device=d), torch.rand(4, 2, device=d)), {}), False),
    ("sigmoid-index-target-shape", "target",
     lambda d: (focal_cuda.sigmoid_focal_loss, (randn(4, 3, device=d), index(0, 1, 2, device=d)), {}), False),
    ("sigmoid-float-class-index", "target",
     lambda d: (focal_cuda.sigmoid_focal_loss, (randn(4, 3, device=d), torch.tensor([0.0, 1.0, 2.0, 1.0], device=d)), {}), False),
    ("sigmoid-target-not-a-tensor", "target",
     lambda d: (focal_cuda.sigmoid_focal_loss, (randn(4, 3, device=d), [0, 1, 2, 1]), {}), False),
    ("sigmoid-class-index-above-background", "target",
     lambda d: (focal_cuda.sigmoid_focal_loss, (randn(4, 3, device=d), index(0, 4, 1, 2, device=d)), {}), True),
    ("sigmoid-class-index-negative", "target",
     lambda d: (focal_cuda.sigmoid_focal_loss, (randn(4, 3, device=d), index(0, -5, 1, 2, device=d)), {}), True),
    ("sigmoid-unknown-reduction", "reduction",
     lambda d: (focal_cuda.sigmoid_focal_loss, (randn(4, 3, device=d), torch.rand(4, 3, device=d)), dict(reduction="avg")), False),
    ("sigmoid-negative-gamma", "gamma",
     lambda d: (focal_cuda.sigmoid_focal_loss, (randn(4, 3, device=d), torch.rand(4, 3, device=d)), dict(gamma=-1.0)), False),
    ("sigmoid-label-smoothing-above-1", "label_smoothing",
     lambda d: (focal_cuda.sigmoid_focal_loss, (randn(4, 3, device=d), torch.rand(4, 3, device=d)), dict(label_smoothing=1.5)), False),
    ("sigmoid-label-smoothing-negative", "label_smoothing",
     lambda d: (focal_cuda.sigmoid_focal_loss, (randn(4, 3, device=d), torch.rand(4, 3, device=d)), dict(label_smoothing=-0.1)), False),
    ("sigmoid-normalizer-not-0-dim", "normalizer",
     lambda d: (focal_cuda.sigmoid_focal_loss, (randn(4, 3, device=d), torch.rand(4, 3, device=d)),
                dict(reduction="mean", normalizer=torch.ones(2, device=d))), False),
    # softmax_focal_loss
    ("softmax-integer-input", "input",
     lambda d: (focal_cuda.softmax_focal_loss, (torch.randint(0, 3, (4, 3), device=d), index(0, 1, 2, 1, device=d)), {}), False),
    ("softmax-0-dim-input", "input",
     lambda d: (focal_cuda.softmax_focal_loss, (torch.tensor(1.0, device=d), torch.tensor(0, device=d)), {}), False),
    ("softmax-float-class-index", "target",
     lambda d: (focal_cuda.softmax_focal_loss, (randn(4, 3, device=d), torch.tensor([0.0, 1.0, 2.0, 1.0], device=d)), {}), False),
    ("softmax-target-batch-mismatch", "target",
     lambda d: (focal_cuda.softmax_focal_loss, (randn(4, 3, device=d), index(0, 1, 2, device=d)), {}), False),
    ("softmax-target-spatial-mismatch", "target",
     lambda d: (focal_cuda.softmax_focal_loss, (randn(2, 3, 5, device=d), torch.zeros(2, 4, dtype=torch.long, device=d)), {}), False),
    ("softmax-unbatched-target-not-0-dim", "target",
     lambda d: (focal_cuda.softmax_focal_loss, (randn(3, device=d), index(1, device=d)), {}), False),
    ("softmax-class-index-equal-C", "target",
     lambda d: (focal_cuda.softmax_focal_loss, (randn(4, 3, device=d), index(0, 3, 1, 2, device=d)), {}), True),
    ("softmax-class-index-negative", "target",
     lambda d: (focal_cuda.softmax_focal_loss, (randn(4, 3, device=d), index(0, -3, 1, 2, device=d)), {}), True),
    ("softmax-spatial-class-index-out-of-range", "target",
     lambda d: (focal_cuda.softmax_focal_loss, (randn(2, 3, 4, device=d), torch.full((2, 4), 7, device=d)), {}), True),
    ("softmax-alpha-list-wrong-length", "alpha",
     lambda d: (focal_cuda.softmax_focal_loss, (randn(4, 3, device=d), index(0, 1, 2, 1, device=d)), dict(alpha=[1.0, 2.0])), False),
    ("softmax-alpha-tensor-wrong-length", "alpha",
     lambda d: (focal_cuda.softmax_focal_loss, (randn(4, 3, device=d), index(0, 1, 2, 1, device=d)),
                dict(alpha=torch.ones(4, 1, device=d))), False),
    ("softmax-unknown-reduction", "reduction",
     lambda d: (focal_cuda.softmax_focal_loss, (randn(4, 3, device=d), index(0, 1, 2, 1, device=d)), dict(reduction="batchmean")), False),
    ("softmax-negative-gamma", "gamma",
     lambda d: (focal_cuda.softmax_focal_loss, (randn(4, 3, device=d), index(0, 1, 2, 1, device=d)), dict(gamma=-0.5)), False),
    ("softmax-label-smoothing-above-1", "label_smoothing",
     lambda d: (focal_cuda.softmax_focal_loss, (randn(4, 3, device=d), index(0, 1, 2, 1, device=d)), dict(label_smoothing=2.0)), False),
    ("softmax-normalizer-not-0-dim", "normalizer",
     lambda d: (focal_cuda.softmax_focal_loss, (randn(4, 3, device=d), index(0, 1, 2, 1, device=d)),
                dict(normalizer=torch.ones(3, device=d))), False),
    # binary_focal_loss
    ("binary-integer-prob", "prob",
     lambda d: (focal_cuda.binary_focal_loss, (torch.randint(0, 2, (4, 3), device=d), torch.rand(4, 3, device=d)), {}), False),
    ("binary-target-shape", "target",
     lambda d: (focal_cuda.binary_focal_loss, (torch.rand(4, 3, device=d), torch.rand(3, 4, device=d)), {}), False),
    ("binary-unknown-reduction", "reduction",
     lambda d: (focal_cuda.binary_focal_loss, (torch.rand(4, 3, device=d), torch.rand(4, 3, device=d)), dict(reduction="elementwise")), False),
    ("binary-negative-gamma", "gamma",
     lambda d: (focal_cuda.binary_focal_loss, (torch.rand(4, 3, device=d), torch.rand(4, 3, device=d)), dict(gamma=-2.0)), False),
    # non-tensor, non-number and non-finite arguments
    ("sigmoid-input-not-a-tensor", "input",
     lambda d: (focal_cuda.sigmoid_focal_loss, ([[0.0, 1.0]], torch.rand(1, 2, device=d)), {}), False),
    ("sigmoid-0-dim-input-with-class-index", "input",
     lambda d: (focal_cuda.sigmoid_focal_loss, (torch.tensor(0.5, device=d), torch.tensor(0, device=d)), {}), False),
    ("sigmoid-complex-target", "target",
     lambda d: (focal_cuda.sigmoid_focal_loss, (randn(4, 3, device=d), torch.zeros(4, 3, dtype=torch.complex64, device=d)), {}), False),
    ("sigmoid-gamma-not-a-number", "gamma",
     lambda d: (focal_cuda.sigmoid_focal_loss, (randn(4, 3, device=d), torch.rand(4, 3, device=d)), dict(gamma="2")), False),
    ("sigmoid-gamma-infinite", "gamma",
     lambda d: (focal_cuda.sigmoid_focal_loss, (randn(4, 3, device=d), torch.rand(4, 3, device=d)), dict(gamma=float("inf"))), False),
    ("sigmoid-alpha-nan", "alpha",
     lambda d: (focal_cuda.sigmoid_focal_loss, (randn(4, 3, device=d), torch.rand(4, 3, device=d)), dict(alpha=float("nan"))), False),
    ("sigmoid-ignore-index-not-an-int", "ignore_index",
     lambda d: (focal_cuda.sigmoid_focal_loss, (randn(4, 3, device=d), index(0, 1, 2, 1, device=d)), dict(ignore_index=1.5)), False),
    ("sigmoid-normalizer-not-a-number", "normalizer",
     lambda d: (focal_cuda.sigmoid_focal_loss, (randn(4, 3, device=d), torch.rand(4, 3, device=d)),
                dict(reduction="mean", normalizer="4")), False),
    ("sigmoid-reduction-not-a-string", "reduction",
     lambda d: (focal_cuda.sigmoid_focal_loss, (randn(4, 3, device=d), torch.rand(4, 3, device=d)), dict(reduction=None)), False),
    ("softmax-zero-classes", "input",
     lambda d: (focal_cuda.softmax_focal_loss, (randn(4, 0, device=d), index(0, 0, 0, 0, device=d)), {}), False),
    ("softmax-alpha-complex-tensor", "alpha",
     lambda d: (focal_cuda.softmax_focal_loss, (randn(4, 3, device=d), index(0, 1, 2, 1, device=d)),
                dict(alpha=torch.ones(3, dtype=torch.complex64, device=d))), False),
    ("softmax-alpha-nan-in-list", "alpha",
     lambda d: (focal_cuda.softmax_focal_loss, (randn(4, 3, device=d), index(0, 1, 2, 1, device=d)),
                dict(alpha=[1.0, float("nan"), 1.0])), False),
    ("softmax-alpha-wrong-type", "alpha",
     lambda d: (focal_cuda.softmax_focal_loss, (randn(4, 3, device=d), index(0, 1, 2, 1, device=d)), dict(alpha=object())), False),
    ("softmax-label-smoothing-nan", "label_smoothing",
     lambda d: (focal_cuda.softmax_focal_loss, (randn(4, 3, device=d), index(0, 1, 2, 1, device=d)),
                dict(label_smoothing=float("nan"))), False),
    ("binary-prob-not-a-tensor", "prob",
     lambda d: (focal_cuda.binary_focal_loss, ([0.5, 0.5], torch.rand(2, device=d)), {}), False),
    ("binary-complex-target", "target",
     lambda d: (focal_cuda.binary_focal_loss, (torch.rand(4, 3, device=d), torch.zeros(4, 3, dtype=torch.complex64, device=d)), {}), False),
    ("binary-alpha-infinite", "alpha",
     lambda d: (focal_cuda.binary_focal_loss, (torch.rand(4, 3, device=d), torch.rand(4, 3, device=d)), dict(alpha=float("inf"))), False),
    ("sigmoid-normalizer-zero", "normalizer",
     lambda d: (focal_cuda.sigmoid_focal_loss, (randn(4, 3, device=d), torch.rand(4, 3, device=d)),
                dict(reduction="mean", normalizer=0.0)), False),
    ("softmax-normalizer-negative-int", "normalizer",
     lambda d: (focal_cuda.softmax_focal_loss, (randn(4, 3, device=d), index(0, 1, 2, 1, device=d)),
                dict(normalizer=-4)), False),
    ("softmax-normalizer-nan", "normalizer",
     lambda d: (focal_cuda.softmax_focal_loss, (randn(4, 3, device=d), index(0, 1, 2, 1, device=d)),
                dict(normalizer=float("nan"))), False),
    ("binary-prob-above-1", "prob",
     lambda d: (focal_cuda.binary_focal_loss, (torch.tensor([0.5, 1.5], device=d), torch.rand(2, device=d)), {}), True),
    ("binary-prob-negative-float16", "prob",
     lambda d: (focal_cuda.binary_focal_loss, (torch.tensor([-0.5, 0.5], dtype=torch.float16, device=d),
                                               torch.rand(2, device=d).half()), {}), True),
    # modules: the error may come from the constructor or from forward
    ("FocalLoss-size-average-string", "size_average",
     lambda d: (lambda x, t: focal_cuda.FocalLoss(3, size_average="sum")(x, t), (randn(4, 3, device=d), index(0, 1, 2, 1, device=d)), {}), False),
    ("FocalLoss-alpha-wrong-length", "alpha",
     lambda d: (lambda x, t: focal_cuda.FocalLoss(3, alpha=[1.0, 2.0]).to(d)(x, t), (randn(4, 3, device=d), index(0, 1, 2, 1, device=d)), {}), False),
    ("FocalLoss-unknown-reduction", "reduction",
     lambda d: (lambda x, t: focal_cuda.FocalLoss(3, reduction="avg")(x, t), (randn(4, 3, device=d), index(0, 1, 2, 1, device=d)), {}), False),
    ("SigmoidFocalLoss-negative-gamma", "gamma",
     lambda d: (lambda x, t: focal_cuda.SigmoidFocalLoss(gamma=-1.0)(x, t), (randn(4, 3, device=d), torch.rand(4, 3, device=d)), {}), False),
    ("BCEFocalLoss-unknown-reduction", "reduction",
     lambda d: (lambda x, t: focal_cuda.BCEFocalLoss(reduction="avg")(x, t), (torch.rand(4, 3, device=d), torch.rand(4, 3, device=d)), {}), False),
]


@pytest.mark.parametrize("argument,build,cpu_only", [pytest.param(*c[1:], id=c[0]) for c in cases])
def test_bad_input_raises_naming_the_argument(device, argument, build, cpu_only):
    if cpu_only and device != "cpu":
        pytest.skip("an out-of-range class index or probability is a device-side assert on CUDA")
    function, args, kwargs = build(device)
    tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
    before = [t.clone() for t in tensors]
    with pytest.raises(ERRORS, match=f"(?i){argument}"):
        function(*args, **kwargs)
    for tensor, original in zip(tensors, before):
        assert torch.equal(tensor, original), "a failed call modified its input"

