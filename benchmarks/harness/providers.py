"""The implementations a case times against each other, each as a callable (x, target) -> loss.

  focal_cuda     the package's fused kernels (CUDA on a GPU, vectorised C++ on CPU)
  naive          the implementations people copy (benchmarks/naive.py), run eagerly
  compiled       torch.compile of the best plain-PyTorch formulation
  cross_entropy  PyTorch's own loss kernels (less work than a focal loss)
  roofline       one torch.exp over the input into a preallocated buffer: the floor
  reference      focal_cuda.reference (plain, numerically careful PyTorch), run eagerly
"""
import glob
import importlib.util
import logging
import os
import sys

import torch
import torch.nn.functional as F

from . import BENCHMARKS, REPO
from .cases import ALPHA, ASL, GAMMA, VFL

PROVIDERS = ["focal_cuda", "naive", "compiled", "cross_entropy", "roofline", "reference"]
BASELINES = ["roofline", "cross_entropy", "compiled", "naive"]  # the "x P" columns


def load_module_from_file(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


naive = load_module_from_file("focal_bench_naive", os.path.join(BENCHMARKS, "naive.py"))


def import_focal_cuda():
    """Return (focal_cuda module or None, reference module, why focal_cuda is missing or None)."""
    # a checkout with an in-place build is what the user just built: prefer it over an installed copy
    if glob.glob(os.path.join(REPO, "focal_cuda", "_C*.so")) and REPO not in sys.path:
        sys.path.insert(0, REPO)
    try:
        import focal_cuda
        import focal_cuda.reference as reference

        return focal_cuda, reference, None
    except Exception as error:  # ImportError, or the loader's RuntimeError when _C is missing
        if REPO not in sys.path:
            sys.path.insert(0, REPO)
            try:
                import focal_cuda
                import focal_cuda.reference as reference

                return focal_cuda, reference, None
            except Exception as second_error:
                error = second_error
        reference_path = os.path.join(REPO, "focal_cuda", "reference.py")
        reference = load_module_from_file("focal_bench_reference", reference_path)
        return None, reference, f"{type(error).__name__}: {error}"


def quiet_compiler():
    """torch.compile settings for a benchmark: few log lines, and no fallback to eager after many graphs."""
    # the reference validates class indices with a data-dependent check: torch.compile splits the graph
    # there (one line in the notes below, not a page of warnings)
    torch._logging.set_logs(dynamo=logging.ERROR)
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    if hasattr(torch, "_dynamo"):
        # every (preset, size, dtype, mode) is its own graph; keep compiling rather than falling back to eager
        for limit_name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                           "accumulated_cache_size_limit"):
            if hasattr(torch._dynamo.config, limit_name):
                setattr(torch._dynamo.config, limit_name, 4096)


def reference_function(op, reference):
    """The reference function for an op family and how to call it with (x, target, reduction)."""
    if op in ("sigmoid_dense", "sigmoid_index"):
        return lambda x, t, reduction: reference.sigmoid_focal_loss(x, t, ALPHA, GAMMA, reduction)
    if op in ("softmax", "softmax_spatial"):
        return lambda x, t, reduction: reference.softmax_focal_loss(x, t, None, GAMMA, reduction)
    if op == "varifocal_index":
        return lambda x, t, reduction: reference.varifocal_loss(x, t[0], reduction=reduction, score=t[1], **VFL)
    if op == "asymmetric":
        return lambda x, t, reduction: reference.asymmetric_loss(x, t, reduction=reduction, **ASL)
    return lambda x, t, reduction: reference.binary_focal_loss(x, t, ALPHA, GAMMA, reduction)


def plain_function(op, C, reduction):
    """The best plain-PyTorch formulation of an op family as (x, target) -> loss: what torch.compile gets."""
    if op == "sigmoid_dense":
        return lambda x, t: naive.sigmoid_focal_loss(x, t, ALPHA, GAMMA, reduction)
    if op == "sigmoid_index":
        # index targets need a dense one-hot for torchvision's formula (background = extra class, dropped)
        return lambda x, t: naive.sigmoid_focal_loss(x, F.one_hot(t, C + 1)[..., :C].to(x.dtype), ALPHA, GAMMA,
                                                     reduction)
    if op in ("softmax", "softmax_spatial"):
        return lambda x, t: naive.softmax_focal_loss_plain(x, t, GAMMA, reduction)
    if op in ("varifocal_index", "asymmetric"):
        return family_naive(op, reduction)  # the original formula is already the plain one
    return naive.BCEFocalLoss(gamma=GAMMA, alpha=ALPHA, reduction=reduction)


