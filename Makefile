# Quick start: `make bench` (the benchmark) and `make test` (the test suite). Both install what they need
# (torch, ninja, pytest, hypothesis, matplotlib) and build focal_cuda in place first (scripts/build.sh: one line
# per compiled file, the full log in build/build.log, its last lines and path printed when the build fails).
PYTHON ?= python
STAMP := build/.focal_cuda_installed
SOURCES := $(shell find csrc -type f) setup.py pyproject.toml
# The CUDA kernels also run on CPU tensors under the SIMT emulator (tests/test_emulated_cuda.py) wherever the
# CUDA toolkit's headers are: FOCAL_CUDA_EMULATE=0 skips that build.
CUDA_ROOT := $(or $(CUDA_HOME),/usr/local/cuda)
FOCAL_CUDA_EMULATE ?= $(shell test -e $(CUDA_ROOT)/include/cuda_runtime_api.h && echo 1 || echo 0)
export FOCAL_CUDA_EMULATE

.PHONY: install bench test

install: $(STAMP)

$(STAMP): $(SOURCES)
	$(PYTHON) -m pip install -q "torch>=2.5" ninja pytest hypothesis
	# torchvision: its RetinaNet/FCOS losses run with focal_cuda swapped in (tests/test_torchvision_detection.py)
	$(PYTHON) -m pip install -q torchvision
	$(PYTHON) -m pip install -q matplotlib || echo "matplotlib unavailable: benchmark plots will be skipped"
	# quiet build: one line per compiled unit; the full `pip install -v -e .` output goes to build/build.log
	MAX_JOBS=$${MAX_JOBS:-2} PYTHON=$(PYTHON) bash scripts/build.sh
	mkdir -p build && touch $(STAMP)

bench: install
	$(PYTHON) benchmarks/bench.py --quick

test: install
	$(PYTHON) -m pytest -q tests
