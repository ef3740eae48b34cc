"""Numerical quality: error against a float64 reference, for focal_cuda and the naive versions as users run them.

    python benchmarks/numerics.py [--device cpu|cuda] [--seed 0] [--csv docs/numerics_cpu.csv]

For each loss (sigmoid, softmax, binary), implementation (focal_cuda, naive = benchmarks/naive.py, the code people
copy today), input set (typical logits, saturated logits) and setting, the error of the per-element loss and of its
gradient, printed as a markdown table and written as CSV (one row per loss x implementation x logits x setting).

Settings, as the code runs in training:
- fp32, bf16, fp16: the logits (or probabilities) in that dtype, no autocast (a model cast with .to(dtype));
- autocast bf16, autocast fp16: low-precision logits (what a Linear returns under autocast) and the loss called
  inside torch.autocast(device, dtype), so the naive code's ops follow autocast's own rules (some run in float32).

Errors, both reported:
- per element: max_i |value_i - ref_i| / max(|ref_i|, smallest normal of the dtype) -- the worst relative error
  of any single element; large where an element's true value is tiny (a 1e-16 loss off by 1e-19 is 1e-3);
- relative to max |ref|: max_i |value_i - ref_i| / max_j |ref_j| -- what an error does to the batch's loss and
  gradient as a whole, so it does not overstate the error of tiny elements.
"inf"/"nan" with count/total when the implementation returns non-finite values where the reference is finite.

- Every implementation gets the same inputs, rounded once to the setting's dtype; the reference is
  focal_cuda.reference evaluated on those rounded values in float64, so the error is the implementation's own, not
  the rounding of its input.
- alpha = 0.25 (sigmoid, binary) / none (softmax), gamma = 2, hard 0/1 targets (where every formula agrees).
- Gradient: d(sum of per-element losses)/d(input). Binary gradients are compared where 0 < p < 1 and
  p (1 - p) > 1e-12 (at p = 0 or 1 focal_cuda follows torch.nn.BCELoss's convention, the reference its clamp's).
"""
import argparse
import contextlib
import csv
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import naive  # noqa: E402  (benchmarks/naive.py)

import focal_cuda  # noqa: E402
from focal_cuda import reference  # noqa: E402

# setting name -> (dtype of the inputs, autocast dtype or None)
SETTINGS = {
    "fp32": (torch.float32, None),
    "bf16": (torch.bfloat16, None),
    "fp16": (torch.float16, None),
    "autocast bf16": (torch.bfloat16, torch.bfloat16),
    "autocast fp16": (torch.float16, torch.float16),
}
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


def errors(value, expected, dtype, mask=None):
    """(max per-element relative error, max error relative to max |reference|, non-finite count, elements)."""
    value = value.detach().to("cpu", torch.float64)
    expected = expected.detach().to("cpu", torch.float64)
    if mask is not None:
        value, expected = value[mask], expected[mask]
    assert torch.isfinite(expected).all(), "the float64 reference must be finite on these inputs"
    non_finite = ~torch.isfinite(value)
    if non_finite.any():
        bad = float("nan") if value.isnan().any() else float("inf")
        return bad, bad, int(non_finite.sum()), value.numel()
    if value.numel() == 0:
        return 0.0, 0.0, 0, 0
    difference = (value - expected).abs()
    per_element = difference / expected.abs().clamp(min=torch.finfo(dtype).tiny)
    of_max = difference / expected.abs().max().clamp(min=torch.finfo(dtype).tiny)
    return float(per_element.max()), float(of_max.max()), 0, value.numel()


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


def format_error(result, which):
    per_element, of_max, non_finite, total = result
    if non_finite:
        return f"**{per_element}** ({non_finite}/{total})"
    return f"{per_element if which == 'element' else of_max:.1e}"


def measure(device, seed):
    """[{loss, implementation, logits, setting, loss_per_element, loss_of_max, grad_per_element, grad_of_max,
    non_finite_loss, non_finite_grad, elements}] (errors as floats; nan/inf when non-finite)."""
    rows = []
    for loss_name, problem in PROBLEMS.items():
        for kind in ["typical", "saturated"]:
            generator = torch.Generator().manual_seed(seed)
            values, implementations, ground_truth, grad_mask = problem(kind, generator)
            for setting, (dtype, autocast_dtype) in SETTINGS.items():
                rounded = values.to(dtype).to(device)
                expected_loss, expected_grad = loss_and_grad(ground_truth, rounded.to(torch.float64).cpu())
                mask = grad_mask(rounded.to(torch.float64).cpu()) if grad_mask else None
                for implementation, function in implementations(dtype).items():
                    row = dict(loss=loss_name, implementation=implementation, logits=kind, setting=setting)
                    context = torch.autocast(torch.device(device).type, dtype=autocast_dtype) if autocast_dtype \
                        else contextlib.nullcontext()
                    try:
                        with context:
                            loss, grad = loss_and_grad(lambda inp: function(inp.to(device)), rounded)
                    except RuntimeError as error:  # e.g. an op without a kernel for this dtype
                        row.update(error=str(error)[:60])
                        rows.append(row)
                        continue
                    loss_errors = errors(loss, expected_loss, dtype)
                    grad_errors = errors(grad, expected_grad, dtype, mask)
                    row.update(loss_per_element=loss_errors[0], loss_of_max=loss_errors[1],
                               grad_per_element=grad_errors[0], grad_of_max=grad_errors[1],
                               non_finite_loss=loss_errors[2], non_finite_grad=grad_errors[2],
                               loss_elements=loss_errors[3], grad_elements=grad_errors[3],
                               loss_dtype=str(loss.dtype).replace("torch.", ""))
                    rows.append(row)
    return rows


def markdown(rows):
    """One line per loss x implementation x logits; per setting two cells (loss, grad), each
    "per element / of max |ref|"."""
    settings = list(SETTINGS)
    header = ["loss", "implementation", "logits"] + [f"{s} {q}" for s in settings for q in ("loss", "grad")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table = {}
    for row in rows:
        table.setdefault((row["loss"], row["implementation"], row["logits"]), {})[row["setting"]] = row
    for key, by_setting in table.items():
        cells = []
        for setting in settings:
            row = by_setting[setting]
            for q in ("loss", "grad"):
                if "error" in row:
                    cells.append("error")
                elif row[f"non_finite_{q}"]:
                    cells.append(f"**{row[f'{q}_per_element']}** ({row[f'non_finite_{q}']}/{row[f'{q}_elements']})")
                else:
                    cells.append(f"{row[f'{q}_per_element']:.1e} / {row[f'{q}_of_max']:.1e}")
        lines.append("| " + " | ".join(list(key) + cells) + " |")
    return "\n".join(lines)


def write_csv(rows, path):
    fields = ["loss", "implementation", "logits", "setting", "loss_dtype", "loss_per_element", "loss_of_max",
              "grad_per_element", "grad_of_max", "non_finite_loss", "non_finite_grad", "loss_elements",
              "grad_elements", "error"]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.3e}" if isinstance(v, float) else v) for k, v in row.items()})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", default=None, help="CSV output (default: docs/numerics_<device>.csv)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")

    rows = measure(args.device, args.seed)
    path = args.csv or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                                    f"numerics_{args.device}.csv")
    write_csv(rows, path)
    print(f"Error vs a float64 reference ({args.device}, torch {torch.__version__}, gamma={GAMMA}, {ROWS} rows); "
          f"each cell: max per-element relative error / max error relative to max |reference|; "
          f"non-finite: count/total. CSV: {os.path.relpath(path)}\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
