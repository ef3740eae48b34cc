"""Shared test configuration: devices, the tolerance table, seeding, and the reference comparison."""

import zlib

import pytest
import torch

# CUDA cases are always collected and skip only when no GPU is usable.
devices = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
    ),
]

floating_dtypes = [torch.float64, torch.float32, torch.bfloat16, torch.float16]

# Comparison of a focal_cuda result in `dtype` against the float64 reference on the same values.
# Low precision: the kernel rounds once for the stored per-element gradient and once after applying
# grad_output, so rtol is about two ulps of the format (bf16 2**-8, fp16 2**-10 with margin).
tolerances = {
    torch.float64: dict(rtol=1e-7, atol=1e-10),
    torch.float32: dict(rtol=1e-4, atol=1e-5),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1e-4),
    torch.float16: dict(rtol=2e-3, atol=2e-5),
}

reductions = ["none", "mean", "sum"]
# Every integer fast path of focal_math.h's dispatch_gamma (0, 1, 2, 3), a fractional gamma below 1 (where
# (1 - p_t)**(gamma - 1) must never be formed), and the generic pow path above 1.
gammas = [0.0, 0.5, 1.0, 2.0, 2.5, 3.0, 5.0]


@pytest.fixture(params=devices)
def device(request):
    return request.param


# Backends the kernel grids (tests/test_grids.py) run on: the CPU kernels, and the CUDA launchers + kernels
# executed on the host through docs/design.md section 6's focal_cuda.testing.emulated_cuda() (same tensors, on CPU).
backends = ["cpu", "emulated_cuda"]


def _emulation():
    """focal_cuda.testing.emulated_cuda, or the reason it cannot run here."""
    try:
        from focal_cuda import testing
    except ImportError as error:
        return None, f"focal_cuda.testing does not exist yet (docs/design.md section 6): {error}"
    if not hasattr(testing, "emulated_cuda"):
        return None, "focal_cuda.testing has no emulated_cuda() yet (docs/design.md section 6)"
    import os

    import focal_cuda

    if os.path.dirname(os.path.abspath(testing.__file__)) != os.path.dirname(os.path.abspath(focal_cuda.__file__)):
        # e.g. an editable install of another checkout lends its focal_cuda.testing to this one
        return None, f"focal_cuda.testing comes from another checkout ({testing.__file__}), not this focal_cuda"
    return testing.emulated_cuda, None


@pytest.fixture(params=backends)
def backend(request):
    """The device string for the test's tensors ("cpu" for both backends); for "emulated_cuda" the test runs
    inside focal_cuda.testing.emulated_cuda(), so every focal_cuda call in it executes the CUDA kernels."""
    if request.param == "cpu":
        yield "cpu"
        return
    emulated_cuda, reason = _emulation()
    if emulated_cuda is None:
        pytest.skip(reason)
    try:
        context = emulated_cuda()
        context.__enter__()
    except RuntimeError as error:  # built without FOCAL_CUDA_EMULATE=1
        pytest.skip(f"emulated CUDA unavailable in this build: {error}")
    try:
        yield "cpu"
    finally:
        context.__exit__(None, None, None)


@pytest.fixture(autouse=True)
def _seed_from_test_id(request):
    """Each test gets its own fixed seed, so a failure reproduces from its node id alone."""
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))


def to_ground_truth(value):
    """float64 copy of a floating tensor (same values), other arguments unchanged."""
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.detach().to(torch.float64)
    return value


def assert_close(actual, expected, dtype, what):
    """Compare in float64 with the tolerance of `dtype`; `what` names the compared quantity."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    torch.testing.assert_close(
        actual.detach().to("cpu", torch.float64),
        expected.detach().to("cpu", torch.float64),
        **tolerances[dtype],
        msg=lambda message: f"{what} ({dtype}): {message}",
    )


def check_against_reference(function, reference_function, input, target, *args, **kwargs):
    """Loss and gradient (under a random grad_output) of `function` in input's dtype equal the
    float64 reference on the same values, within the tolerance table. Returns the loss."""
    dtype = input.dtype
    input_leaf = input.detach().clone().requires_grad_(True)
    loss = function(input_leaf, target, *args, **kwargs)

    truth_leaf = to_ground_truth(input).requires_grad_(True)
    truth_args = [to_ground_truth(a) for a in args]
    truth_kwargs = {k: to_ground_truth(v) for k, v in kwargs.items()}
    expected = reference_function(truth_leaf, to_ground_truth(target), *truth_args, **truth_kwargs)

    assert loss.dtype == dtype, f"loss dtype {loss.dtype} != input dtype {dtype}"
    assert loss.device == input.device
    assert_close(loss, expected, dtype, "loss")

    grad_output = torch.randn(loss.shape, dtype=dtype, device=input.device)
    (grad,) = torch.autograd.grad(loss, input_leaf, grad_output)
    (expected_grad,) = torch.autograd.grad(expected, truth_leaf, grad_output.to(torch.float64))
    assert grad.dtype == dtype
    assert_close(grad, expected_grad, dtype, "gradient")
    return loss


# Hypothesis profiles (tests/test_fuzz.py): HYPOTHESIS_PROFILE=ci (default: reproducible, 4 x 550 examples, about
# a minute on 2 cores) or dev (10x more examples, random seeds, failures saved for replay).
try:
    import os

    from hypothesis import HealthCheck, Phase, settings
except ImportError:  # hypothesis is a test extra; only test_fuzz.py needs it and skips without it
    pass
else:
    settings.register_profile("ci", max_examples=550, deadline=None, derandomize=True, database=None,
                              print_blob=True, suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("dev", max_examples=5500, deadline=None, print_blob=True,
                              suppress_health_check=[HealthCheck.too_slow])
    # scripts/mutation_check.py: the ci examples, stopping at the first failure (no shrinking or explaining)
    settings.register_profile("mutation", parent=settings.get_profile("ci"),
                              phases=[Phase.explicit, Phase.reuse, Phase.generate])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# The emulated device approx-math error: hashed per input, or all up / all down (correlated, for reductions).
APPROX_MODES = ["hashed", "up", "down"]


@pytest.fixture(params=[(b, m) for b in backends for m in APPROX_MODES if b == "emulated_cuda" or m == "hashed"],
                ids=lambda p: p[0] if p[0] == "cpu" else f"{p[0]}-{p[1]}")
def kernels(request):
    """The backend the test's focal_cuda calls run on, with the emulated approx-math error mode."""
    backend, mode = request.param
    if backend == "cpu":
        yield backend
        return
    from focal_cuda import testing
    if not testing.emulation_available():
        pytest.skip("focal_cuda was built without FOCAL_CUDA_EMULATE=1")
    with testing.emulated_cuda(), testing.approx_math_error(mode):
        yield f"{backend}-{mode}"
