# The two commands a new user needs: `make demo` and `make test`. Both set themselves up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-fast demo serve serve-model deploy lint dvc-deps clean gpu-check tune bench bench-quick

# Bytecode: pip installs without compiling (--no-compile: about 50 s of a fresh install, spent on the
# ~5 GB of packages, most of whose modules nothing here imports); Python compiles a module the first time
# it is imported and keeps the result. PYTHONDONTWRITEBYTECODE is cleared for the same reason: the tests
# and the demo start hundreds of Python processes (Ray workers, pipeline stages), and with it set each
# of them would compile the same sources again.
export PYTHONDONTWRITEBYTECODE :=

$(STAMP): pyproject.toml constraints.txt scripts/setup-system.sh
	bash scripts/setup-system.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-compile --upgrade pip
	# torch/torchvision first: on the team's machines pip takes them from local disk.
	$(PY) -m pip install -q --no-compile torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q --no-compile -c constraints.txt -e ".[dev]"
	touch $@

install: $(STAMP)

# Everything (what CI runs): the unit tier and the integration tier (real Ray / MLflow / Prefect / DVC),
# on two pytest-xdist workers: one module (or the modules sharing one expensive fixture) per unit of
# work, long scenarios first (tests/common/parallel.py). TEST_WORKERS=1 runs it in this process.
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -q -p no:cacheprovider $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadgroup) --durations=25

# The unit tier only: tests that start no Ray, no server and no subprocess. tests/common/tiers.py
# fails any test that starts one without the `integration` marker, so this tier stays honest.
# On the same two workers as `make test` (the tier is CPU-bound: 114 s against 198 s in one process).
test-fast: install
	$(PY) -m pytest -q -p no:cacheprovider -m "not integration" $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadgroup) --durations=10

# The whole default pipeline (synthetic data, tiny ViT, cached features, 1 Ray worker) THROUGH the Prefect flow,
# which runs every DVC stage; then prints where to look (MLflow UI, registry alias, metrics).
demo: install
	$(PY) -m pipelines.demo

# Serve the deployments of prefect.yaml (weekly retrain + on-demand evaluation) from this checkout.
serve: install
	$(PY) -m pipelines.serve

# The champion (params.yaml serve.model) behind Ray Serve on http://127.0.0.1:8000 (POST /predict a video;
# it follows the alias). Not the Prefect `make serve` above. Another model: make serve-model SERVE_ARGS='--model m.pt'
serve-model: install
	$(PY) -m madapter serve $(SERVE_ARGS)

# Register prefect.yaml's deployments on a Prefect server (PREFECT_API_URL) for the process work pool.
deploy: install
	$(VENV)/bin/prefect work-pool inspect madapter-process >/dev/null 2>&1 || \
		$(VENV)/bin/prefect work-pool create madapter-process --type process
	MADAPTER_REPO=$(CURDIR) $(VENV)/bin/prefect --no-prompt deploy --all

lint: install
	$(VENV)/bin/ruff check .

# Rewrite the code deps of every dvc.yaml stage from the import graph (after moving or adding a module).
dvc-deps: install
	$(PY) -m pipelines.dvc_deps --write

# GPU acceptance check, for a machine with an NVIDIA GPU (never part of `make test`): the synthetic
# pipeline, evaluate, predict, `mlflow models serve` and the memory benchmark on CUDA (+ a 2-worker
# NCCL run with 2 GPUs); one PASS/FAIL line per check. Without CUDA it stops at once (exit 2).
gpu-check: install
	$(PY) -m infra.gpu_check

# Ray Tune sweep of the branch's hyperparameters (params.yaml `tune:`, ASHA) on the cached backbone
# features, built first by DVC. Not a pipeline stage: its product is a preset (printed at the end) to
# run with `dvc exp run`. Interrupted, `make tune` again resumes it. More: make tune TUNE_ARGS='-S tune.trials=16'
tune: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro features
	$(PY) -m madapter tune -S train.source=features $(TUNE_ARGS)

# Every benchmark (each in its own process), then docs/benchmarks.md and its plots regenerated from the
# result JSONs in benchmarks/results/ (checked in). ~45 min on 2 quiet cores. One or some of them:
# make bench BENCH_ARGS='--only memory_scaling accuracy'. Re-render the page only: BENCH_ARGS=--report-only.
# One benchmark alone, with its own flags: .venv/bin/python -m benchmarks.decode --help
bench: install
	$(PY) -m benchmarks $(BENCH_ARGS)

# The same with reduced settings (<= 10 min), into outputs/bench-quick/ (results + its own report):
# it never overwrites the checked-in results. (`make bench --quick` cannot work: make itself rejects --quick.)
bench-quick: install
	$(PY) -m benchmarks --quick $(BENCH_ARGS)

clean:
	rm -rf outputs data/frames data/scan data/index .pytest_cache
