# streamlearn developer commands (GNU make).
#
# The dependencies (torch is huge) live in a venv OUTSIDE the clone, installed once per
# machine and shared by every clone; each clone gets its own small ./.venv that sees them
# and holds this clone's streamlearn (editable), so two clones never run each other's code.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV   ?= $(HOME)/.cache/streamlearn/venv
PYTHON ?= python3.11
BUILD  ?= build
# Extra pip arguments, e.g. PIP_ARGS='--extra-index-url https://download.pytorch.org/whl/cpu'
PIP_ARGS ?=

BIN   := .venv/bin
STAMP := $(VENV)/.streamlearn-deps

# `make demo` settings (see deploy/demo/demo): KAFKA_PORT (default 9092, or the next free one),
# DEMO_API_PORT (default 8080, or a free one), DEMO_RATE samples/s, DEMO_COUNT samples.
export DEMO_DIR ?= $(BUILD)/demo
# `make bench-throughput SAMPLES=200000` for a shorter run (default 1,000,000).
SAMPLES ?=

.PHONY: help setup test demo bench bench-throughput kafka stop clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

setup:  ## shared venv with the dependencies (once per machine) + this clone's .venv (idempotent; ~1 s)
	@if [ ! -x "$(VENV)/bin/python" ]; then \
	  echo "setup: creating $(VENV) with $(PYTHON)"; \
	  mkdir -p "$$(dirname "$(VENV)")"; \
	  $(PYTHON) -m venv "$(VENV)"; \
	fi
	@# Dependencies only (never streamlearn itself: it belongs to each clone). Reinstalled when pyproject.toml changes.
	@want="$$(sha256sum pyproject.toml | cut -d' ' -f1)"; \
	if [ "$$(cat "$(STAMP)" 2>/dev/null)" != "$$want" ]; then \
	  echo "setup: installing the dependencies into $(VENV)"; \
	  deps="$$("$(VENV)/bin/python" -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
	    print(" ".join(p["dependencies"] + p["optional-dependencies"]["test"] + p["optional-dependencies"]["bench"]))')"; \
	  "$(VENV)/bin/python" -m pip install -q $(PIP_ARGS) 'setuptools>=64' $$deps; \
	  "$(VENV)/bin/python" -m pip uninstall -q -y streamlearn 2>/dev/null || true; \
	  echo "$$want" > "$(STAMP)"; \
	fi
	@if [ -L .venv ]; then rm .venv; fi  # setups before 0.2 linked the shared venv here
	@# A .venv made from another Python than the shared venv's cannot load its compiled packages: make it again.
	@if [ -x .venv/bin/python ] && [ "$$(.venv/bin/python -c 'import sys; print(sys.version_info[:2])')" != \
	  "$$("$(VENV)/bin/python" -c 'import sys; print(sys.version_info[:2])')" ]; then rm -rf .venv; fi
	@if [ ! -x .venv/bin/python ]; then "$(VENV)/bin/python" -m venv --without-pip .venv; fi
	@# This clone's venv sees the shared dependencies through a .pth file.
	@shared="$$("$(VENV)/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"; \
	own="$$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"; \
	pth="$$own/streamlearn_shared_venv.pth"; \
	[ "$$(cat "$$pth" 2>/dev/null)" = "$$shared" ] || echo "$$shared" > "$$pth"
	@want="$$( { cat pyproject.toml "$(STAMP)"; echo "$(CURDIR)"; } | sha256sum | cut -d' ' -f1)"; \
	if [ "$$(cat .venv/.streamlearn-setup 2>/dev/null)" != "$$want" ]; then \
	  echo "setup: installing this clone's streamlearn (editable) into .venv"; \
	  "$(VENV)/bin/python" -m pip --python .venv/bin/python install -q --no-deps --no-build-isolation -e .; \
	  echo "$$want" > .venv/.streamlearn-setup; \
	fi

test: setup  ## run all tests, doctests included
	$(BIN)/python -m pytest

demo: setup  ## local Kafka + the daemon + Prometheus in the background, fed the demo stream, with a live summary (~1 min)
	@deploy/demo/demo start

# One BLAS thread too (torch is set to one thread inside): the published figures are measured so.
BENCH_ENV = OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

bench: setup  ## run the quality benchmark (prints a table)
	$(BENCH_ENV) $(BIN)/python benchmarks/quality.py

bench-throughput: setup  ## daemon vs raw Kafka throughput, latency at 1,000/s, memory (~5 min; SAMPLES=N)
	$(BENCH_ENV) $(BIN)/python benchmarks/throughput.py $(if $(SAMPLES),--samples $(SAMPLES))

kafka:  ## start the local Kafka broker (KAFKA_PORT, default 9092); prints its address
	@deploy/kafka/kafka-local start

stop:  ## stop the daemon and Prometheus `make demo` started, and its Kafka broker if it started one (idempotent)
	@deploy/demo/demo stop

clean:  ## remove build outputs and caches in the clone (keeps the shared venv)
	rm -rf $(BUILD) .pytest_cache .hypothesis *.egg-info
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
