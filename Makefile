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

# Demo inputs/outputs (a later issue turns `make demo` into the Kafka daemon).
DEMO_DATA   := $(BUILD)/demo.jsonl
DEMO_REPORT := $(BUILD)/demo-report.json
DEMO_PREDS  := $(BUILD)/demo-predictions.jsonl
DEMO_MODEL  := $(BUILD)/demo-model

.PHONY: help setup test demo bench stop clean

help:  ## list targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

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

demo: setup  ## replay the built-in demo stream offline and print the report
	@mkdir -p $(BUILD)
	$(BIN)/python -m streamlearn.streams $(DEMO_DATA)
	$(BIN)/streamlearn replay $(DEMO_DATA) --report $(DEMO_REPORT) \
	  --predictions $(DEMO_PREDS) --save-model $(DEMO_MODEL)
	@cat $(DEMO_REPORT)

bench: setup  ## run the quality benchmark (prints a table)
	$(BIN)/python benchmarks/quality.py

stop:  ## stop background services started by this clone (nothing yet)
	@echo "stop: nothing is running from this clone"

clean:  ## remove build outputs and caches in the clone (keeps the shared venv)
	rm -rf $(BUILD) .pytest_cache .hypothesis *.egg-info
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
