# Two commands do all set-up: `make demo` and `make test` (each creates .venv if missing).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dlzoo-installed

.PHONY: demo test lint bench clean-runs

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)  ## train the embedded default (LeNet-5 on scikit-learn's 8x8 digits), offline
	$(VENV)/bin/dlzoo train digits-lenet5

test: $(STAMP)  ## the whole test suite
	$(PY) -m pytest -q

bench: $(STAMP)  ## training throughput: dlzoo vs plain PyTorch vs Keras (makes benchmarks/.venv-keras once)
	$(PY) benchmarks/throughput.py --write docs/benchmarks.md

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples

clean-runs:
	rm -rf runs
