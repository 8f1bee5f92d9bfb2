# Two commands do everything on a fresh machine:  make demo  |  make test
# Both create .venv/ on first use (torch/torchvision from constraints.txt) and reuse it after.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.samir-installed

.PHONY: demo test test-fast test-all lint bench peers clean-venv

# No wheel cache: the venv is ~7 GB (torch 2.14.1 is a CUDA build) and a cache would add its downloads
# on top of that on a disk that CI shares with others.
export PIP_NO_CACHE_DIR := 1

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip setuptools wheel
	$(VENV)/bin/pip install -q -c constraints.txt torch torchvision
	# sam2 (a monailabel dependency) ships only as source; build it against the pinned torch, no CUDA
	SAM2_BUILD_CUDA=0 $(VENV)/bin/pip install -q -c constraints.txt --no-build-isolation sam2
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[label,test]'
	touch $(STAMP)

# The classical peers ANTs SyN and elastix (`peers` extra, ~1.7 GB installed): the `ants`/`elastix` rows
# of `samir evaluate` and their tests (skipped without them). CI adds them where its disk has room.
peers: $(STAMP)
	$(VENV)/bin/pip install -q -c constraints.txt antspyx itk-elastix

demo: $(STAMP)
	$(VENV)/bin/samir demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -m "not slow" -q

test-all: $(STAMP)
	$(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/python -m ruff check custom tests

bench: $(STAMP)
	$(VENV)/bin/samir bench

clean-venv:
	rm -rf $(VENV)
