# The two commands of the README. Both set themselves up from the lock file (uv.lock) on a fresh machine.
#   make demo   run the main job end to end on the embedded defaults
#   make test   install, lint, type-check and run the whole test suite (what .ci/run calls)
SHELL := /bin/bash
PYTHON ?= python3
DEMO_ARGS ?=
UV_VERSION := 0.13.9
BOOTSTRAP := .uv-bootstrap
UV := $(BOOTSTRAP)/bin/uv
VENV := .venv
export UV_PYTHON_DOWNLOADS := never
export UV_LINK_MODE := copy

.PHONY: setup demo test lint typecheck unit clean

$(UV):
	$(PYTHON) -m venv $(BOOTSTRAP)
	$(BOOTSTRAP)/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

setup: $(UV)
	$(UV) sync --frozen --extra dev --python "$$($(PYTHON) -c 'import sys; print(sys.executable)')"

demo: setup
	$(VENV)/bin/python scripts/demo.py $(DEMO_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

unit: setup
	$(VENV)/bin/pytest

test: lint typecheck unit

clean:
	rm -rf $(BOOTSTRAP) $(VENV) .airflow .demo .pytest_cache .mypy_cache .ruff_cache
