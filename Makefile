# t2vturbo — `make distill` runs the main job, `make test` the default test suite.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
EXPERIMENT ?= toy
ARGS ?=
STEPS ?= 4
PROMPT ?= a red circle moving left
TOY_TEACHER := artifacts/toy_teacher/unet/config.json
TOY_SHARDS := artifacts/toy_shards/index.json
TOYBENCH_PROMPTS ?= 20

.PHONY: setup distill toy-teacher sample test test-slow test-all lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Local run (no cluster): distil the toy teacher into a 4-step student, reading the toy world's
# webdataset shards (written first if missing). The toy teacher is trained first by our own
# diffusion objective if artifacts/toy_teacher does not exist yet. Ends with the ToyBench lines
# of the student (4 steps) and of the teacher (4 and 50 DDIM steps).
ifeq ($(EXPERIMENT),toy)
distill: setup $(TOY_TEACHER) $(TOY_SHARDS)
	$(PY) -m t2vturbo.distill experiment=toy $(ARGS)
	$(PY) -m t2vturbo.eval.toybench --checkpoint outputs/toy --steps 4 --num-prompts $(TOYBENCH_PROMPTS) --json outputs/toy/toybench_student_4.json
	$(PY) -m t2vturbo.eval.toybench --teacher --checkpoint artifacts/toy_teacher --steps 4 --guidance 4 --num-prompts $(TOYBENCH_PROMPTS) --json outputs/toy/toybench_teacher_4.json
	$(PY) -m t2vturbo.eval.toybench --teacher --checkpoint artifacts/toy_teacher --steps 50 --guidance 4 --num-prompts $(TOYBENCH_PROMPTS) --json outputs/toy/toybench_teacher_50.json
	@echo "sample it with: $(PY) -m t2vturbo.sample --steps 4 --prompt \"$(PROMPT)\""
else
distill: setup
	$(PY) -m t2vturbo.distill experiment=$(EXPERIMENT) $(ARGS)
endif

$(TOY_SHARDS): | setup
	$(PY) -m data_recipes.toy_world --out artifacts/toy_shards --num-clips 1024 --shard-size 256 --textured-fraction 0

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
