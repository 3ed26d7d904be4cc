# `make run`: the local stack (Azurite + realtime emulator + functions host) at http://127.0.0.1:7071/
# `make test`: everything the tests need, then lint, format and type checks, the docs, then the whole suite.
# Both are idempotent: each step runs only when its inputs changed or its tool is missing.
# `make unit`: the unit tier only (tests/unit, in process), for a quick check while editing.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.requirements.stamp
NODE_STAMP := node_modules/.package-lock.json
SYSTEM_TOOLS := chromium espeak-ng sox
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
PYTEST_ARGS ?=
# The suite mostly waits on sockets and child processes, so it runs on several pytest-xdist workers
# (tests/conftest.py keeps each file on one worker and the e2e files together); TEST_WORKERS=0 runs it
# in this one process.
TEST_WORKERS ?= 3

.PHONY: run test unit lint docs infra-scan system clean-local bench screenshots

run: $(VENV_STAMP) $(NODE_STAMP)
	$(PY) -m local.stack

test: lint docs infra-scan $(NODE_STAMP) system
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# The unit tier alone, in well under a minute: in process, no port, no subprocess (tests/unit/conftest.py
# fails any test that opens one). `make test` runs it too, with the integration, security and e2e tiers.
unit: $(VENV_STAMP)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# Every bench/bench_*.py in turn, then bench/results/REPORT.md; `make bench BENCH_ARGS=--long` for the long runs.
bench: $(VENV_STAMP) $(NODE_STAMP) system
	$(PY) -m bench.run_all $(BENCH_ARGS)

# The committed pictures (artifacts/): the audit report's screenshot, refreshed on purpose only.
screenshots: $(VENV_STAMP) $(NODE_STAMP) system
	ARTIFACTS_DIR=artifacts $(PY) -m pytest tests/e2e/test_audit_report.py -q

# The habits that keep the code as it is: lint, format and types (settings in pyproject.toml).
lint: $(VENV_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# The documentation site (mkdocs.yml, docs/), built strictly into a throwaway folder: a broken link,
# anchor or nav entry fails it. docs/gen_tables.py writes the settings and error tables from the code
# as it builds. To browse it: $(VENV)/bin/mkdocs serve
docs: $(VENV_STAMP)
	@site="$$(mktemp -d)" && trap 'rm -rf "$$site"' EXIT && \
		NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir "$$site"

# checkov over infra/ (the Bicep in this repository; registry modules cannot be fetched offline).
# Its own venv: its pins (packaging, among others) conflict with the test venv's. Failing checks
# other than those in infra/checkov-skip.txt (one reason each) fail the build.
CHECKOV_VENV := .venv-checkov
CHECKOV_VERSION := 3.3.30
CHECKOV := $(CHECKOV_VENV)/bin/checkov
infra-scan: $(CHECKOV)
	$(CHECKOV) -d infra --framework bicep --compact --quiet --skip-download \
		--skip-check "$$(awk '!/^#/ && NF {printf "%s%s", sep, $$1; sep=","}' infra/checkov-skip.txt)" 2>/dev/null

$(CHECKOV):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --disable-pip-version-check --quiet checkov==$(CHECKOV_VERSION)

# Re-installed only when a requirements file is newer than the stamp.
$(VENV_STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || { $(SUDO) apt-get update && \
		$(SUDO) apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --disable-pip-version-check --quiet -r requirements-dev.txt
	$(PY) -m pip install --disable-pip-version-check --quiet --no-deps -e .   # the realtime-audit command
	touch $@

# npm writes node_modules/.package-lock.json on install; older than the lock file means stale.
$(NODE_STAMP): package.json package-lock.json
	command -v npm >/dev/null || { $(SUDO) apt-get update && $(SUDO) apt-get install -y nodejs npm; }
	npm ci --no-audit --no-fund
	touch $@

# Debian's Chromium (Playwright cannot download browsers here), espeak-ng and sox for spoken audio.
system:
	@missing=""; for tool in $(SYSTEM_TOOLS); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends $$missing; \
	fi

# Azurite's data and the generated function keys of `make run`.
clean-local:
	rm -rf .local
