# `make run` works on a fresh clone: it creates .venv, installs, generates gRPC code, starts.
PY    := .venv/bin/python
STAMP := .venv/.installed

.PHONY: run test proto lint stop clean system-packages

run: proto system-packages
	.venv/bin/marketplace up $(ARGS)

# Tests use the committed gen/ as it is: a test fails when it is stale against proto/.
test: $(STAMP) system-packages
	$(PY) -m pytest $(ARGS)

proto: $(STAMP)
	$(PY) -m services.common.protogen

lint: $(STAMP)
	.venv/bin/ruff check .
	.venv/bin/mypy services

stop:
	@if [ -x .venv/bin/marketplace ]; then .venv/bin/marketplace stack stop; fi

clean: stop
	rm -rf .data

$(PY):
	python3 -m venv .venv

# Debian's packages the project drives (never downloaded builds), as <binary>:<package>:
# PgBouncer (`marketplace up --pooler`), HAProxy (`--replicas`), and for the tests also
# Chromium (the dashboard test) and Prometheus (promtool checks metrics and alert rules).
# Only the missing ones are installed.
RUN_PACKAGES  := /usr/sbin/pgbouncer:pgbouncer /usr/sbin/haproxy:haproxy
TEST_PACKAGES := $(RUN_PACKAGES) /usr/bin/chromium:chromium /usr/bin/promtool:prometheus
run: PACKAGES = $(RUN_PACKAGES)
test: PACKAGES = $(TEST_PACKAGES)
PACKAGES ?= $(TEST_PACKAGES)

system-packages:
	@missing=""; for entry in $(PACKAGES); do \
	  test -x "$${entry%%:*}" || missing="$$missing $${entry##*:}"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && apt-get install -y -qq $$missing; fi

# Reinstall only when the dependencies change.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -e '.[dev]'
	touch $@

# Peak-day load test and open-loop benchmark (docs/benchmarks.md); options via ARGS or
# LOAD_* / BENCH_* variables, e.g. `make load ARGS="--day-s 600 --users 20"`.
.PHONY: load bench

load: $(STAMP)
	$(PY) -m bench.load $(ARGS)

bench: $(STAMP)
	$(PY) -m bench $(ARGS)
