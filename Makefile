# Two commands do all set-up: `make demo` and `make test` (each creates .venv if missing).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dlzoo-installed

.PHONY: demo test lint clean-runs

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)  ## train the embedded default (LeNet-5 on scikit-learn's 8x8 digits), offline
	$(VENV)/bin/dlzoo train digits-lenet5

test: $(STAMP)  ## the whole test suite
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests

clean-runs:
	rm -rf runs
