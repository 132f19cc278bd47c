# `make run` works on a fresh clone: it creates .venv, installs, generates gRPC code, starts.
PY    := .venv/bin/python
STAMP := .venv/.installed
# The lock files (`make lock` writes both from pyproject.toml): dev.txt is what .venv holds
# (runtime + the `local` extra + the `dev` extra), runtime.txt what the image holds.
DEV_LOCK     := requirements/dev.txt
RUNTIME_LOCK := requirements/runtime.txt

.PHONY: run test proto proto-baseline lint lock stop clean system-packages

run: proto system-packages
	.venv/bin/marketplace up $(ARGS)

# Tests use the committed gen/ as it is: a test fails when it is stale against proto/.
test: $(STAMP) system-packages
	$(PY) -m pytest $(ARGS)

proto: $(STAMP)
	$(PY) -m services.common.protogen

# The contract that `buf breaking` also holds proto/ to (tests/deploy/test_proto_contracts.py).
# Only after a deliberate break, which a new package version (v2) usually avoids.
proto-baseline: $(STAMP)
	.venv/bin/buf build proto --exclude-source-info -o proto/buf.baseline.json

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

# Reinstall only when the lock (or the project's own metadata) changes: every pinned package
# with its hashes first, then the project itself without resolving anything again.
$(STAMP): $(DEV_LOCK) pyproject.toml | $(PY)
	$(PY) -m pip install --require-hashes -r $(DEV_LOCK)
	$(PY) -m pip install --no-deps -e .
	touch $@

# After a change to the dependencies in pyproject.toml. Pins that still fit are kept (uv
# prefers what the lock holds); `make lock ARGS=--upgrade` (or `--upgrade-package NAME`)
# moves them. Resolved for every platform from Python 3.11 up, with the hashes of every
# file. The runtime lock is constrained by the dev lock, so the image runs the versions the
# tests ran.
UV_COMPILE := .venv/bin/uv pip compile pyproject.toml --generate-hashes --universal \
	--python-version 3.11 --custom-compile-command "make lock" --quiet
lock: $(STAMP)
	$(UV_COMPILE) --extra local --extra dev $(ARGS) -o $(DEV_LOCK)
	$(UV_COMPILE) -c $(DEV_LOCK) $(ARGS) -o $(RUNTIME_LOCK)

# Peak-day load test and open-loop benchmark (docs/benchmarks.md); options via ARGS or
# LOAD_* / BENCH_* variables, e.g. `make load ARGS="--day-s 600 --users 20"`.
.PHONY: load bench

load: $(STAMP)
	$(PY) -m bench.load $(ARGS)

bench: $(STAMP)
	$(PY) -m bench $(ARGS)

# Every hot path's cost as history grows (docs/benchmarks.md, "Growth"); e.g. a quick one:
# make bench-growth ARGS="--steps 0,100000 --step-s 10"
.PHONY: bench-growth
bench-growth: $(STAMP)
	$(PY) -m bench.growth $(ARGS)
