"""Accuracy at the edges: worst per-element relative error of loss and gradient against float64 math on the same
float32 inputs, for focal_cuda (CPU kernels; the CUDA kernels under emulation at the device's worst-case approx
error, hashed and correlated) and for PyTorch's own losses where one computes the same quantity.

    python benchmarks/edge_accuracy.py            # markdown table to stdout

Cases (gamma = 0, alpha off, so each focal loss is exactly a PyTorch loss):
- confident softmax rows [0, -d] with target 0, d = 0..16: F.cross_entropy;
- binary on probabilities p = 1 - 2**-k (k = 1..24) with target 1: F.binary_cross_entropy;
- easy examples on logits x in [-30, 30], targets 0, 1 and 0.999: F.binary_cross_entropy_with_logits;
- ASL (gamma_pos = gamma_neg = 0, clip 0) on those logits: its own formula, log of the rounded sigmoid (as
  written by its authors), next to focal_cuda.
Only elements whose float64 value is a normal float32 are compared.
"""
import contextlib
import math

import torch
import torch.nn.functional as F

import focal_cuda
from focal_cuda import testing

import naive  # benchmarks/naive.py: ASL as its authors wrote it


def worst_relative(actual, truth):
    truth = truth.detach().double()
    actual = actual.detach().double()
    keep = truth.abs() >= torch.finfo(torch.float32).tiny
    return ((actual - truth).abs() / truth.abs())[keep].max().item()


def loss_and_grad(function, x, *args):
    leaf = x.detach().clone().requires_grad_(True)
    loss = function(leaf, *args)
    (grad,) = torch.autograd.grad(loss.sum(), leaf)
    return loss, grad


def cases():
    d = torch.arange(0, 17, dtype=torch.float32)
    rows = torch.stack([torch.zeros_like(d), -d], 1)
    zeros = torch.zeros(len(d), dtype=torch.long)
    p = 1 - torch.pow(2.0, -torch.arange(1, 25, dtype=torch.float32))
    ones = torch.ones_like(p)
    x = torch.linspace(-30, 30, 241)
    t = torch.cat([torch.zeros(241), torch.ones(241), torch.full((241,), 0.999)])
    x3 = x.repeat(3)
    return [
        ("softmax, confident rows d <= 16", rows, (zeros,),
         lambda a, b: focal_cuda.softmax_focal_loss(a, b, gamma=0.0, reduction="none"),
         lambda a, b: F.cross_entropy(a, b, reduction="none"), "F.cross_entropy"),
        ("binary, p = 1 - 2**-k, t = 1", p, (ones,),
         lambda a, b: focal_cuda.binary_focal_loss(a, b, alpha=None, gamma=0.0, reduction="none"),
         lambda a, b: F.binary_cross_entropy(a, b, reduction="none"), "F.binary_cross_entropy"),
        ("sigmoid, |x| <= 30, t in {0, 1, 0.999}", x3, (t,),
         lambda a, b: focal_cuda.sigmoid_focal_loss(a, b, alpha=None, gamma=0.0, reduction="none"),
         lambda a, b: F.binary_cross_entropy_with_logits(a, b, reduction="none"), "BCE with logits"),
        ("asymmetric, |x| <= 30, t in {0, 1}", x3[:482], (t[:482],),
         lambda a, b: focal_cuda.asymmetric_loss(a, b, gamma_pos=0.0, gamma_neg=0.0, clip=0.0, reduction="none"),
         naive.AsymmetricLoss(gamma_neg=0, gamma_pos=0, clip=0.0, reduction="none"), "ASL's own formula"),
    ]


def main():
    modes = [("CPU", contextlib.nullcontext)]
    if testing.emulation_available():
        for mode in ("hashed", "up", "down"):
            modes.append((f"CUDA emulated ({mode})", lambda m=mode: _emulated(m)))
    header = ["case", "quantity"] + [m for m, _ in modes] + ["PyTorch's (on CPU)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, x, args, ours, theirs, theirs_name in cases():
        truth = loss_and_grad(theirs, x.double(), *[a.double() if a.is_floating_point() else a for a in args])
        if "sigmoid" in name or "asymmetric" in name:
            # float64 ground truth from the logit form: PyTorch's own BCE with logits is 1.3 % off at x = -30 in
            # float64 already; ASL clamps its logs at log(eps)
            b = args[0].double()
            xd = x.double().requires_grad_(True)
            log_eps = math.log(1e-8) if "asymmetric" in name else -math.inf
            loss = -(b * F.logsigmoid(xd).clamp(min=log_eps) + (1 - b) * F.logsigmoid(-xd).clamp(min=log_eps))
            truth = (loss, torch.autograd.grad(loss.sum(), xd)[0])
        cells = {"loss": [], "gradient": []}
        for _, context in modes:
            with context():
                loss, grad = loss_and_grad(ours, x, *args)
            cells["loss"].append(worst_relative(loss, truth[0]))
            cells["gradient"].append(worst_relative(grad, truth[1]))
        their_loss, their_grad = loss_and_grad(theirs, x, *args)
        for quantity, value in (("loss", their_loss), ("gradient", their_grad)):
            row = [name, quantity] + [f"{v:.1e}" for v in cells[quantity]]
            row.append(f"{worst_relative(value, truth[0] if quantity == 'loss' else truth[1]):.1e} ({theirs_name})")
            print("| " + " | ".join(row) + " |")


@contextlib.contextmanager
def _emulated(mode):
    with testing.emulated_cuda(), testing.approx_math_error(mode):
        yield


if __name__ == "__main__":
    main()
