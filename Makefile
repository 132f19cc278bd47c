# `make run` works on a fresh clone: it creates .venv, installs, generates gRPC code, starts.
PY    := .venv/bin/python
STAMP := .venv/.installed

.PHONY: run test proto lint stop clean browser pgbouncer

run: proto pgbouncer
	.venv/bin/marketplace up $(ARGS)

# Tests use the committed gen/ as it is: a test fails when it is stale against proto/.
test: $(STAMP) browser pgbouncer
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

# The dashboard test drives Debian's Chromium (never a downloaded browser build).
browser:
	@test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium)

# `marketplace up --pooler` and the topology tests put Debian's PgBouncer in front of Postgres.
pgbouncer:
	@test -x /usr/sbin/pgbouncer || (apt-get update -qq && apt-get install -y -qq pgbouncer)

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
