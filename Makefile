# streamlearn developer commands (GNU make).
#
# The virtualenv lives OUTSIDE the clone (torch is huge: install once per
# machine, reuse from every clone); `make setup` links it as ./.venv.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV   ?= $(HOME)/.cache/streamlearn/venv
PYTHON ?= python3.11
BUILD  ?= build
# Extra pip arguments, e.g. PIP_ARGS='--extra-index-url https://download.pytorch.org/whl/cpu'
PIP_ARGS ?=

BIN   := .venv/bin
STAMP := $(VENV)/.streamlearn-setup

# `make demo` settings (see deploy/demo/demo): KAFKA_PORT (default 9092, or the next free one),
# DEMO_API_PORT (default 8080, or a free one), DEMO_RATE samples/s, DEMO_COUNT samples.
export DEMO_DIR ?= $(BUILD)/demo
# `make bench-throughput SAMPLES=200000` for a shorter run (default 1,000,000).
SAMPLES ?=

.PHONY: help setup test demo bench bench-throughput kafka stop clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

setup:  ## create/update the venv (idempotent; ~1 s when nothing changed) and link it as .venv
	@if [ ! -x "$(VENV)/bin/python" ]; then \
	  echo "setup: creating $(VENV) with $(PYTHON)"; \
	  mkdir -p "$$(dirname "$(VENV)")"; \
	  $(PYTHON) -m venv "$(VENV)"; \
	fi
	@if [ -e .venv ] && [ ! -L .venv ]; then \
	  echo "setup: .venv exists and is not a symlink; remove it or set VENV=$$PWD/.venv" >&2; exit 2; \
	fi
	@ln -sfn "$(VENV)" .venv
	@# Reinstall only when pyproject.toml or the clone that owns the editable install changed.
	@want="$$( { sha256sum pyproject.toml; echo "$(CURDIR)"; } | sha256sum | cut -d' ' -f1)"; \
	if [ "$$(cat "$(STAMP)" 2>/dev/null)" != "$$want" ]; then \
	  echo "setup: installing streamlearn (editable) into $(VENV)"; \
	  "$(VENV)/bin/python" -c 'import setuptools' 2>/dev/null \
	    || "$(VENV)/bin/python" -m pip install -q $(PIP_ARGS) 'setuptools>=64'; \
	  "$(VENV)/bin/python" -m pip install -q $(PIP_ARGS) --no-build-isolation -e '.[test,bench]'; \
	  echo "$$want" > "$(STAMP)"; \
	fi

test: setup  ## run all tests, doctests included
	$(BIN)/python -m pytest

demo: setup  ## local Kafka + the daemon in the background, fed the demo stream, with a live summary (~1 min)
	@deploy/demo/demo start

# One BLAS thread too (torch is set to one thread inside): the published figures are measured so.
BENCH_ENV = OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

bench: setup  ## run the quality benchmark (prints a table)
	$(BENCH_ENV) $(BIN)/python benchmarks/quality.py

bench-throughput: setup  ## daemon vs raw Kafka throughput, latency at 1,000/s, memory (~5 min; SAMPLES=N)
	$(BENCH_ENV) $(BIN)/python benchmarks/throughput.py $(if $(SAMPLES),--samples $(SAMPLES))

kafka:  ## start the local Kafka broker (KAFKA_PORT, default 9092); prints its address
	@deploy/kafka/kafka-local start

stop:  ## stop the daemon `make demo` started, and its Kafka broker if it started one (idempotent)
	@deploy/demo/demo stop

clean:  ## remove build outputs and caches in the clone (keeps the shared venv)
	rm -rf $(BUILD) .pytest_cache .hypothesis *.egg-info
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
