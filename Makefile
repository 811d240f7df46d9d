# The two commands of the README. Both set themselves up from the lock file (uv.lock) on a fresh machine.
#   make demo   run the main job end to end on the embedded defaults
#   make test   install, lint, type-check and run the whole test suite (what .ci/run calls)
#   make bench  every benchmark of benchmarks/ at full size (about 40 minutes; paste into RESULTS.md)
SHELL := /bin/bash
PYTHON ?= python3
DEMO_ARGS ?=
UV_VERSION := 0.13.9
BOOTSTRAP := .uv-bootstrap
UV := $(BOOTSTRAP)/bin/uv
VENV := .venv
export UV_PYTHON_DOWNLOADS := never
export UV_LINK_MODE := copy

BENCH_ARGS ?=

.PHONY: setup demo test lint typecheck unit bench bench-smoke compat clean

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

# Triggers (ours vs the http provider's HttpSensorTrigger), import cost, S3 transfer, the Kling view's list
# endpoint: tables on stdout.
bench: setup
	$(VENV)/bin/python benchmarks/bench_triggers.py $(BENCH_ARGS)
	$(VENV)/bin/python benchmarks/bench_triggers.py --rows 2000:10:0 2000:10:0.05 2000:10:0.2 \
		--contenders kling:bound=16 kling:bound=64 kling:bound=100 kling:bound=256
	$(VENV)/bin/python benchmarks/bench_imports.py --runs 40 --importtime
	$(VENV)/bin/python benchmarks/bench_s3_transfer.py --sizes 10M 200M --rounds 3
	$(VENV)/bin/python benchmarks/bench_ui.py --tasks 1000 --rounds 50

# Every benchmark once at a tiny size: proves they still run (no figure is checked). About a minute.
bench-smoke: setup
	$(VENV)/bin/python benchmarks/bench_triggers.py --rows 20:0.2:0 20:0.2:0.05 --contenders anchor kling kling:bound=2
	$(VENV)/bin/python benchmarks/bench_imports.py --runs 2
	$(VENV)/bin/python benchmarks/bench_s3_transfer.py --sizes 1M --rounds 1
	$(VENV)/bin/python benchmarks/bench_ui.py --tasks 20 --rounds 3

# The Airflow minors pyproject claims, each in its own venv (.venv-compat-3.X, from the hash-pinned
# ci/compat/airflow-3.X.txt; 3.3 is .venv): import every module, parse the example DAGs, run the operator,
# sensor, trigger and transfer unit tests. A table on stdout; fails if a claimed version fails.
COMPAT_VERSIONS ?= 3.0 3.1 3.2 3.3
COMPAT_ARGS ?=
compat: setup
	$(PYTHON) scripts/compat_check.py --uv $(UV) --python "$$($(PYTHON) -c 'import sys; print(sys.executable)')" \
		--versions $(COMPAT_VERSIONS) $(COMPAT_ARGS)

clean:
	rm -rf $(BOOTSTRAP) $(VENV) .venv-compat-* .airflow .demo .pytest_cache .mypy_cache .ruff_cache
