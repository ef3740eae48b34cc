"""Every CUDA kernel path on small shapes, compared with the CPU kernels on the same inputs and dtype.

    python scripts/cuda_smoke.py [--small] [--device cuda|emulated]

Compares the loss and the applied gradient grad * grad_scale (the CPU forward folds the mean into grad and
returns grad_scale 1; the CUDA forward leaves it in grad_scale). Unaligned cases are sliced on the device,
so they stay unaligned there. --device emulated runs the CUDA kernels on the SIMT emulator (a dry run of
this script without a GPU). --small (under compute-sanitizer): fewer dtypes and gammas, every path still
runs. Exit status 1 when any comparison fails.
"""
import argparse
import sys

import torch

import focal_cuda  # noqa: F401  (loads the ops)

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--small", action="store_true")
parser.add_argument("--device", choices=["cuda", "emulated"], default="cuda")
options = parser.parse_args()

cpu_ops = torch.ops.focal_cuda
if options.device == "emulated":
    from focal_cuda import _ops

    device_ops, dev = _ops.load_emulated(), "cpu"
    device_ops.emulator_configure(3, False, 2)  # several blocks on these small shapes
else:
    device_ops, dev = torch.ops.focal_cuda, "cuda"
failures = []
cases = 0
torch.manual_seed(0)
TOLERANCE = {torch.float64: 1e-9, torch.float32: 2e-4, torch.float16: 3e-3, torch.bfloat16: 2e-2}


def applied_gradient(outputs):
    loss, grad, grad_scale = outputs
    return grad.double() * grad_scale.double()


def relative_error(a, b):
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    same = (a == b) | (a.isnan() & b.isnan())  # equal infinities (fp16 overflow) and NaNs match
    return torch.where(same, 0.0, (a - b).abs() / (b.abs() + 1)).max().item() if a.numel() else 0.0


def run(name, op_name, args, dtype, unaligned=False):
    """op on the device vs on CPU; `unaligned` slices the first two tensor arguments by one element there."""
    global cases
    cases += 1
    device_args = []
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            if unaligned and i < 2:
                padded = torch.cat([a.reshape(-1)[:1], a.reshape(-1)]).to(dev)
                a_dev = padded[1:].view(a.shape)
                assert a_dev.data_ptr() % 16 != 0
            else:
                a_dev = a.to(dev)
            device_args.append(a_dev)
        else:
            device_args.append(a)
    try:
        got = getattr(device_ops, op_name)(*device_args)
    except Exception as exc:  # noqa: BLE001  (report and go on: one verdict for all paths)
        failures.append(f"{name}: raised {type(exc).__name__}: {exc}".splitlines()[0])
        return
    want = getattr(cpu_ops, op_name)(*args)
    tol = TOLERANCE[dtype]
    for what, a, b in (("loss", got[0], want[0]), ("grad * grad_scale", applied_gradient(got), applied_gradient(want))):
        if a.shape != b.shape:
            failures.append(f"{name} {what}: shape {tuple(a.shape)} vs {tuple(b.shape)}")
        elif not relative_error(a, b) <= tol:
            failures.append(f"{name} {what}: max rel err {relative_error(a, b):.3g} > {tol:g}")


dtypes = [torch.float32, torch.float16] if options.small else [torch.float32, torch.float16, torch.bfloat16,
                                                                torch.float64]
for dtype in dtypes:
    opmath = torch.float64 if dtype == torch.float64 else torch.float32
    for reduction in (0, 1, 2):
        for gamma in ((2.0, 0.5) if options.small else (0.0, 2.0, 0.5, 3.0)):
            tag = f"{dtype} red={reduction} gamma={gamma}"
            # sigmoid dense: aligned, odd length (tail), unaligned on the device (scalar path)
            for shape in ((64, 80), (7, 13)):
                x = torch.randn(shape, dtype=dtype) * 4
                t = torch.rand(shape, dtype=dtype)
                run(f"sigmoid dense {shape} {tag}", "sigmoid_focal_fwd", (x, t, 0.25, gamma, reduction, -100, 0.1,
                                                                          None, True), dtype)
            x = torch.randn(64, 80, dtype=dtype) * 4
            t = torch.rand(64, 80, dtype=dtype)
            run(f"sigmoid dense unaligned {tag}", "sigmoid_focal_fwd", (x, t, 0.25, gamma, reduction, -100, 0.0, None,
                                                                        True), dtype, unaligned=True)
            # sigmoid class index: background (C) and ignored rows, C not a multiple of the vector width
            for C in (80, 81, 3, 1):
                x = torch.randn(50, C, dtype=dtype) * 4
                t = torch.randint(0, C + 1, (50,))
                t[::7] = -100
                normalizer = torch.tensor(17.0, dtype=opmath) if reduction == 1 and C == 81 else None
                run(f"sigmoid index C={C} {tag}", "sigmoid_focal_fwd", (x, t, 0.25, gamma, reduction, -100, 0.05,
                                                                        normalizer, True), dtype)
            # binary on probabilities, including exact 0 and 1
            p = torch.rand(33, 17, dtype=dtype)
            p[0, :4] = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=dtype)
            tt = (torch.rand(33, 17) > 0.5).to(dtype)
            run(f"binary {tag}", "binary_focal_fwd", (p, tt, 0.25, gamma, reduction, True), dtype)
            # softmax rows (lane groups of 1..32, block per row), unbatched, spatial; alpha, smoothing
            for shape in ((37, 10), (16, 64), (9, 1), (5, 3000), (13,), (4, 5, 6, 7), (3, 2000, 3)):
                C = shape[0] if len(shape) == 1 else shape[1]
                x = torch.randn(shape, dtype=dtype) * 3
                t = torch.randint(0, C, () if len(shape) == 1 else (shape[0],) + shape[2:])
                if t.dim() > 0:
                    t.view(-1)[::5] = -100
                alpha = torch.rand(C, dtype=opmath)
                for smoothing in (0.0, 0.1):
                    for a in (None, alpha):
                        run(f"softmax {shape} s={smoothing} alpha={a is not None} {tag}", "softmax_focal_fwd",
                            (x, t, a, gamma, reduction, -100, smoothing, None, True), dtype)
            x = torch.randn(6, 10, dtype=dtype)
            run(f"softmax all ignored {tag}", "softmax_focal_fwd",
                (x, torch.full((6,), -100), None, gamma, reduction, -100, 0.0, None, True), dtype)

# determinism: same inputs, bitwise identical outputs
x = torch.randn(4096, 80).to(dev)
t = torch.randint(0, 81, (4096,)).to(dev)
first = device_ops.sigmoid_focal_fwd(x, t, 0.25, 2.0, 1, -100, 0.0, None, True)
for _ in range(3):
    again = device_ops.sigmoid_focal_fwd(x, t, 0.25, 2.0, 1, -100, 0.0, None, True)
    if not all(torch.equal(a, b) for a, b in zip(first, again)):
        failures.append("sigmoid index mean: not bitwise deterministic")
if dev == "cuda":
    torch.cuda.synchronize()
print(f"{cases} cases, {len(failures)} failures")
for f in failures[:50]:
    print("FAIL", f)
sys.exit(1 if failures else 0)
