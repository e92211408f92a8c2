# hrsam-bench tasks. `make help` lists them. Every task creates .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The tested environment: every package pinned (make lock). LOCK=0 installs the newest releases
# that pyproject.toml admits instead (untested combinations; `make test-latest` tries them).
LOCK ?= 1
LOCKFILE := requirements-cpu.lock
PIP_VERSION ?= 26.3
TORCH_VERSION ?= $(shell sed -n 's/^torch==//p' requirements-cpu.in)
# Extra pip arguments for torch, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?=
# pytest-xdist: one worker per core, a test module's tests on one worker (its module fixtures built
# once); XDIST= runs in this process. pytest-randomly shuffles the order (its seed is printed; repeat
# one with PYTEST_ARGS="--randomly-seed=N"; -p no:randomly keeps the file order).
XDIST ?= -n auto --dist loadscope
# extra key=value overrides for the demo sweep, e.g. DEMO_ARGS="train.steps=3 eval.ts=64"
DEMO_ARGS ?=
# arguments of the pretraining (python -m ablations.pretrain --help), e.g. PRETRAIN_ARGS="hrsam_tiny"
PRETRAIN_ARGS ?=
# arguments of the app (python -m hrsam.app --help), e.g. TRY_ARGS="--port 9000"
TRY_ARGS ?=
PIP_COMPILE := $(VENV)/bin/pip-compile -q --allow-unsafe --strip-extras --no-emit-index-url \
	--no-emit-find-links --extra test --extra dev

.DEFAULT_GOAL := help
.PHONY: help setup demo try test test-fast pretrain test-latest lock lock-check lint format bench bench-attention \
	bench-scan bench-cycle-scan bench-train-step bench-backbone mlflow-ui slurm-up slurm-down info \
	gpu-check

help: ## list the tasks
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-16s %s\n", $$1, $$2}'

$(VENV)/.installed-lock$(LOCK): pyproject.toml $(LOCKFILE)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q pip==$(PIP_VERSION)
ifeq ($(LOCK),1)
	# torch first, from the lock (its CPU build; TORCH_PIP_ARGS may name the CPU index)
	$(PY) -m pip install -q $$(grep -E '^torch==' $(LOCKFILE)) $(TORCH_PIP_ARGS)
	$(PY) -m pip install -q -r $(LOCKFILE)
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m pip check
else
	# torch first: the project's torch>=2.6 then installs nothing more (no CUDA wheels)
	$(PY) -m pip install -q torch==$(TORCH_VERSION) $(TORCH_PIP_ARGS)
	$(PY) -m pip install -q --upgrade --upgrade-strategy eager -e '.[test,dev]'
endif
	rm -f $(VENV)/.installed-lock*
	touch $@

setup: $(VENV)/.installed-lock$(LOCK) ## create .venv from requirements-cpu.lock (LOCK=0: newest releases instead)

demo: setup ## the main job: the window_size sweep on the embedded default, then its report
	$(PY) -m ablations.sweep grid=window_size $(DEMO_ARGS)

try: setup ## try the trained models by clicking on them: a web page on http://127.0.0.1:8765
	$(PY) -m hrsam.app $(TRY_ARGS)

mlflow-ui: setup ## browse the runs: MLflow UI on http://127.0.0.1:5000
	@echo "runs: http://127.0.0.1:5000/#/experiments?workflowType=machine_learning (a sweep prints its own page)"
	$(PY) -m mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

slurm-up: ## start a single-node SLURM cluster on this machine (root; installs slurm-wlm + munge)
	bash slurm/local/start.sh

slurm-down: ## stop the local SLURM cluster
	bash slurm/local/stop.sh

test: setup ## run the test suite on every core, in random order (CPU; gpu tests skip with their reason)
	HRSAM_LOCKED=$(LOCK) $(PY) -m pytest -q $(XDIST) $(PYTEST_ARGS)

test-fast: setup ## the inner loop: unit and in-process tests (no slow, no SLURM/Chromium/torchrun/server)
	HRSAM_LOCKED=$(LOCK) $(PY) -m pytest -q $(XDIST) -m "not slow and not external" $(PYTEST_ARGS)

pretrain: setup ## pretrain the tiny presets (ablations/conf/pretrain.yaml) -> hrsam/pretrained/ (hours on a CPU; resumes)
	$(PY) -m ablations.pretrain $(PRETRAIN_ARGS)

test-latest: ## the tests on the newest release of every dependency (torch stays $(TORCH_VERSION)), in .venv-latest
	rm -rf .venv-latest
	$(MAKE) test VENV=.venv-latest LOCK=0
	.venv-latest/bin/pip freeze --exclude-editable > .venv-latest/versions.txt
	@echo "newest versions tested: .venv-latest/versions.txt (diff against $(LOCKFILE))"

lock: setup ## recompile requirements-cpu.lock from pyproject.toml + requirements-cpu.in (keeps pins that still fit)
	$(PIP_COMPILE) -o $(LOCKFILE) pyproject.toml requirements-cpu.in

lock-check: setup ## fail when requirements-cpu.lock is not what `make lock` would write
	cp $(LOCKFILE) $(VENV)/lock-check.txt
	$(PIP_COMPILE) -o $(VENV)/lock-check.txt pyproject.toml requirements-cpu.in
	sed '/^#/d' $(LOCKFILE) > $(VENV)/lock-check.want
	sed '/^#/d' $(VENV)/lock-check.txt > $(VENV)/lock-check.got
	@diff -u $(VENV)/lock-check.want $(VENV)/lock-check.got \
		|| (echo "requirements-cpu.lock is stale for pyproject.toml: run 'make lock'" && exit 1)

lint: setup ## ruff lint and format check, function and module length
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) tools/function_length.py

format: setup ## ruff format and autofix
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

info: setup ## what runs here: torch, CUDA, every kernel and scan backend with its probed status
	$(PY) -m hrsam.info

gpu-check: setup ## on a GPU (< 5 min): gpu tests, kernels in bf16, scans, encoders at ts 1024-4096 -> benchmarks/results/<gpu>/
	$(PY) -m benchmarks.gpu_check

bench: bench-attention bench-scan bench-cycle-scan bench-train-step bench-backbone ## all benchmarks, recorded under benchmarks/results/

bench-attention: setup ## attention pattern x kernel x grid table (benchmarks/results/<device>/)
	$(PY) -m benchmarks.attention

bench-scan: setup ## selective-scan backends vs sequence length (benchmarks/results/<device>/)
	$(PY) -m benchmarks.scan

bench-cycle-scan: setup ## the cycle-scan mix, fused vs repeated, training and inference
	$(PY) -m benchmarks.cycle_scan

bench-train-step: setup ## the tiny recipe's training step part by part, paired variants
	$(PY) -m benchmarks.train_step

bench-backbone: setup ## encoder latency / memory / FLOP efficiency, SAM vs HRSAM (slow on CPU)
	$(PY) -m benchmarks.backbone
