# sevvo developer entry points. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install chromium dev demo test test-replicas lint protos protos-check bench images images-check images-demo workflow-histories lock clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

## Run the whole system on embedded defaults (Postgres, Temporal, services, an agent and a sample
## database for the README's tour) until Ctrl-C; logs in .dev/devstack.log.
dev: install
	$(PY) -m devstack

## The end-to-end demo: a fresh stack, an agent and a TLS customer database, driven by the
## sevvo command line step by step; exits non-zero naming the first step that failed.
demo: install
	$(PY) -m devstack.demo

## Run the test suite against real Postgres, Temporal and gRPC-over-TLS servers. Test files are
## spread over TEST_WORKERS processes (each with its own servers); most tests wait on servers,
## so two workers fit the CI budget on two cores where one did not. The 30 slowest tests are
## listed at the end, to see where the budget goes.
TEST_WORKERS ?= 2
test: install chromium
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=30

## The end-to-end tests (every file on the shared stack) against two replicas of each service:
## the in-process stack and a process of each service beside it, balanced by the router
## (SEVVO_E2E_REPLICAS=2, tests/plugins/dev_stack.py). Not in `make test`: it repeats the
## end-to-end layer. tests/test_replicas.py (kills replicas mid-work) runs in `make test`.
E2E_FILES = $(shell grep -l 'e2e: EndToEnd\|e2e_stack' tests/test_*.py)
test-replicas: install chromium
	SEVVO_E2E_REPLICAS=2 $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(E2E_FILES)

## Debian's Chromium, for the web console's browser tests (installed when missing, as root).
chromium:
	@scripts/ensure_chromium.sh

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports
	cd protos && ../$(VENV)/bin/buf lint

protos: install
	$(PY) scripts/gen_protos.py

## Fails when the committed generated code differs from what protos/ generates.
protos-check: install
	$(PY) scripts/gen_protos.py --check

bench: install
	$(PY) -m bench

## Build the production images sevvo-control-plane and sevvo-agent (as root, no registry
## needed); their digests land in build/images.json. See deploy/k8s/README.md ("Images").
images: install
	$(PY) scripts/build_images.py

## Inspect the built images (no control-plane code in the agent, no shell, UID 10001) and
## start each read-only until it stops for want of configuration.
images-check: install
	$(PY) scripts/check_images.py

## The demo's story (make demo) with migrations, auth, connections and orchestrator run from the
## control-plane image and the agent from the agent image, in podman containers on loopback
## (as root, after `make images`); exits non-zero naming the first failed step.
images-demo: install
	$(PY) scripts/images_demo.py

## Record a history of every path of every agent workflow into tests/workflow_histories/<version>/
## on a Temporal dev server, for tests/test_workflow_replay.py to replay against later code.
## Refuses an existing folder; HISTORY_ARGS=--force re-records the unreleased version's.
HISTORY_ARGS ?=
workflow-histories: install
	$(PY) scripts/record_workflow_histories.py $(HISTORY_ARGS)

## Re-pin every dependency to what resolves today (run on Python 3.11, then commit constraints.txt).
lock:
	rm -rf .lockvenv && $(PYTHON) -m venv .lockvenv
	.lockvenv/bin/pip install --quiet --upgrade pip
	.lockvenv/bin/pip install --quiet -e '.[dev]'
	.lockvenv/bin/pip freeze --exclude-editable | grep -v '^-e' > constraints.txt
	rm -rf .lockvenv

clean:
	rm -rf $(VENV) .dev .mypy_cache .ruff_cache .pytest_cache
