# hrsam-bench tasks. `make help` lists them. Every task creates .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
# Extra pip arguments for torch, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?=
# extra key=value overrides for the demo sweep, e.g. DEMO_ARGS="train.steps=3 eval.ts=64"
DEMO_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup demo test lint format bench bench-attention bench-scan bench-backbone \
	mlflow-ui slurm-up slurm-down

help: ## list the tasks
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-16s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: the project's torch>=2.6 then installs nothing more (no CUDA wheels)
	$(PY) -m pip install -q torch==$(TORCH_VERSION) $(TORCH_PIP_ARGS)
	$(PY) -m pip install -q -e '.[test,dev]'
	touch $@

setup: $(VENV)/.installed ## create .venv: torch $(TORCH_VERSION) first, then the project with test and dev extras

demo: setup ## the main job: the window_size sweep on the embedded default, then its report
	$(PY) -m ablations.sweep grid=window_size $(DEMO_ARGS)

mlflow-ui: setup ## browse the runs: MLflow UI on http://127.0.0.1:5000
	$(PY) -m mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

slurm-up: ## start a single-node SLURM cluster on this machine (root; installs slurm-wlm + munge)
	bash slurm/local/start.sh

slurm-down: ## stop the local SLURM cluster
	bash slurm/local/stop.sh

test: setup ## run the test suite (CPU; gpu tests skip with their reason)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: setup ## ruff lint and format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup ## ruff format and autofix
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: bench-attention bench-scan bench-backbone ## all benchmarks, recorded under benchmarks/results/

bench-attention: setup ## attention pattern x kernel x grid table (benchmarks/results/<device>/)
	$(PY) -m benchmarks.attention

bench-scan: setup ## selective-scan backends vs sequence length (benchmarks/results/<device>/)
	$(PY) -m benchmarks.scan

bench-backbone: setup ## encoder latency / memory / FLOP efficiency, SAM vs HRSAM (slow on CPU)
	$(PY) -m benchmarks.backbone
