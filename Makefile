# `make run` and `make test` work on a fresh machine: each creates .venv if missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check docs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/twisthost check examples/site.py
	$(BIN)/twistd -n --pidfile= twisthost --config examples/site.py

test: $(STAMP)
	bash .ci/system-deps
	$(BIN)/python -m pytest -q

check: $(STAMP)
	$(BIN)/twisthost check examples/site.py

docs: $(STAMP)
	$(BIN)/python -m twisthost.docgen > docs/config.md

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
