# Every target bootstraps .venv itself, so a fresh clone needs nothing else first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
N ?= 3

.PHONY: install test test-gateways run lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# PYTHONWARNINGS: setuptools' build backend warns on every editable install; set-up stays quiet.
	PYTHONWARNINGS=ignore $(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The gateway suite (real nginx, haproxy, a LiteLLM proxy) runs apart: `make test` stays under
# ~5 minutes on 2 cores; .ci/run runs both.
test: $(STAMP)
	$(BIN)/python -m pytest -m "not gateways" $(PYTEST_ARGS)

test-gateways: $(STAMP)
	$(BIN)/python -m pytest -m gateways $(PYTEST_ARGS)

run: $(STAMP)
	$(BIN)/llmsim serve $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check llmsim cluster tests benchmarks
	$(BIN)/ruff format --check llmsim cluster tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info

# `make cluster N=4 ARGS="--base-port 9001"`: N instances under supervisord (see README).
.PHONY: cluster cluster-status cluster-down
cluster: $(STAMP)
	$(BIN)/llmsim cluster up -n $(N) $(ARGS)

cluster-status: $(STAMP)
	$(BIN)/llmsim cluster status $(ARGS)

cluster-down: $(STAMP)
	$(BIN)/llmsim cluster down $(ARGS)

# Containers (need a Docker engine). `make docker-build [IMAGE=llmsim] [TAG=latest]`;
# `make docker-push REGISTRY=ghcr.io/you [TAG=0.1.0]` builds linux/amd64 + linux/arm64 with buildx
# and pushes $(REGISTRY)/$(IMAGE):$(TAG); `make compose-up N=4` runs N replicas behind nginx on
# http://localhost:8080 (N defaults to 3, as for `make cluster`); `make compose-down` removes them.
.PHONY: docker-build docker-push compose-up compose-down
IMAGE ?= llmsim
TAG ?= latest
PLATFORMS ?= linux/amd64,linux/arm64
BUILDER ?= llmsim-multiarch
COMPOSE ?= docker compose -f compose/docker-compose.yml

docker-build:
	docker build -t $(IMAGE):$(TAG) .

docker-push:
	$(if $(REGISTRY),,$(error REGISTRY is not set: make docker-push REGISTRY=registry.example.com/you [TAG=$(TAG)]))
	docker buildx inspect $(BUILDER) >/dev/null 2>&1 || docker buildx create --name $(BUILDER) --driver docker-container
	docker buildx build --builder $(BUILDER) --platform $(PLATFORMS) -t $(REGISTRY)/$(IMAGE):$(TAG) --push .

compose-up:
	LLMSIM_IMAGE=$(IMAGE):$(TAG) $(COMPOSE) up -d --build --wait --scale llmsim=$(N)

compose-down:
	$(COMPOSE) down --remove-orphans
