# Two commands for a fresh machine (see README):
#   make dev    install, then start the Dagster UI and daemon on the embedded demo services
#   make test   install, then run the whole test suite
PYTHON ?= python3.11
VENV ?= .venv
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test bench install lock openapi preview clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[demo,test,deploy,bench]'
	touch $(STAMP)

install: $(STAMP)

DEV_PORT ?= 3000
dev: install
	mkdir -p "$(DAGSTER_HOME)"
	test -e "$(DAGSTER_HOME)/dagster.yaml" || cp deploy/dagster.dev.yaml "$(DAGSTER_HOME)/dagster.yaml"
	umask 077; VIRTUAL_ENV="$(abspath $(VENV))" $(BIN)/dg dev -p $(DEV_PORT)

# Lint, format check and strict type check first: they fail in seconds, the suite takes minutes.
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	scripts/ensure-postgres.sh
	scripts/ensure-caddy.sh
	scripts/ensure-redis.sh
	$(BIN)/python -m pytest

# Performance figures (README, "Performance"): N=100000 by default; see benchmarks/run.py for modes.
# SHARDS=1,2,4 also runs the delivery fanned out over 2 and 4 shards (README, "Scaling out").
# REPEAT=3 alternates project and plain-script rounds and compares their medians.
N ?= 100000
SHARDS ?= 1
REPEAT ?= 1
bench: install
	$(BIN)/python -m benchmarks.run --size $(N) --shards $(SHARDS) --repeat $(REPEAT)

# Every kind of email, in every preview locale, and each digest, rendered from sample data to
# ./preview (.eml and .html) for review.
preview: install
	$(BIN)/cron-pipelines preview all --locale all --out preview
	$(BIN)/cron-pipelines preview all --locale all --digest --out preview

# Rewrite docs/openapi/ from the stand-ins' FastAPI apps (a test fails while they differ).
openapi: install
	$(BIN)/python -m demo_services.openapi

# Re-resolve every pin after changing a dependency in pyproject.toml.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet -e '.[demo,test,deploy,bench]'
	{ sed -n '1,3p' constraints.txt; .lock-venv/bin/python -m pip freeze --exclude-editable | sort; } > constraints.new
	mv constraints.new constraints.txt && rm -rf .lock-venv

clean:
	rm -rf $(VENV) .dagster_home
