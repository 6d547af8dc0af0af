# t2vturbo — `make distill` runs the main job, `make test` the default test suite.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
EXPERIMENT ?= crowd
ARGS ?=
STEPS ?= 4
# The toy worlds (docs/TOY_WORLDS.md): EXPERIMENT=crowd (the default: one to three balls at random places and
# speeds, where the teacher's few-step DDIM is poor) and EXPERIMENT=toy (one shape). Each has a shipped teacher
# (t2vturbo/assets/<world>_teacher/MANIFEST.json) and shards that `make distill` writes when missing; `make
# toy-teacher` retrains the world's teacher into artifacts/<world>_teacher.
ifeq ($(EXPERIMENT),toy)
WORLD := toy
else ifeq ($(EXPERIMENT),crowd)
WORLD := crowd
PROMPT ?= two red balls moving left fast
endif
PROMPT ?= a red circle moving left
# both shipped teachers' MANIFEST reference scores are at w = 4
TOY_TEACHER_GUIDANCE ?= 4
TOYBENCH_PROMPTS ?= 60
TOY_TEACHER_DIR ?= t2vturbo/assets/$(WORLD)_teacher
TOY_TEACHER := $(TOY_TEACHER_DIR)/unet/config.json
RETRAINED_TEACHER := artifacts/$(WORLD)_teacher/unet/config.json
TOY_SHARDS := artifacts/$(WORLD)_shards/index.json
# The report at the end of `make distill` (python -m t2vturbo.eval.report, docs/EVALUATION.md): the 4-step ToyBench
# lines use TOYBENCH_SAMPLES samples per prompt on the first TOYBENCH_PROMPTS held-out prompts of the world; the
# student is compared with the teacher's DDIM at the student's guidance (TOY_GUIDANCE; empty: the export's, the
# middle of its training w range) and at the teacher's own best few-step guidance (TOY_TEACHER_GUIDANCE).
TOYBENCH_SAMPLES ?= 4
TOY_GUIDANCE ?=
# prompts of the report's guidance-response check (4 w values, teacher DDIM 50 at each)
GUIDANCE_RESPONSE_PROMPTS ?= 8
# Cluster (docs/CLUSTER.md). LAUNCHER=slurm submits launch/distill.sbatch instead of running here; unset,
# it is slurm when `make distill` finds sbatch and a controller that answers `scontrol ping`, else local.
NODES ?= 1
GPUS ?= 1
TASKS_PER_NODE ?= $(GPUS)
CPUS_PER_TASK ?= 8
PARTITION ?=
TIME ?= 04:00:00
SBATCH_ARGS ?=
WAIT ?=
JOB ?=
SIGNAL ?=
ifneq ($(filter distill,$(MAKECMDGOALS)),)
LAUNCHER ?= $(shell command -v sbatch >/dev/null 2>&1 && timeout 10 scontrol ping >/dev/null 2>&1 && echo slurm || echo local)
endif
LAUNCHER ?= local

.PHONY: setup distill distill-status distill-cancel toy-teacher sample test test-unit test-slow test-all test-slurm lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,curate,plots]'
	# curation tools without their opencv-python pin (see pyproject.toml, extra "curate")
	$(PY) -m pip install -q --no-deps scenedetect==0.7.2 rapidocr_onnxruntime==1.4.4
	touch $@

# Slurm: submit launch/distill.sbatch (NODES x TASKS_PER_NODE tasks, one per GPU; GPUS=0 for CPU
# tasks) with experiment=$(EXPERIMENT) $(ARGS) as Hydra overrides; prints the job id and the log path
# (OUTPUT_DIR/slurm/). WAIT=1 waits for the job. Inputs (e.g. artifacts/toy_teacher) must exist.
ifeq ($(LAUNCHER),slurm)
distill: setup
	launch/submit.sh --nodes '$(NODES)' --gpus '$(GPUS)' --tasks-per-node '$(TASKS_PER_NODE)' \
		--cpus-per-task '$(CPUS_PER_TASK)' --partition '$(PARTITION)' --time '$(TIME)' $(strip \
		$(foreach a,$(SBATCH_ARGS),'--sbatch=$(a)') $(if $(filter 1 yes true,$(WAIT)),--wait)) \
		-- experiment=$(EXPERIMENT) $(ARGS)
