# Two entry points a user needs: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of PyTorch; set TORCH_SPEC= (empty) to keep a torch you installed yourself.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo lint typecheck test test-all clean

$(BIN)/crossctr: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@if [ -n "$(TORCH_SPEC)" ] && ! $(BIN)/python -c "import torch" 2>/dev/null; then \
		$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"; fi
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

setup: $(BIN)/crossctr

demo: setup
	$(BIN)/crossctr demo --out runs/demo

# ruff (lint rules and formatting, configured in pyproject.toml) over the code, tests and benchmarks,
# then mypy over src/crossctr. mypy keeps its cache in .mypy_cache: a run after a small edit takes
# seconds, a fresh checkout's first run a few minutes (it reads torch's and numpy's stubs once).
lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

# mypy alone (also run by `lint`).
typecheck: setup
	$(BIN)/mypy

test: setup lint
	$(BIN)/python -m pytest

test-all: setup
	$(BIN)/python -m pytest -m ""

# Speed benchmark against peer libraries (benchmarks/README.md). Its own venv, so the peers
# (DeepCTR-Torch, torch-rechub, FuxiCTR: the `bench` extra) never enter .venv. BENCH_ARGS
# passes flags, e.g. make bench BENCH_ARGS="--rows 200000 --threads 2".
BENCH_VENV ?= .venv-bench
BENCH_ARGS ?=
.PHONY: bench
bench:
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	@if [ -n "$(TORCH_SPEC)" ] && ! $(BENCH_VENV)/bin/python -c "import torch" 2>/dev/null; then \
		$(BENCH_VENV)/bin/python -m pip install --quiet "$(TORCH_SPEC)"; fi
	$(BENCH_VENV)/bin/python -m pip install --quiet -e ".[bench]"
	$(BENCH_VENV)/bin/python benchmarks/speed.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) runs build src/*.egg-info
