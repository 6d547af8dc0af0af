# t2vturbo — `make distill` runs the main job, `make test` the default test suite.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
EXPERIMENT ?= toy
ARGS ?=
STEPS ?= 4
PROMPT ?= a red circle moving left
TOY_TEACHER := artifacts/toy_teacher/unet/config.json

.PHONY: setup distill toy-teacher sample test test-slow test-all lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Local run (no cluster): distil the toy teacher into a 4-step student. The toy teacher is trained
# first by our own diffusion objective if artifacts/toy_teacher does not exist yet.
ifeq ($(EXPERIMENT),toy)
distill: setup $(TOY_TEACHER)
else
distill: setup
endif
	$(PY) -m t2vturbo.distill experiment=$(EXPERIMENT) $(ARGS)
	@echo "sample it with: $(PY) -m t2vturbo.sample --steps 4 --prompt \"$(PROMPT)\""

toy-teacher: $(TOY_TEACHER)
$(TOY_TEACHER): | setup
	$(PY) -m t2vturbo.distill experiment=toy_teacher

sample: setup
	$(PY) -m t2vturbo.sample --steps $(STEPS) --prompt "$(PROMPT)" $(ARGS)

test: setup
	$(PY) -m pytest -q -m "not slow" --timeout=900 tests

test-slow: setup
	$(PY) -m pytest -q -m slow --timeout=3600 tests

test-all: setup
	$(PY) -m pytest -q --timeout=3600 tests

lint: setup
	$(PY) -m ruff check t2vturbo tests bench data_recipes

bench: setup
	$(PY) bench/sampling.py

clean:
	rm -rf outputs samples .pytest_cache