# Local run (no cluster): distil the world's shipped teacher into a 4-step student, reading the world's
# webdataset shards (written first if missing). Ends with the run's report (t2vturbo.eval.report, also written to
# outputs/$(EXPERIMENT)/report.json and report.md): the ToyBench lines of the teacher (DDIM 4 at the student's
# guidance and at its own, DDIM 50 at its own) and of the student (4 steps), the student minus each teacher line,
# paired over prompts with a 95 % bootstrap interval, and how far the student's samples follow w compared with
# the teacher's (the guidance response).
else ifneq ($(WORLD),)
distill: setup $(TOY_TEACHER) $(TOY_SHARDS)
	$(PY) -m t2vturbo.distill experiment=$(EXPERIMENT) model.path=$(TOY_TEACHER_DIR) $(ARGS)
	$(PY) -m t2vturbo.eval.report outputs/$(EXPERIMENT) --teacher $(TOY_TEACHER_DIR) --num-prompts $(TOYBENCH_PROMPTS) \
		--samples-per-prompt $(TOYBENCH_SAMPLES) $(if $(TOY_GUIDANCE),--guidance $(TOY_GUIDANCE)) \
		--teacher-guidance $(TOY_TEACHER_GUIDANCE) --guidance-response-prompts $(GUIDANCE_RESPONSE_PROMPTS)
	$(PY) -m t2vturbo.hub card outputs/$(EXPERIMENT)/export --report outputs/$(EXPERIMENT)/report.json
	@echo "sample it with: $(PY) -m t2vturbo.sample --steps 4 --checkpoint outputs/$(EXPERIMENT)/export --prompt \"$(PROMPT)\""
else
distill: setup
	$(PY) -m t2vturbo.distill experiment=$(EXPERIMENT) $(ARGS)
endif

# Your t2vturbo jobs (JOB=ID: that job in detail).
distill-status:
	@if [ -n '$(JOB)' ]; then scontrol show job '$(JOB)'; \
	else squeue --me -o '%.12i %.28j %.10T %.10M %.12l %.6D %.9r %R' | awk 'NR == 1 || $$2 ~ /^t2vturbo/'; fi

# Cancel JOB=ID (or all your t2vturbo jobs); SIGNAL=USR1: checkpoint now and requeue instead.
distill-cancel:
	@if [ -n '$(SIGNAL)' ]; then test -n '$(JOB)' || { echo 'SIGNAL needs JOB=ID' >&2; exit 2; }; \
		scancel --signal='$(SIGNAL)' --batch '$(JOB)' && echo 'sent SIG$(SIGNAL) to job $(JOB)'; \
	elif [ -n '$(JOB)' ]; then scancel '$(JOB)' && echo 'cancelled job $(JOB)'; \
	else ids=$$(squeue --me -h -o '%i %j' | awk '$$2 ~ /^t2vturbo/ {print $$1}'); \
		if [ -n "$$ids" ]; then scancel $$ids && echo "cancelled $$ids"; else echo 'no t2vturbo jobs'; fi; fi

$(TOY_SHARDS): | setup
	$(PY) -m data_recipes.toy_world --world $(WORLD) --out artifacts/$(WORLD)_shards --num-clips 1024 --shard-size 256 \
		--textured-fraction 0

# Retrain the world's teacher into artifacts/<world>_teacher (re-running resumes from the last checkpoint).
# In stages (crowd: 2, toy: 3; t2vturbo/conf/experiment/<world>_teacher*.yaml; docs/TOY_WORLDS.md, docs/TEACHERS.md).
toy-teacher: $(RETRAINED_TEACHER)
artifacts/crowd_teacher/unet/config.json: | setup
	$(PY) -m t2vturbo.distill experiment=crowd_teacher
	$(PY) -m t2vturbo.distill experiment=crowd_teacher_high
artifacts/toy_teacher/unet/config.json: | setup
	$(PY) -m t2vturbo.distill experiment=toy_teacher
	$(PY) -m t2vturbo.distill experiment=toy_teacher_direction
	$(PY) -m t2vturbo.distill experiment=toy_teacher_finish

sample: setup
	$(PY) -m t2vturbo.sample --steps $(STEPS) --prompt "$(PROMPT)" $(ARGS)

# two pytest-xdist workers (the in-process tests run on one torch thread each; the Slurm tests stay on one worker)
test: setup
	$(PY) -m pytest -q -m "not slow" --timeout=900 --durations=25 -n 2 --dist loadgroup tests

# The fast unit tests alone (tests/unit: the math, the CD step, config and trainer parts; well under a minute
# on 2 cores), for the edit-test loop; `make test` runs them too.
test-unit: setup
	$(PY) -m pytest -q -m "not slow" --timeout=120 tests/unit

# The Slurm tests alone (also part of `make test`; they skip when slurm-wlm/munge are not installed).
test-slurm: setup
	$(PY) -m pytest -q -m slurm --timeout=900 tests/slurm

test-slow: setup
	$(PY) -m pytest -q -m slow --timeout=3600 tests

test-all: setup
	$(PY) -m pytest -q --timeout=3600 tests

lint: setup
	$(PY) -m ruff check t2vturbo tests bench data_recipes
	$(PY) -m ruff format --check t2vturbo tests bench data_recipes

bench: setup
	$(PY) bench/sampling.py

clean:
	rm -rf outputs samples .pytest_cache
