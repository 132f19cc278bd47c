# `make run` works on a fresh clone: it creates .venv, installs, generates gRPC code, starts.
PY    := .venv/bin/python
STAMP := .venv/.installed

.PHONY: run test proto lint stop clean

run: proto
	.venv/bin/marketplace up $(ARGS)

# Tests use the committed gen/ as it is: a test fails when it is stale against proto/.
test: $(STAMP)
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

# Reinstall only when the dependencies change.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -e '.[dev]'
	touch $@
