# Reproduction suite for "Growing Efficient Deep Networks by Structured Continuous Sparsification".
# `make help` lists every target. Every target builds the virtual environment it needs on first use.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

PROFILE ?= smoke
DATA_DIR ?= $(CURDIR)/data
MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db
OPTUNA_STORAGE ?= sqlite:///$(CURDIR)/optuna.db
FORCE ?= 0
MODEL ?= resnet20
SEARCH ?= search-resnet20-budget
TRIALS ?=
WORKERS ?=
PARETO_INDEX ?=
PORT ?= 5000
DASHBOARD_PORT ?= 8080
# `make mlflow-ui`: one worker and no background job runner serve a local store in ~0.5 GB;
# MLFLOW_UI_WORKERS=4 MLFLOW_UI_JOBS=true gives MLflow's own default set-up (~3 GB)
MLFLOW_UI_WORKERS ?= 1
MLFLOW_UI_JOBS ?= false
PYTEST_ARGS ?=
# extra arguments of bench/gpu_check.py for make gpu-check, e.g. "--quick" or "--out FILE"
GPU_CHECK_ARGS ?=
# processes training at once for figure/table/run targets (each run is trained by exactly one);
# smoke runs use one thread each, so the smoke profile defaults to one process per core
# (with RUNS_PER_GPU=k and no JOBS: k runs on each visible GPU)
JOBS ?= $(if $(RUNS_PER_GPU),,$(if $(filter smoke,$(PROFILE)),$(shell nproc 2>/dev/null || echo 1),1))
RUNS_PER_GPU ?=
# where runs train: local (processes of this machine) or slurm (one Slurm job per missing run,
# docs/SLURM.md); NO_WAIT=1 returns once the jobs are submitted. Slurm resources default to the
# profile's launcher: section (experiments/profiles.yaml); these override it for every job:
LAUNCHER ?= local
NO_WAIT ?=
PARTITION ?=
ACCOUNT ?=
QOS ?=
TIME ?=
GPUS ?=
CPUS ?=
MEM ?=
LAUNCH_SET := $(foreach v,partition=$(PARTITION) account=$(ACCOUNT) qos=$(QOS) time_min=$(TIME) \
  gpus=$(GPUS) cpus=$(CPUS) mem_gb=$(MEM),$(if $(word 2,$(subst =, ,$(v))),--set launcher.$(v)))
# SET="key=value ...": config overrides for every run of the target (make figure-4 SET="data.image_size=32")
CONFIG_SET := $(foreach s,$(SET),--set $(s))

export PROFILE DATA_DIR MLFLOW_TRACKING_URI OPTUNA_STORAGE FORCE JOBS RUNS_PER_GPU LAUNCHER NO_WAIT
export PYTHONUNBUFFERED := 1

RUN := $(PY) -m reproduce

# every analysis/figure_<N>.py and analysis/table_<name>.py is a target
FIGURES := $(shell printf "%s\n" $(patsubst analysis/figure_%.py,%,$(wildcard analysis/figure_*.py)) | sort -n)
# the paper's tables are `make tables`; the studies behind the method's defaults and schedules
# (docs/METHOD.md) are tables too, drawn by `make studies`
STUDIES := schedule study
TABLES := $(filter-out $(STUDIES),$(sort $(patsubst analysis/table_%.py,%,$(wildcard analysis/table_*.py))))

.PHONY: help setup demo test test-fast figures tables studies run jobs flops list-runs list-experiments mlflow-ui \
        optuna-dashboard data-cifar10 data-cifar100 data-imagenet-smoke data-check-imagenet data-voc \
        data-sbd \
        lock clean-figures clean search search-best \
        figure-pareto gpu-check report

