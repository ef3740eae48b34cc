"""Presets (the workloads a focal loss serves), the inputs that stand for them and the sizes a run takes."""
import torch

ALPHA = 0.25
GAMMA = 2.0

# name -> op family, class count, sizes (CPU, GPU), the size --quick uses (CPU, GPU; None: not in --quick),
# and optionally the one dtype the preset runs in. sizes are rows N for (N, C) presets, H = W for segmentation.
PRESETS = {
    "det_dense": dict(op="sigmoid_dense", C=80, cpu=[16384, 65536, 262144], gpu=[1 << 20, 1 << 22, 1 << 23],
                      quick=(65536, 1 << 23),
                      about="dense detection, sigmoid, (anchors*batch, 80) logits, dense float targets"),
    "det_index": dict(op="sigmoid_index", C=80, cpu=[16384, 65536, 262144], gpu=[1 << 20, 1 << 22, 1 << 23],
                      quick=(65536, 1 << 23),
                      about="dense detection, sigmoid, (anchors*batch, 80) logits, class-index targets (80 = background)"),
    "cls_c10": dict(op="softmax", C=10, cpu=[65536, 262144, 1048576], gpu=[1 << 23, 1 << 25, 1 << 26],
                    quick=None, about="classification, softmax, (N, 10)"),
    "cls_c80": dict(op="softmax", C=80, cpu=[16384, 65536, 262144], gpu=[1 << 20, 1 << 22, 1 << 23],
                    quick=(65536, 1 << 23), about="classification, softmax, (N, 80)"),
    "cls_c1000": dict(op="softmax", C=1000, cpu=[1024, 8192, 32768], gpu=[1 << 16, 1 << 18, 1 << 19],
                      quick=(8192, 1 << 18), about="classification, softmax, (N, 1000)"),
    "cls_c32000": dict(op="softmax", C=32000, cpu=[32, 256, 1024], gpu=[2048, 8192, 16384],
                       quick=(256, 16384), about="language-model vocabulary, softmax, (N, 32000)"),
    "seg": dict(op="softmax_spatial", C=19, cpu=[128, 256, 512], gpu=[512, 1024, 2048],
                quick=(256, 2048), about="segmentation, softmax, (8, 19, H, W)"),
    "seg_bf16": dict(op="softmax_spatial", C=19, cpu=[128, 256, 512], gpu=[512, 1024, 2048],
                     quick=(256, 2048), dtype="bf16", about="segmentation, softmax, (8, 19, H, W), bfloat16 logits"),
    "binary": dict(op="binary", C=80, cpu=[16384, 65536, 262144], gpu=[1 << 20, 1 << 22, 1 << 23],
                   quick=None, about="multi-label on probabilities, (N, 80) after a sigmoid, dense targets"),
    "vfl_index": dict(op="varifocal_index", C=80, cpu=[16384, 65536, 262144], gpu=[1 << 20, 1 << 22, 1 << 23],
                      quick=(65536, 1 << 22),
                      about="varifocal (VarifocalNet), (anchors, 80), class-index targets + IoU score per anchor"),
    "asl_c80": dict(op="asymmetric", C=80, cpu=[16384, 65536, 262144], gpu=[1 << 20, 1 << 22, 1 << 23],
                    quick=(65536, 1 << 22), about="asymmetric loss (ASL), multi-label (N, 80), dense 0/1 targets"),
}
# The focal family's presets: ASL's repository defaults (gamma_pos 1, gamma_neg 4, clip 0.05), mmdet's varifocal.
ASL = dict(gamma_pos=1.0, gamma_neg=4.0, clip=0.05)
VFL = dict(alpha=0.75, gamma=2.0)
MODES = ["forward", "backward", "full"]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}


def quick_selection(preset_names, device):
    """The presets --quick runs when none are named: those with a quick size on this device."""
    quick_index = 1 if device.type == "cuda" else 0
    return [p for p in preset_names if (PRESETS[p]["quick"] or (None, None))[quick_index] is not None]


def preset_sizes(preset, device, quick=False, sizes=None, scale=1.0):
    """The sizes a run takes for one preset: its own (CPU or GPU), the quick one, or --sizes; times --scale."""
    quick_index = 1 if device.type == "cuda" else 0
    chosen = preset["gpu" if device.type == "cuda" else "cpu"]
    if quick:
        # a preset named explicitly but without a quick size runs at its smallest size
        chosen = [(preset["quick"] or (None, None))[quick_index] or chosen[0]]
    if sizes:
        chosen = sizes
    if scale != 1.0:
        chosen = [max(1, int(size * scale)) for size in chosen]
    return chosen


def preset_shape(preset, size, device):
    if preset["op"] == "softmax_spatial":
        return (8, preset["C"], size, size)
    return (size, preset["C"])


def make_inputs(preset, size, dtype, device, seed=0):
    """Logits (or probabilities) and targets shaped like the workload the preset stands for."""
    generator = torch.Generator(device=device).manual_seed(seed)
    shape = preset_shape(preset, size, device)
    C = preset["C"]
    op = preset["op"]
    logits = (torch.randn(shape, device=device, generator=generator) * 2).to(dtype)
    if op == "sigmoid_dense":
        # about 1 positive class in 80 per anchor, as in dense detectors
        target = (torch.rand(shape, device=device, generator=generator) < 1.0 / C).to(dtype)
        return logits, target
    if op == "sigmoid_index":
        # most anchors are background (class C), the rest carry one positive class
        rows = shape[0]
        positive = torch.randint(0, C, (rows,), device=device, generator=generator)
        is_background = torch.rand(rows, device=device, generator=generator) < 0.9
        target = torch.where(is_background, torch.full_like(positive, C), positive)
        return logits, target
    if op == "softmax":
        return logits, torch.randint(0, C, (shape[0],), device=device, generator=generator)
    if op == "softmax_spatial":
        target_shape = (shape[0],) + shape[2:]
        return logits, torch.randint(0, C, target_shape, device=device, generator=generator)
    if op == "binary":
        prob = torch.sigmoid(logits.float()).clamp(1e-3, 1 - 1e-3).to(dtype)
        target = (torch.rand(shape, device=device, generator=generator) < 1.0 / C).to(dtype)
        return prob, target
    if op == "varifocal_index":
        # (labels, IoU score): most anchors background (C), positives scored by their box's IoU
        rows = shape[0]
        positive = torch.randint(0, C, (rows,), device=device, generator=generator)
        is_background = torch.rand(rows, device=device, generator=generator) < 0.9
        labels = torch.where(is_background, torch.full_like(positive, C), positive)
        return logits, (labels, torch.rand(rows, device=device, generator=generator).to(dtype))
    if op == "asymmetric":
        # multi-label: a few positive labels per sample, as in MS-COCO/NUS-WIDE
        return logits, (torch.rand(shape, device=device, generator=generator) < 3.0 / C).to(dtype)
    raise ValueError(f"preset op: expected one of sigmoid_dense, sigmoid_index, softmax, softmax_spatial, binary, varifocal_index, asymmetric, given {op!r}")
