# TaskMaster's developer entry points. Everything a fresh machine with Python
# 3.11+, Go, gcc and make needs is installed by these targets.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOOLS := .tools/bin
PYTEST_ARGS ?=

.PHONY: help venv tools images cluster-up cluster-down lint fmt test test-unit demo bench bench-quick lock docs argocd-cm chart-crds clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 16

$(BIN)/.installed: pyproject.toml requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements/dev.txt
	$(BIN)/pip install --quiet --no-deps --editable .
	touch $@

venv: $(BIN)/.installed ## create .venv with the locked dependencies

tools: ## build (or reuse the cached) cluster binaries and link them into .tools/bin
	$(PYTHON) hack/tools.py --bin $(TOOLS)

images: venv ## build the operator and worker images from the Dockerfiles with buildah (no engine); installs buildah and mmdebstrap as root
	$(BIN)/python hack/images.py

cluster-up: tools ## start the local cluster (idempotent); kubeconfig in .cluster/kubeconfig
	hack/cluster.sh up

cluster-down: ## stop the local cluster (and the benchmark's, if up) and every process of them (idempotent)
	@if [[ -x $(TOOLS)/kwokctl ]]; then hack/cluster.sh down; fi
	@if [[ -x $(TOOLS)/kwokctl && -d .cluster/bench ]]; then \
	  TASKMASTER_CLUSTER_NAME=taskmaster-bench TASKMASTER_CLUSTER_STATE=$(CURDIR)/.cluster/bench hack/cluster.sh down; fi

lint: venv ## ruff, mypy --strict, import-linter, hadolint (helm lint runs in the chart tests)
	$(BIN)/ruff check operator tests hack bench
	$(BIN)/ruff format --check operator tests hack bench
	$(BIN)/mypy
	$(BIN)/mypy tests/support/api.py tests/unit/test_workqueue.py
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile worker-image/Dockerfile

chart-crds: ## refresh the Helm chart's copy of crds/
	cp crds/*.yaml deploy/helm/taskmaster/files/crds/

fmt: venv ## format and fix what ruff can
	$(BIN)/ruff format operator tests hack bench
	$(BIN)/ruff check --fix operator tests hack bench

test: lint tools ## lint, then every test (starts the local cluster when it is not up)
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: venv ## the tests that need no cluster
	$(BIN)/pytest -m "not cluster" $(PYTEST_ARGS)

demo: tools venv ## the operator on the local cluster, running the examples, with a live view
	hack/demo.sh

argocd-cm: venv ## regenerate deploy/argocd/argocd-cm.yaml from the Argo CD Lua scripts
	$(BIN)/python hack/argocd_cm.py

bench: tools venv ## TaskMaster vs the CronJob controller on a fresh local cluster (~1 h): bench/results/
	$(BIN)/python -m bench

bench-quick: tools venv ## the same workloads with smaller numbers (< 5 min): bench/results/quick.*
	$(BIN)/python -m bench --quick

docs: venv ## regenerate docs/reference.md from the CRD
	$(BIN)/python hack/crd_reference.py --output docs/reference.md

lock: venv ## re-resolve requirements/*.txt from pyproject.toml
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 --generate-hashes --quiet -o requirements/runtime.txt
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes --quiet -o requirements/dev.txt

clean: cluster-down ## remove the venv and links (the binary cache stays)
	rm -rf $(VENV) .tools .cluster .mypy_cache .ruff_cache .pytest_cache .import_linter_cache
