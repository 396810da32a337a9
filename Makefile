# Two commands do all the set-up: `make run` starts the service, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test,embedded]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

run: $(STAMP)  ## API, 2 workers and the dashboard on an embedded Redis: http://127.0.0.1:8000
	COLLECTOR_CONNECTIONS="$${COLLECTOR_CONNECTIONS:-examples/connections.toml}" $(BIN)/collector up $(ARGS)

lint: $(STAMP)  ## ruff, the layers (lint-imports), the compose file against the compose spec, the Dockerfile, deploy/k8s
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.sentinel.yml
	$(BIN)/hadolint Dockerfile
	$(BIN)/python deploy/k8s/validate.py

test: $(STAMP) lint  ## the whole suite (private Redis; MariaDB/PostgreSQL when present)
	$(BIN)/python -m pytest $(ARGS)

bench: $(STAMP)  ## the benchmark of bench/RESULTS.md (installs the `bench` extra: celery, profilers)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test,embedded,bench]"
	$(BIN)/python bench/run.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
