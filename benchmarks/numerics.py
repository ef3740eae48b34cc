"""Numerical quality: max relative error against a float64 reference, for focal_cuda and the naive versions.

    python benchmarks/numerics.py [--device cpu|cuda] [--seed 0]

Prints a markdown table: for each loss (sigmoid, softmax, binary), implementation (focal_cuda, naive =
benchmarks/naive.py, the code people copy today) and input set (typical logits, saturated logits), the largest
relative error of the per-element loss and of its gradient, in float32, bfloat16 and float16.

- Every implementation gets the same inputs, rounded once to the dtype; the reference is focal_cuda.reference
  evaluated on those rounded values in float64, so the error is the implementation's own, not the rounding of
  its input. Implementations run in the input's dtype as given (no autocast).
- Error of one element: |value - reference| / max(|reference|, smallest normal of the dtype); "inf"/"nan" when
  the implementation returns a non-finite value where the reference is finite, with the count of such
  elements out of the total.
- alpha = 0.25 (sigmoid, binary) / none (softmax), gamma = 2, hard 0/1 targets (where every formula agrees).
- Gradient: d(sum of per-element losses)/d(input). Binary gradients are compared where 0 < p < 1 and
  p (1 - p) > 1e-12 (at p = 0 or 1 focal_cuda follows torch.nn.BCELoss's convention, the reference its clamp's).
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import naive  # noqa: E402  (benchmarks/naive.py)

import focal_cuda  # noqa: E402
from focal_cuda import reference  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
ALPHA, GAMMA = 0.25, 2.0
ROWS, SIGMOID_CLASSES, SOFTMAX_CLASSES = 512, 8, 32


def logits(kind, shape, generator):
    """typical: N(0, 2); saturated: N(0, 2) plus a quarter of the entries at +-(30..1000), where sigmoid and
    softmax round to exactly 0 or 1 in float32 and below (still finite in float16)."""
    values = torch.randn(shape, generator=generator, dtype=torch.float64) * 2
    if kind == "saturated":
        saturate = torch.rand(shape, generator=generator) < 0.25
        magnitude = 30 + torch.rand(shape, generator=generator, dtype=torch.float64) * 970
        sign = torch.where(torch.rand(shape, generator=generator) < 0.5, -1.0, 1.0).to(torch.float64)
        values = torch.where(saturate, sign * magnitude, values)
    return values


def max_relative_error(value, expected, dtype, mask=None):
    """(max error, number of non-finite values where the reference is finite, elements compared)."""
    value = value.detach().to("cpu", torch.float64)
    expected = expected.detach().to("cpu", torch.float64)
    if mask is not None:
        value, expected = value[mask], expected[mask]
    assert torch.isfinite(expected).all(), "the float64 reference must be finite on these inputs"
    non_finite = ~torch.isfinite(value)
    if non_finite.any():
        return (float("nan") if value.isnan().any() else float("inf")), int(non_finite.sum()), value.numel()
    floor = torch.finfo(dtype).tiny
    error = (value - expected).abs() / expected.abs().clamp(min=floor)
    return float(error.max()) if error.numel() else 0.0, 0, value.numel()


def loss_and_grad(function, input):
    """Per-element loss and d(sum)/d(input) of function(input) (input is a leaf copy)."""
    leaf = input.detach().clone().requires_grad_(True)
    loss = function(leaf)
    (grad,) = torch.autograd.grad(loss.sum(), leaf)
    return loss, grad


# ---- the three losses: inputs, implementations (per-element loss as a function of the input), reference -----

def sigmoid_problem(kind, generator):
    x = logits(kind, (ROWS, SIGMOID_CLASSES), generator)
    target = (torch.rand(x.shape, generator=generator) < 0.2).to(torch.float64)

    def implementations(dtype):
        t = target.to(dtype)
        return {
            "focal_cuda": lambda inp: focal_cuda.sigmoid_focal_loss(inp, t, ALPHA, GAMMA, "none"),
            "naive": lambda inp: naive.sigmoid_focal_loss(inp, t, ALPHA, GAMMA, "none"),
        }

    def ground_truth(inp64):
        return reference.sigmoid_focal_loss(inp64, target, ALPHA, GAMMA, "none")

    return x, implementations, ground_truth, None


def softmax_problem(kind, generator):
    x = logits(kind, (ROWS, SOFTMAX_CLASSES), generator)
    target = torch.randint(0, SOFTMAX_CLASSES, (ROWS,), generator=generator)

    def naive_per_row(inp):
        # the classic class only returns a mean or a sum: one row per call gives each row's loss
        module = naive.FocalLoss(SOFTMAX_CLASSES, gamma=GAMMA, size_average=False)
        return torch.stack([module(inp[i : i + 1], target[i : i + 1]) for i in range(inp.shape[0])])

    def implementations(dtype):
        return {
            "focal_cuda": lambda inp: focal_cuda.softmax_focal_loss(inp, target, None, GAMMA, "none"),
            "naive": naive_per_row,
        }

    def ground_truth(inp64):
        return reference.softmax_focal_loss(inp64, target, None, GAMMA, "none")

    return x, implementations, ground_truth, None


def binary_problem(kind, generator):
    prob = torch.sigmoid(logits(kind, (ROWS, SIGMOID_CLASSES), generator))  # rounded to the dtype later
    target = (torch.rand(prob.shape, generator=generator) < 0.2).to(torch.float64)

    def implementations(dtype):
        t = target.to(dtype)
        return {
            "focal_cuda": lambda p: focal_cuda.binary_focal_loss(p, t, ALPHA, GAMMA, "none"),
            "naive": lambda p: naive.BCEFocalLoss(gamma=GAMMA, alpha=ALPHA, reduction="none")(p, t),
        }

    def ground_truth(p64):
        return reference.binary_focal_loss(p64, target, ALPHA, GAMMA, "none")

    def grad_mask(p64):
        return p64 * (1 - p64) > 1e-12

    return prob, implementations, ground_truth, grad_mask


PROBLEMS = {"sigmoid": sigmoid_problem, "softmax": softmax_problem, "binary": binary_problem}


def format_error(result):
    error, non_finite, total = result
    if non_finite:
        return f"**{error}** ({non_finite}/{total})"
    return f"{error:.1e}"


def measure(device, seed):
    """{(loss, implementation, input kind): {(dtype name, "loss"|"grad"): formatted error}}."""
    table = {}
    for loss_name, problem in PROBLEMS.items():
        for kind in ["typical", "saturated"]:
            generator = torch.Generator().manual_seed(seed)
            values, implementations, ground_truth, grad_mask = problem(kind, generator)
            for dtype_name, dtype in DTYPES.items():
                rounded = values.to(dtype).to(device)
                expected_loss, expected_grad = loss_and_grad(ground_truth, rounded.to(torch.float64).cpu())
                mask = grad_mask(rounded.to(torch.float64).cpu()) if grad_mask else None
                for implementation, function in implementations(dtype).items():
                    row = table.setdefault((loss_name, implementation, kind), {})
                    try:
                        loss, grad = loss_and_grad(lambda inp: function(inp.to(device)), rounded)
                    except RuntimeError as error:  # e.g. an op without a kernel for this dtype
                        row[(dtype_name, "loss")] = row[(dtype_name, "grad")] = f"error: {str(error)[:40]}"
                        continue
                    row[(dtype_name, "loss")] = format_error(max_relative_error(loss, expected_loss, dtype))
                    row[(dtype_name, "grad")] = format_error(max_relative_error(grad, expected_grad, dtype, mask))
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")

    table = measure(args.device, args.seed)
    header = ["loss", "implementation", "logits"] + [f"{d} {q}" for d in DTYPES for q in ("loss", "grad")]
    print(f"Max relative error vs a float64 reference ({args.device}, torch {torch.__version__}, "
          f"gamma={GAMMA}, {ROWS} rows; non-finite: count/total)\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for (loss_name, implementation, kind), row in table.items():
        cells = [row[(d, q)] for d in DTYPES for q in ("loss", "grad")]
        print("| " + " | ".join([loss_name, implementation, kind] + cells) + " |")


if __name__ == "__main__":
    main()