def family_naive(op, reduction):
    """The focal family as written in its original repository (mmdet's varifocal, Alibaba-MIIL's ASL)."""
    if op == "varifocal_index":
        return lambda x, t: naive.varifocal_index_score(x, t[0], t[1], reduction=reduction, **VFL)
    return naive.AsymmetricLoss(gamma_neg=ASL["gamma_neg"], gamma_pos=ASL["gamma_pos"], clip=ASL["clip"],
                                reduction=reduction)


def naive_function(op, C, reduction):
    """What users run today for an op family, eagerly."""
    if op in ("varifocal_index", "asymmetric"):
        return family_naive(op, reduction)
    if op == "sigmoid_dense":
        return lambda x, t: naive.sigmoid_focal_loss(x, t, ALPHA, GAMMA, reduction)
    if op == "sigmoid_index":
        # what users do for index targets: build the one-hot (background = extra class, dropped)
        def sigmoid_index(x, t):
            dense = F.one_hot(t, C + 1)[..., :C].to(x.dtype)
            return naive.sigmoid_focal_loss(x, dense, ALPHA, GAMMA, reduction)

        return sigmoid_index
    if op == "softmax":
        return naive.FocalLoss(C, gamma=GAMMA, size_average=(reduction == "mean"))
    if op == "softmax_spatial":
        # the classic class takes (N, C): users move channels last and flatten first
        module = naive.FocalLoss(C, gamma=GAMMA, size_average=(reduction == "mean"))
        return lambda x, t: module(x.permute(0, 2, 3, 1).reshape(-1, C), t.reshape(-1))
    return naive.BCEFocalLoss(gamma=GAMMA, alpha=ALPHA, reduction=reduction)


def focal_cuda_function(focal_cuda, op, reduction):
    if op == "varifocal_index":
        return lambda x, t: focal_cuda.varifocal_loss(x, t[0], reduction=reduction, score=t[1], **VFL)
    if op == "asymmetric":
        return lambda x, t: focal_cuda.asymmetric_loss(x, t, reduction=reduction, **ASL)
    if op in ("sigmoid_dense", "sigmoid_index"):
        return lambda x, t: focal_cuda.sigmoid_focal_loss(x, t, ALPHA, GAMMA, reduction)
    if op in ("softmax", "softmax_spatial"):
        return lambda x, t: focal_cuda.softmax_focal_loss(x, t, None, GAMMA, reduction)
    return lambda x, t: focal_cuda.binary_focal_loss(x, t, ALPHA, GAMMA, reduction)


def cross_entropy_function(op, C, reduction, x, target):
    if op in ("softmax", "softmax_spatial"):
        return lambda x, t: F.cross_entropy(x, t, reduction=reduction)
    if op == "binary":
        return lambda x, t: F.binary_cross_entropy(x, t, reduction=reduction)
    # dense targets made once, outside the timing: the baseline gets the favourable case
    if op == "varifocal_index":
        dense = F.one_hot(target[0], C + 1)[..., :C].to(x.dtype) * target[1].unsqueeze(-1)
    elif op in ("sigmoid_dense", "asymmetric"):
        dense = target
    else:
        dense = F.one_hot(target, C + 1)[..., :C].to(x.dtype)
    return lambda x, _: F.binary_cross_entropy_with_logits(x, dense, reduction=reduction)


class Providers:
    """Makes each provider's callable for a case; keeps torch.compile's functions (one per op family and
    reduction: shapes and dtypes recompile under its guards) and its failures (op, dtype) across cases."""

    def __init__(self, focal_cuda, reference, reduction):
        self.focal_cuda, self.reference, self.reduction = focal_cuda, reference, reduction
        self.compiled = {}
        self.compile_failures = {}

    def make(self, name, preset, x, target):
        """A callable (x, target) -> loss for one provider on one preset (x, target: the case's tensors)."""
        op, C, reduction = preset["op"], preset["C"], self.reduction
        if name == "focal_cuda":
            return focal_cuda_function(self.focal_cuda, op, reduction)
        if name == "naive":
            return naive_function(op, C, reduction)
        if name == "cross_entropy":
            return cross_entropy_function(op, C, reduction, x, target)
        if name == "roofline":
            out = torch.empty_like(x, requires_grad=False)
            return lambda x, _: torch.exp(x.detach(), out=out)
        if name == "reference":
            function = reference_function(op, self.reference)
            return lambda x, t: function(x, t, reduction)
        if name == "compiled":
            key = (op, reduction)
            if key not in self.compiled:
                # dynamic=False: a kernel specialised to each shape, torch.compile's best case
                self.compiled[key] = torch.compile(plain_function(op, C, reduction), dynamic=False)
            return self.compiled[key]
        raise ValueError(f"provider: expected one of {PROVIDERS}, given {name!r}")
