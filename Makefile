# casetrail — `make run` (embedded default) and `make test` (whole suite with real servers).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.casetrail-installed
PROTO_STAMP := $(CURDIR)/protos/.generated
PROTO_FILES := $(shell find protos -name '*.proto' 2>/dev/null)
DATA_DIR ?= $(or $(CASETRAIL_DATA_DIR),$(CURDIR)/var/data)

include infra/servers.mk

.PHONY: help
help:
	@echo "make run        start casetrail on the embedded default (SQLite + in-process bus)"
	@echo "make test       install everything, start Kafka + PostgreSQL, run the whole suite"
	@echo "make run-distributed  the four services as separate processes on Kafka + PostgreSQL"
	@echo "make caseload   the faust-streaming caseload processor on Kafka (web views on :6066)"
	@echo "make demo       walk the elderly-client case through the running services"
	@echo "make check      ruff, mypy --strict, event schemas in sync"
	@echo "make bench      run the benchmarks in bench/ (needs the servers)"
	@echo "make k8s-check  render the Helm chart, kubeconform it, dry-run it on a real kube-apiserver"
	@echo "make api-check  AsyncAPI document valid, buf lint (strict), buf breaking and event schemas only widened vs the previous commit"

$(STAMP): requirements.lock pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@# The generated gRPC code lives in protos/ (never committed) and the packages at the root.
	@printf '%s\n%s\n' "$(CURDIR)" "$(CURDIR)/protos" > $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/casetrail-paths.pth
	@touch $@

.PHONY: venv
venv: $(STAMP)

$(PROTO_STAMP): $(STAMP) $(PROTO_FILES)
	@if [ -n "$(PROTO_FILES)" ]; then \
	  PATH="$(VENV)/bin:$$PATH" $(PY) -m grpc_tools.protoc -Iprotos --python_out=protos --grpc_python_out=protos \
	    --mypy_out=protos --mypy_grpc_out=protos $(PROTO_FILES); \
	fi
	@touch $@

.PHONY: protos
protos: $(PROTO_STAMP)

.PHONY: run
run: $(PROTO_STAMP)
	$(PY) -m services.runner --data-dir $(DATA_DIR)

# One process per service on Kafka + PostgreSQL, on the fixed ports 7301-7304; it needs an OIDC
# issuer (CASETRAIL_OIDC_ISSUER, CASETRAIL_OIDC_AUDIENCE: README, "Quick start").
.PHONY: run-distributed
run-distributed: $(PROTO_STAMP)
	$(MAKE) --no-print-directory servers-start
	@pids=""; trap 'kill $$pids 2>/dev/null; wait $$pids' INT TERM EXIT; \
	for service in intake coordination planning audit; do \
	  $(PY) -m services.runner --backend distributed --service $$service --data-dir $(DATA_DIR) & \
	  pids="$$pids $$!"; \
	done; wait

# Live caseloads and overdue follow-ups (faust-streaming) from the case-event topic on Kafka.
.PHONY: caseload
caseload: $(PROTO_STAMP)
	$(MAKE) --no-print-directory kafka-start
	$(PY) -m services.caseload worker -l info

.PHONY: demo
demo: $(PROTO_STAMP)
	$(PY) -m services.demo --data-dir $(DATA_DIR)

.PHONY: schemas
schemas: $(STAMP)
	$(PY) -m events.schema_export
	$(PY) -m events.asyncapi

.PHONY: check
check: $(PROTO_STAMP)
	$(PY) -m events.schema_export --check
	$(PY) -m events.asyncapi --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy events casetrail_platform services cli tests bench

# The ledger's independent verifier (Go, golang.org/x/mod/sumdb): built from the Go module proxy
# into ~/.cache/casetrail, outside the repository (tests/integration/test_ledger_independent.py).
.PHONY: ledger-verifier
ledger-verifier: $(STAMP)
	PATH="$$PATH:/usr/local/go/bin" $(PY) -m tests.support.goverifier

# Debian's chromium + chromium-driver for the console's browser tests (tests/console/).
.PHONY: browser-install
browser-install:
	@infra/browser-install.sh

# Debian's kcat, the outside Kafka client of the ledger's independent checks.
.PHONY: kcat-install
kcat-install:
	@infra/kcat-install.sh

.PHONY: test
test: $(PROTO_STAMP)
	$(MAKE) --no-print-directory check
	$(MAKE) --no-print-directory ledger-verifier
	$(MAKE) --no-print-directory api-check
	$(MAKE) --no-print-directory browser-install
	$(MAKE) --no-print-directory kcat-install
	$(MAKE) --no-print-directory k8s-check
	$(MAKE) --no-print-directory servers-start
	status=0; CASETRAIL_REQUIRE_SERVERS=1 $(PY) -m pytest -q --ignore=tests/k8s $(PYTEST_ARGS) || status=$$?; \
	  $(MAKE) --no-print-directory servers-stop; exit $$status

# Tools for the Kubernetes checks, built once per machine into ~/.cache/casetrail (helm,
# kubeconform, kube-apiserver and kubectl with go install/build, etcd from Debian, schemas).
.PHONY: k8s-install
k8s-install: $(STAMP)
	CASETRAIL_PYTHON=$(PY) infra/k8s/install.sh

# The Helm chart rendered per profile, validated by kubeconform and by a real API server.
.PHONY: k8s-check
k8s-check: $(PROTO_STAMP) k8s-install
	CASETRAIL_REQUIRE_SERVERS=1 $(PY) -m pytest -q tests/k8s

# API contracts: the AsyncAPI document, buf lint (STANDARD, strict), buf breaking and the
# published event schemas' compatibility (a published version only widens).
.PHONY: api-check
api-check: $(STAMP)
	$(PY) infra/api/check.py --tools "$$(infra/api/install.sh)" $(API_CHECK_ARGS)

.PHONY: test-unit
test-unit: $(PROTO_STAMP)
	$(PY) -m pytest -q tests/unit

.PHONY: bench
bench: $(PROTO_STAMP)
	$(MAKE) --no-print-directory servers-start
	$(PY) -m bench.store_bench
	$(PY) -m bench.kafka_bench
	$(PY) -m bench.grpc_bench
	$(PY) -m bench.grpc_bench --auth
	$(PY) -m bench.ledger_bench
	$(PY) -m bench.console_bench

.PHONY: clean
clean:
	rm -rf $(VENV) var protos/.generated
	find protos -name '*_pb2*.py*' -delete
