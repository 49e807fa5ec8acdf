# `make train` runs the default job; `make test` the fast tests (the inner loop), `make test-full` every test (CI).
# All create .venv on first use. JOBS: pytest-xdist workers (tests/conftest.py gives each one torch thread).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
JOBS ?= 2
# --no-loadscope-reorder: the groups start in tests/xdist_groups.py's order (the longest first)
PYTEST := $(PY) -m pytest -n $(JOBS) --dist loadgroup --no-loadscope-reorder
# the project's bytecode, compiled once: where PYTHONDONTWRITEBYTECODE=1 (this CI's shell) each of the ~50 interpreters
# the tests start would compile it again, about 1 s of CPU each
BYTECODE := $(PY) -m compileall -q lstm_zoo hydra_plugins scripts tests train.py eval.py predict.py export.py

.PHONY: train test test-full bench lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,sweep,export]"
	touch $@

train: $(VENV)/.installed
	$(PY) train.py $(ARGS)

test: $(VENV)/.installed
	$(BYTECODE)
	$(PYTEST) -m "not slow" $(ARGS)

test-full: $(VENV)/.installed
	$(BYTECODE)
	$(PYTEST) --durations=25 $(ARGS)

bench: $(VENV)/.installed
	$(PY) scripts/benchmark.py $(ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
