# `make demo` and `make test` create .venv when it is missing, install, and run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-slow install clean peer-venv peer-benchmark

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: the CPU build is on local disk; an unpinned torch pulls CUDA.
	$(BIN)/pip install -qq "torch==2.13.0"
	$(BIN)/pip install -qq -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/vldistill run

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -q

clean:
	rm -rf $(VENV) runs .pytest_cache

# torchdistill's own environment for benchmarks/peer (it needs torchvision, which does not
# import beside our pinned torch): torch 2.14.1 + torchvision 0.29.1 + torchdistill 1.1.5, ~6 GB
peer-venv: .venv-peer/.installed-stamp

.venv-peer/.installed-stamp:
	test -x .venv-peer/bin/python || $(PYTHON) -m venv .venv-peer
	.venv-peer/bin/pip install -qq "torch==2.14.1" "torchvision==0.29.1" "torchdistill==1.1.5"
	touch $@

peer-benchmark: $(STAMP) peer-venv
	$(BIN)/python benchmarks/peer/run.py
