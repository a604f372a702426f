# Every target works from a fresh clone: the venv is created on demand and the
# package installed into it with the extras the target needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: demo demo-distributed test lint format bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

demo: $(PY)
	$(PIP) install --quiet -e ".[examples]"
	$(PY) examples/train_digits.py

# two processes on this machine (MLX's ring backend over 127.0.0.1), started by MLX's launcher
demo-distributed: $(PY)
	$(PIP) install --quiet -e ".[examples]"
	$(VENV)/bin/mlx.launch -n 2 $(PY) examples/train_distributed.py

test: $(PY)
	$(PIP) install --quiet -e ".[test,examples]"
	$(PY) -m pytest

lint: $(PY)
	$(PIP) install --quiet -e ".[dev]"
	$(PY) -m ruff check lucid tests examples benchmarks
	$(PY) -m ruff format --check lucid tests examples benchmarks

format: $(PY)
	$(PIP) install --quiet -e ".[dev]"
	$(PY) -m ruff format lucid tests examples benchmarks
	$(PY) -m ruff check --fix lucid tests examples benchmarks

# the sweep's plot needs matplotlib (in the examples extra)
bench: $(PY)
	$(PIP) install --quiet -e ".[test,examples]"
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
