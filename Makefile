# `make run` and `make test` work on a fresh machine: each creates .venv if missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The lowest supported versions (constraints/floor.txt), in a venv of their own.
FLOOR := .venv-floor
# The fast floor subset (~2.5 min): the tests most sensitive to the versions of Twisted,
# pyOpenSSL/cryptography/service-identity, h2, prometheus_client, Flask/Django, websockets.
# `make test-floor FLOOR_TESTS=tests` runs the whole suite on the floor. Not the slow
# test: it builds its own venv from constraints/newest.txt, not the floor.
FLOOR_TESTS ?= tests/unit tests/corpus tests/test_hardening_parsing.py tests/test_hardening_fuzz.py \
	tests/test_pipelining.py tests/test_lane.py tests/test_proxy_lane.py \
	tests/test_tls.py tests/test_tls_http2.py tests/test_tls_clients.py tests/test_tls_config.py \
	tests/test_tls_reload.py tests/test_proxy.py tests/test_proxy_gaps.py tests/test_wsgi.py \
	tests/test_twistd.py tests/test_e2e.py tests/test_observability.py

.PHONY: run test test-floor check docs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints/newest.txt
	$(BIN)/pip install -q -e '.[test]' -c constraints/newest.txt
	touch $(STAMP)

$(FLOOR)/bin/python:
	$(PYTHON) -m venv $(FLOOR)
	$(FLOOR)/bin/pip install -q --upgrade pip

$(FLOOR)/.installed: $(FLOOR)/bin/python pyproject.toml constraints/floor.txt
	$(FLOOR)/bin/pip install -q -e '.[test]' -c constraints/floor.txt
	$(FLOOR)/bin/pip check
	touch $@

run: $(STAMP)
	$(BIN)/twisthost check examples/site.py
	$(BIN)/twistd -n --pidfile= twisthost --config examples/site.py

test: $(STAMP)
	bash .ci/system-deps
	$(BIN)/python -m pytest -q

# What `make test` runs, on the lowest supported versions: a fast subset (docs/operations.md).
test-floor: $(FLOOR)/.installed
	bash .ci/system-deps
	$(FLOOR)/bin/python -m pytest -q -m "not slow" $(FLOOR_TESTS)

check: $(STAMP)
	$(BIN)/twisthost check examples/site.py

docs: $(STAMP)
	$(BIN)/python -m twisthost.docgen > docs/config.md

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py $(ARGS)

clean:
	rm -rf $(VENV) $(FLOOR) build *.egg-info
