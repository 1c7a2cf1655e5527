# Two commands do everything on a fresh machine:
#   make demo   sets up .venv (if needed) and runs the main job on the embedded digits data
#   make test   sets up .venv (if needed) and runs the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fedforget-installed

.PHONY: setup demo test test-fast lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

# The demo's story: 5 clients train; before round 3 client 0 withdraws 10% of its samples; Forsaken
# unlearns them; the server also retrains without them to show where a model that never saw them lands
# (retrain-reference); training goes on. Override with e.g. make demo ARGS="--dataset mnist".
ARGS ?= --dataset memorise --set withdrawals=3:0:samples:0.1 retrain-reference=1

demo: setup
	$(PY) -m simulations.run $(ARGS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
