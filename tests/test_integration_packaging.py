"""Packaging: `pip wheel --no-build-isolation .` gives a wheel that installs into a fresh virtual
environment, imports there, computes correct losses, and runs `python -m focal_cuda`.

Rebuilds the extension (CPU only, to keep it short), so it is marked slow_build:
    pytest -m slow_build tests/test_integration_packaging.py
"""

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

import focal_cuda

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# what the installed package must compute: a loss and gradient checked against the reference inside the venv
INSTALLED_CHECK = """
import sys, torch, focal_cuda
from focal_cuda import reference
assert focal_cuda.__file__.startswith(sys.prefix), (focal_cuda.__file__, sys.prefix)
logits = torch.randn(16, 5, dtype=torch.float64, requires_grad=True)
target = torch.randint(0, 6, (16,))
loss = focal_cuda.sigmoid_focal_loss(logits, target, reduction="mean")
expected = reference.sigmoid_focal_loss(logits, target, reduction="mean")
torch.testing.assert_close(loss, expected)
torch.testing.assert_close(torch.autograd.grad(loss, logits)[0], torch.autograd.grad(expected, logits)[0])
print(focal_cuda.__version__, focal_cuda.__file__)
"""


def run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, (
        f"{' '.join(map(str, command))} exited {result.returncode}\n"
        f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}"
    )
    return result.stdout


def clean_environment():
    """The caller's environment without anything that would make the source checkout importable."""
    environment = dict(os.environ, FOCAL_CUDA_CPU_ONLY="1", MAX_JOBS=os.environ.get("MAX_JOBS", "2"))
    environment.pop("PYTHONPATH", None)
    return environment


@pytest.mark.slow_build
def test_wheel_builds_installs_into_fresh_venv_and_runs(tmp_path):
    # build from a copy of the working tree, so in-place build products (build/, _C*.so) neither leak
    # into the wheel nor get overwritten
    source = tmp_path / "source"
    shutil.copytree(
        REPO_ROOT,
        source,
        ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", "*.so", ".pytest_cache"),
    )
    wheel_dir = tmp_path / "wheels"
    environment = clean_environment()
    run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", str(source), "-w", str(wheel_dir)],
        env=environment, cwd=tmp_path)

    wheels = sorted(wheel_dir.glob("focal_cuda-*.whl"))
    assert len(wheels) == 1, f"expected one focal_cuda wheel, got {[w.name for w in wheel_dir.iterdir()]}"
    wheel = wheels[0]
    assert wheel.name.startswith(f"focal_cuda-{focal_cuda.__version__}-"), wheel.name
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(metadata_name).decode()
    for required in ("focal_cuda/__init__.py", "focal_cuda/__main__.py", "focal_cuda/reference.py"):
        assert required in names, f"{required} missing from {wheel.name}: {names}"
    assert any(n.startswith("focal_cuda/_C") and n.endswith(".so") for n in names), f"no compiled _C in {names}"
    assert any(".dist-info/" in n and n.endswith("LICENSE") for n in names), f"no LICENSE in {names}"
    assert f"Version: {focal_cuda.__version__}" in metadata
    assert "Requires-Dist: torch" in metadata

    # fresh venv that sees the system torch; pip comes from the system site-packages too
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], env=environment)
    venv_python = str(venv / "bin" / "python")
    run([venv_python, "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)], env=environment, cwd=tmp_path)

    # run from a directory without the source tree on the path, so the installed copy is what imports
    installed = run([venv_python, "-c", INSTALLED_CHECK], env=environment, cwd=tmp_path)
    version, location = installed.split()
    assert version == focal_cuda.__version__
    assert location.startswith(str(venv)), location

    report = run([venv_python, "-m", "focal_cuda"], env=environment, cwd=tmp_path)
    assert report.startswith(f"focal_cuda {focal_cuda.__version__}\n"), report
    assert "CPU only" in report, report  # built with FOCAL_CUDA_CPU_ONLY=1
    assert "CPU kernels: ok" in report, report
    assert ("GPU: none visible" in report) or ("GPU 0:" in report), report
