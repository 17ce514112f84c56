# The two commands a newcomer needs: `make demo` and `make test`.
# Each creates .venv when it is missing and installs the project into it from
# requirements.lock: every package pinned to one version and checked against its hashes, so a
# fresh machine gets what CI tested, whatever was released since. `make lock` re-pins.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock

.PHONY: demo test lint typecheck pytest bench mutate clean venv lock cluster-test docs

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "trio_micro needs python >= 3.11, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)

# A changed lock or pyproject.toml re-installs. --no-deps: the lock lists every package;
# --no-build-isolation: the editable install uses the locked hatchling, not a new download.
$(STAMP): $(BIN)/python $(LOCK) pyproject.toml
	$(BIN)/python -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	@touch $(STAMP)

venv: $(STAMP)

# `make demo TLS=1`: the same over mutual TLS (a throwaway CA, removed at exit).
demo: $(STAMP)
	$(BIN)/python -m examples.demo $(if $(filter-out 0,$(TLS)),--tls)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict trio_micro

pytest: $(STAMP)
	$(BIN)/coverage run -m pytest $(PYTEST_ARGS)
	$(BIN)/coverage report

test: lint typecheck docs pytest

# The multi-host cluster test (tests/cluster): etcd, three `serve --workers 2` replicas and a
# client, each in a Linux network namespace of its own, through a link cut, an etcd partition
# and a SIGKILLed supervisor. Needs root; skips (saying why) where namespaces are not allowed.
# Its convergence times go to benchmarks/cluster_results.json (quoted by docs/deploy.md).
# CLUSTER_RESULTS= (empty) prints them without writing the file.
CLUSTER_RESULTS ?= benchmarks/cluster_results.json
cluster-test: $(STAMP)
	TRIO_MICRO_CLUSTER_RESULTS=$(CLUSTER_RESULTS) \
		$(BIN)/python -m pytest tests/cluster -m cluster -p no:cacheprovider $(PYTEST_ARGS)

# The docs site (docs/conf.py): the guides, the API reference from the docstrings and the CLI
# reference from the argparse parsers, into docs/_build/html (git-ignored). -W: a warning (a
# broken docstring, a dead cross-reference) fails the build; -E: every page is re-read.
docs: $(STAMP)
	rm -rf docs/_build
	$(BIN)/sphinx-build -E -W --keep-going -q -b html docs docs/_build/html
	@echo "docs: docs/_build/html/index.html"

bench: $(STAMP)
	$(BIN)/python benchmarks/toolkit_bench.py

# Mutation testing of the hot modules with mutmut (docs/testing.md): module by module, one
# worker process, each mutant tested by the tests that reach the mutated function. Takes
# long (see docs/testing.md); `make mutate MUTATE=trio_micro.rpc._retry` runs one module.
# Not part of `make test`. Results stay in mutants/ (a re-run retests only what changed).
# --timeout=30: mutmut's own limit is CPU time, so a mutant that deadlocks (asleep, using
# no CPU) would otherwise wait out the suite's 180 s per test.
MUTATE_MODULES := \
	trio_micro.toolkit._ratelimit trio_micro.toolkit._singleflight trio_micro.toolkit._channels \
	trio_micro.protocol._connection trio_micro.protocol._codec trio_micro.protocol._compression \
	trio_micro.rpc._retry trio_micro.rpc._balancing trio_micro.rpc._server_calls \
	trio_micro.registry._server trio_micro.registry._memory \
	trio_micro.analysis._sketch
MUTATE ?= $(MUTATE_MODULES)
mutate: $(STAMP)
	@mkdir -p mutants
	@for module in $(MUTATE); do \
		echo "== mutmut: $$module (log: mutants/$$module.log)"; \
		PYTEST_ADDOPTS="--timeout=30 $$PYTEST_ADDOPTS" \
			$(BIN)/mutmut run --max-children 1 "$$module.*" > "mutants/$$module.log" 2>&1 \
			|| { tail -n 30 "mutants/$$module.log"; exit 1; }; \
	done
	$(BIN)/python -m tests.mutate_report $(MUTATE)

# Re-resolve every dependency (runtime and dev groups) to its newest release that fits
# pyproject.toml, for every Python >= 3.11 and platform, with hashes. Run it when you change a
# dependency in pyproject.toml, or to take upstream releases; then `make test` and commit both.
# UPGRADE=0 keeps the pins that still fit and only adds what is new.
UPGRADE ?= 1
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --group pyproject.toml:dev --universal \
		--python-version 3.11 --generate-hashes --quiet \
		$(if $(filter 1,$(UPGRADE)),--upgrade,) \
		--custom-compile-command "make lock" -o $(LOCK)

clean:
	rm -rf $(VENV) .venv-* mutants docs/_build .coverage .mypy_cache .ruff_cache .pytest_cache .hypothesis
