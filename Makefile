# collabnet: the developer's entry points. Python 3.11+ and make are all they need.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
# uv from PATH, or a private copy installed from PyPI on first use.
UV := $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
RUN := $(UV) run --frozen --no-sync
# Each member's sources and tests are type-checked on their own: their test modules share names.
MEMBERS := libs/kit libs/cli $(wildcard services/*)

.PHONY: setup run test soak lint proto bench clean

$(CURDIR)/.tools/bin/uv:
	$(PYTHON) -m venv $(CURDIR)/.tools
	$(CURDIR)/.tools/bin/pip install --quiet --disable-pip-version-check uv

# Installed modules are compiled once here: where Python may not write bytecode as it imports
# (PYTHONDONTWRITEBYTECODE), every process, each test run's and each service's, would compile them again.
setup: | $(UV)
	$(UV) sync --frozen --all-packages --compile-bytecode

run: setup
	$(RUN) collabnet up

# Each library and service is tested in a process of its own, as each runs in one. They run two at a
# time, the slowest first (their tests wait on servers, brokers and databases as much as they
# compute), and each part's output is printed whole when it ends; tests/ (the whole system as
# processes, and the reliability suite's load) runs alone after them. PYTEST_ARGS runs pytest once
# with those arguments instead.
SLOWEST_PARTS := services/gateway services/identity
PARTS := $(SLOWEST_PARTS) $(filter-out $(SLOWEST_PARTS),$(wildcard services/*)) libs
TEST_JOBS ?= 2

test: setup
ifdef PYTEST_ARGS
	$(RUN) pytest $(PYTEST_ARGS)
else
	mkdir -p .collabnet/test-logs
	status=0; \
	printf '%s\n' $(PARTS) | xargs -P $(TEST_JOBS) -I{} bash -c \
		'log=.collabnet/test-logs/$$(basename {}).log; $(RUN) pytest {} >$$log 2>&1; code=$$?; flock .collabnet/test-logs cat $$log; exit $$code' \
		|| status=1; \
	$(RUN) pytest tests || status=1; \
	exit $$status
endif

# The reliability suite's long version: more load for longer, more generated input (tests/reliability).
soak: setup
	COLLABNET_SOAK=1 $(RUN) pytest tests/reliability --timeout 1800 $(PYTEST_ARGS)

lint: setup
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) python protos/generate.py --check
	cd protos && $(RUN) buf lint
	for member in $(MEMBERS); do \
		MYPYPATH=$$member/src:$$member/tests $(RUN) mypy $$member || exit 1; \
	done
	MYPYPATH=libs/kit/tests $(RUN) mypy protos/generate.py bench tests

proto: setup
	$(RUN) python protos/generate.py

bench: setup
	for script in bench/*.py; do $(RUN) python $$script || exit 1; done

clean:
	rm -rf .collabnet .mypy_cache .pytest_cache .ruff_cache