help: ## Show this help
	@echo "Usage: make <target> [PROFILE=smoke|paper] [FORCE=1] [DATA_DIR=...]"
	@echo
	@grep -hE '^[a-zA-Z0-9_%-]+:.*## ' $(MAKEFILE_LIST) | \
	  sed -e 's/$$(PORT)/$(PORT)/g' -e 's/$$(DASHBOARD_PORT)/$(DASHBOARD_PORT)/g' | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-22s\033[0m %s\n", $$1, $$2}'
	@echo
	@echo "Figures: $(addprefix figure-,$(FIGURES))"
	@echo "Tables:  $(addprefix table-,$(TABLES))"
	@echo "Studies: $(addprefix table-,$(STUDIES))"
	@echo
	@echo "Variables (current value):"
	@echo "  PROFILE=$(PROFILE)   smoke (CPU minutes, embedded digits) | paper (CIFAR-10; ImageNet for figure-3, table-imagenet; full schedules)"
	@echo "  FORCE=$(FORCE)   1 retrains runs already tracked"
	@echo "  JOBS=$(JOBS)   processes training at once (default: one per core for smoke, else 1)"
	@echo "  RUNS_PER_GPU=$(RUNS_PER_GPU)   runs sharing one GPU (JOBS then defaults to GPUs x RUNS_PER_GPU)"
	@echo "  LAUNCHER=$(LAUNCHER)   local | slurm (one Slurm job per missing run);  NO_WAIT=1 returns after submitting"
	@echo "  PARTITION ACCOUNT QOS TIME(min) GPUS CPUS MEM(GB)   Slurm resources per job (default: the profile's launcher: section)"
	@echo "  DATA_DIR=$(DATA_DIR)"
	@echo "  MLFLOW_TRACKING_URI=$(MLFLOW_TRACKING_URI)"
	@echo "  OPTUNA_STORAGE=$(OPTUNA_STORAGE)"
	@echo "  SET=\"$(SET)\"   config overrides for every run of a figure, table or make run"
	@echo "  EXP=$(EXP)   for make run;  MODEL=$(MODEL)   for make flops"
	@echo "  SEARCH=$(SEARCH)  TRIALS=$(TRIALS)  WORKERS=$(WORKERS)  PARETO_INDEX=$(PARETO_INDEX)"
	@echo "  PORT=$(PORT)  DASHBOARD_PORT=$(DASHBOARD_PORT)  MLFLOW_UI_WORKERS=$(MLFLOW_UI_WORKERS)  MLFLOW_UI_JOBS=$(MLFLOW_UI_JOBS)"
	@echo "  PYTEST_ARGS=$(PYTEST_ARGS)   extra pytest arguments for make test"
	@echo "  GPU_CHECK_ARGS=$(GPU_CHECK_ARGS)   extra bench/gpu_check.py arguments for make gpu-check"

$(STAMP): requirements.lock pyproject.toml
	@echo "Setting up $(VENV) from requirements.lock (first time: a few minutes)..."
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	@$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

setup: $(STAMP) ## Create the virtual environment from the pinned lock

demo: $(STAMP) ## The main job: grow ResNet-20 on embedded digits (CPU), track it, draw figures 7 and 9
	@$(RUN) demo

test: $(STAMP) ## Run the whole test suite (what CI runs)
	@$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP) ## Unit tests only (skips end-to-end runs)
	@$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

figure-%: $(STAMP) ## Train what figure N needs (PROFILE), then draw figures/figure-N.{png,pdf}
	@$(RUN) figure $* --profile $(PROFILE) $(CONFIG_SET) $(LAUNCH_SET)

table-%: $(STAMP) ## Train what a table needs, then write figures/table-NAME.{md,csv,tex}
	@$(RUN) table $* --profile $(PROFILE) $(CONFIG_SET) $(LAUNCH_SET)

figures: $(STAMP) ## Every figure for PROFILE
	@$(RUN) figure $(FIGURES) --profile $(PROFILE) $(CONFIG_SET) $(LAUNCH_SET)

tables: $(STAMP) ## Every table of the paper for PROFILE
	@$(if $(TABLES),$(RUN) table $(TABLES) --profile $(PROFILE) $(CONFIG_SET) $(LAUNCH_SET),echo "no tables yet")

studies: $(STAMP) ## The study tables behind the method's defaults (table-study, table-schedule)
	@$(RUN) table $(STUDIES) --profile $(PROFILE) $(CONFIG_SET) $(LAUNCH_SET)

report: $(STAMP) ## One shareable page of PROFILE's figures and tables: figures/report-PROFILE.{html,pdf}
	@$(RUN) report --profile $(PROFILE)

