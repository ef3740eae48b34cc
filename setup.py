"""Builds focal_cuda._C: the CPU kernels always, the CUDA kernels when a CUDA toolkit is found.

Environment:
  FOCAL_CUDA_CPU_ONLY=1    skip CUDA even when a toolkit is present
  FOCAL_CUDA_FORCE_CUDA=1  require CUDA; fail when no toolkit is found
  TORCH_CUDA_ARCH_LIST     GPU architectures (default "8.0;9.0+PTX")
  CUDA_HOME                toolkit root (default: /usr/local/cuda, else the directory above the real nvcc)
  FOCAL_CUDA_SANITIZE=1    build the host code with AddressSanitizer and UndefinedBehaviorSanitizer
  FOCAL_CUDA_EMULATE=1     also build focal_cuda._emulated: the CUDA kernels compiled as host C++ against
                           the SIMT emulator (csrc/emulate), run on CPU tensors by focal_cuda.testing
  MAX_JOBS                 parallel compile jobs (ninja)
"""
import glob
import os
import re
import shutil
import subprocess
import sys

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"


def _flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _real_nvcc_root():
    """The toolkit root of the nvcc on PATH, following a wrapper script that execs the real binary."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    path = os.path.realpath(nvcc)
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
        if head.startswith(b"#!"):  # a wrapper script (as on these machines): find the binary it runs
            match = re.search(rb"(/\S+)/bin/nvcc\b", head)
            if match:
                path = os.path.join(match.group(1).decode(), "bin", "nvcc")
    except OSError:
        return None
    root = os.path.dirname(os.path.dirname(path))
    return root if os.path.isfile(os.path.join(root, "bin", "nvcc")) else None


def find_cuda_home():
    for candidate in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda", _real_nvcc_root()):
        if candidate and os.path.isfile(os.path.join(candidate, "bin", "nvcc")):
            return os.path.realpath(candidate)
    return None


def want_cuda():
    if _flag("FOCAL_CUDA_CPU_ONLY"):
        return None
    cuda_home = find_cuda_home()
    if cuda_home is None and _flag("FOCAL_CUDA_EMULATE"):
        sys.exit("FOCAL_CUDA_EMULATE=1 needs the CUDA toolkit's headers: set CUDA_HOME to the toolkit root")
    if cuda_home is None and _flag("FOCAL_CUDA_FORCE_CUDA"):
        sys.exit("FOCAL_CUDA_FORCE_CUDA=1 but no CUDA toolkit was found: set CUDA_HOME to the toolkit root "
                 "(the directory holding bin/nvcc)")
    return cuda_home


CUDA_HOME = want_cuda()
if CUDA_HOME is not None:
    # torch.utils.cpp_extension reads CUDA_HOME when imported; set it first so the wrapper nvcc is not guessed.
    os.environ["CUDA_HOME"] = CUDA_HOME
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCH_LIST)

from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def write_build_info():
    """focal_cuda/_build_info.py records what this build compiled (read by `python -m focal_cuda`)."""
    arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST", "") if CUDA_HOME else ""
    cuda_version = ""
    if CUDA_HOME:
        match = re.search(r"release (\d+\.\d+)", subprocess.run([os.path.join(CUDA_HOME, "bin", "nvcc"), "--version"],
                                                                  capture_output=True, text=True).stdout)
        cuda_version = match.group(1) if match else "unknown"
    with open(os.path.join(HERE, "focal_cuda", "_build_info.py"), "w") as f:
        f.write("# Written by setup.py at build time.\n")
        f.write(f"CUDA_ARCH_LIST = {arch_list!r}\n")
        f.write(f"CUDA_VERSION = {cuda_version!r}\n")


def emulated_extension(cxx, link):
    """focal_cuda._emulated: csrc/cuda's launchers and kernels built by g++ against csrc/emulate/simt.h."""
    cuda_home = CUDA_HOME or find_cuda_home()
    if cuda_home is None:
        sys.exit("FOCAL_CUDA_EMULATE=1 needs the CUDA toolkit's headers: set CUDA_HOME to the toolkit root")
    flags = cxx + ["-DFOCAL_CUDA_EMULATE", "-DFOCAL_OPS_NAMESPACE=focal_cuda_emulated", "-Wno-unknown-pragmas",
                   "-isystem", os.path.join(cuda_home, "include")]
    return CppExtension("focal_cuda._emulated", sorted(glob.glob("csrc/emulate/*.cpp")),
                        extra_compile_args={"cxx": flags}, extra_link_args=link)


def extensions():
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    # at::parallel_for is an inline template: without OpenMP here it runs serially, whatever torch was built with.
    openmp = ["-fopenmp"]
    cxx = ["-O3", "-fvisibility=hidden"] + openmp
    link = list(openmp)
    if _flag("FOCAL_CUDA_SANITIZE"):
        cxx = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
               "-fno-sanitize-recover=undefined"] + openmp
        link = ["-fsanitize=address,undefined"] + openmp
    extra = [emulated_extension(cxx, link)] if _flag("FOCAL_CUDA_EMULATE") else []
    if CUDA_HOME is None:
        return [CppExtension("focal_cuda._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=link)] + extra
    sources += sorted(glob.glob("csrc/cuda/*.cu") + glob.glob("csrc/cuda/*.cpp"))
    nvcc = ["-O3", "-lineinfo", "--expt-relaxed-constexpr", "-DFOCAL_CUDA_WITH_CUDA"]
    return [CUDAExtension("focal_cuda._C", sources, extra_compile_args={"cxx": cxx + ["-DFOCAL_CUDA_WITH_CUDA"],
                                                                        "nvcc": nvcc}, extra_link_args=link)] + extra


write_build_info()
setup(
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtension},
)
