# Two commands do all set-up on a fresh machine:  make demo  (the main job)  and  make test.
# Each creates .venv with pip if it is missing (torch 2.14.1 / torchvision 0.29.1 as pinned).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export MLFLOW_DISABLE_TELEMETRY ?= true
export DO_NOT_TRACK ?= 1
export RAY_AUTH_MODE ?= disabled

.PHONY: demo app ui test test-integration lint format bench clean-venv

# pip byte-compiles every package (about 7 GB) on one core, half of the install: --no-compile
# skips that, and Python compiles each module the first time it is imported (cached in
# __pycache__ from then on). For the main job that costs about 2 s of its imports (16.1 s cold,
# 14.4 s warm), less than compiling everything ahead (28.3 s on 2 cores).
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile -e ".[dev,train,sweeps,slurm,app]"
	touch $@

# The test suites import most of the install (Ray, Gradio, DeepSpeed, MLflow, Selenium) in many
# processes, so they compile it ahead, on every core, once: the unit suite's first run took 189 s
# without this, 119 s with it. compileall's status is 1 for the few third-party files that are
# not Python 3, which pip skips the same way; a .pyc it fails to write only costs speed, so the
# status is logged, not fatal.
$(VENV)/.compiled: $(VENV)/.installed
	$(PY) -m compileall -q -j 0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
		> $(VENV)/compileall.log 2>&1 || echo "compileall: a few third-party files are not Python 3 and stay uncompiled, as with pip ($(VENV)/compileall.log)"
	touch $@

demo: $(VENV)/.installed
	$(PY) -m vdi.launch --local --config synthetic_demo

# The demo page on the main job's model (http://127.0.0.1:7860; python -m vdi.app --help for more).
app: $(VENV)/.installed
	$(PY) -m vdi.app --checkpoint runs/synthetic/best/model.pt

# The MLflow UI over the main job's store (http://127.0.0.1:5000; a run prints its review address).
ui: $(VENV)/.installed
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/runs/mlflow.db

lint: $(VENV)/.compiled
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(VENV)/.installed
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# The fast suite (< 5 minutes on 2 cores): lint, then every test not marked integration.
test: lint
	$(PY) -m pytest -m "not integration" -q -rs

# Slower end-to-end tests (subprocesses, DeepSpeed, SLURM, Ray); CI runs them after `make test`.
test-integration: $(VENV)/.compiled
	$(PY) -m pytest -m "integration" -q

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_core.py

clean-venv:
	rm -rf $(VENV)