search: $(STAMP) ## Optuna search: make search SEARCH=search-resnet20-budget [TRIALS=n] [WORKERS=n]
	@$(RUN) search $(SEARCH) --profile $(PROFILE) $(if $(TRIALS),--trials $(TRIALS)) $(if $(WORKERS),--workers $(WORKERS)) $(LAUNCH_SET)

search-best: $(STAMP) ## Write the best trial (or Pareto point PARETO_INDEX) of SEARCH as an experiment file
	@$(RUN) search-best $(SEARCH) --profile $(PROFILE) $(if $(PARETO_INDEX),--pareto-index $(PARETO_INDEX))

jobs: $(STAMP) ## The suite's Slurm jobs (LAUNCHER=slurm): Slurm state, run state, link
	@$(RUN) jobs

figure-pareto: $(STAMP) ## Accuracy vs MACs of every trial of SEARCH, Pareto front, importances
	@$(RUN) pareto $(SEARCH) --profile $(PROFILE)

run: $(STAMP) ## Train one experiment file: make run EXP=figure-7 [SET="budget.target=0.3"]
	@test -n "$(EXP)" || { echo "make run needs EXP=<experiment>, e.g. make run EXP=figure-7 (make list-experiments lists them)"; exit 2; }
	@$(RUN) run $(EXP) --profile $(PROFILE) $(CONFIG_SET) $(LAUNCH_SET)

flops: $(STAMP) ## Params and MACs of a dense model: make flops MODEL=vgg16
	@$(RUN) flops --model $(MODEL)

list-runs: $(STAMP) ## List tracked runs of PROFILE
	@$(RUN) list runs --profile $(PROFILE)

list-experiments: $(STAMP) ## List experiment files and search specs
	@$(RUN) list experiments

mlflow-ui: $(STAMP) ## Browse every tracked run at http://127.0.0.1:$(PORT) (prints each runs table's link)
	@$(RUN) mlflow-ui --port $(PORT) --workers $(MLFLOW_UI_WORKERS) $(if $(filter true,$(MLFLOW_UI_JOBS)),--jobs)

optuna-dashboard: $(STAMP) ## Browse Optuna studies at http://127.0.0.1:$(DASHBOARD_PORT) (best trials under the constraints)
	@$(RUN) optuna-dashboard --port $(DASHBOARD_PORT)

data-cifar10: $(STAMP) ## Download CIFAR-10 into DATA_DIR
	@$(RUN) data cifar10 --root "$(DATA_DIR)"

data-cifar100: $(STAMP) ## Download CIFAR-100 into DATA_DIR
	@$(RUN) data cifar100 --root "$(DATA_DIR)"

data-imagenet-smoke: $(STAMP) ## Write the ImageNet-style digits tree (smoke profile) into DATA_DIR/imagenet-smoke
	@$(RUN) data make-smoke-imagenet

data-check-imagenet: $(STAMP) ## Classes and image counts of DATA_DIR/imagenet/{train,val}
	@$(RUN) data check imagenet

data-voc: $(STAMP) ## Download PASCAL VOC 2012 into DATA_DIR (VOCdevkit/VOC2012)
	@$(RUN) data voc --root "$(DATA_DIR)"

data-sbd: $(STAMP) ## Download SBD (1.4 GB) into DATA_DIR/sbd: VOC's train_aug set (data.sbd)
	@$(RUN) data sbd --root "$(DATA_DIR)"

gpu-check: $(STAMP) ## GPU cost of the paper profile in <= 8 min: one table + JSON in bench/results/ (bench/README.md)
	@$(PY) bench/gpu_check.py $(GPU_CHECK_ARGS)

lock: $(STAMP) ## Rewrite requirements.lock from the current environment
	@{ echo "# Exact versions of every package (pip freeze of a working environment)."; \
	   echo "# Regenerate with: make lock"; \
	   $(PY) -m pip freeze --all --exclude-editable | grep -v -E '^(pip|reproduce)=='; } > requirements.lock.new
	@mv requirements.lock.new requirements.lock

clean-figures: ## Delete generated figures and tables (tracked runs are kept)
	@find figures -type f ! -name README.md -delete

clean: ## Delete the virtual environment and generated figures (tracking stores are kept)
	@rm -rf $(VENV) *.egg-info
	@find figures -type f ! -name README.md -delete
