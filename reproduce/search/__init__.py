"""Optuna search over the method's hyper-parameters, tracked in MLflow, browsable in optuna-dashboard.

A search spec (experiments/search-*.yaml) names a base experiment file and searches some of its
config fields:

    name: search-resnet20-budget
    description: ...
    base: figure-7                  # experiment file whose run is the starting point
    variant: grow                   # optional: which of its runs (default: the first)
    set: {train: {epochs: 20}}      # optional: fixed overrides for every trial (nested or dotted)
    objectives:                     # one (single-objective) or several (multi-objective, Pareto)
      - {metric: val/acc, direction: maximize}
    constraints:                    # optional: feasible when min <= metric <= max
      - {metric: budget/usage, max: 0.55}
    space:                          # dotted config keys, suggested in this order
      budget.lambda_base: {type: float, low: 0.01, high: 0.3, log: true}
      budget.growth_push: {type: categorical, choices: [uniform, cost]}
      temperature.decay: {type: float, low: 0.5, high: 0.99,
                          when: {temperature.schedule: separate_decayed}}   # conditional
    sampler: {name: tpe, seed: 0}   # + any option of the Optuna sampler
    pruner: {name: median, n_warmup_steps: 5}   # + any option of the Optuna pruner
    trials: 20                      # finished (complete or pruned) trials the study ends with
    heartbeat: {interval: 30, grace_period: 120, max_retry: 2}   # optional
    profiles:                       # optional per-profile changes
      smoke: {trials: 8, set: {train: {epochs: 12}}}

A trial is the base run resolved through `experiments.plan` with the suggested values as the
highest-precedence overrides, trained and tracked by `runner.train_tracked` as a normal run, nested
under the study's MLflow parent run. See docs/SEARCH.md for usage, workers and storage.

Modules, each importing only those before it (the trial results they read, feasibility, the best
trial and the Pareto front, are `reproduce.study_results`, shared with `analysis.search_plots`):
    spec         the spec schema and its validation (`load_spec`)
    storage      the Optuna storage URL, opening stores from many processes
    study        sampler, pruner, creating or loading the study
    mlflow_side  the MLflow parent run and marker runs
    objective    what Optuna calls per trial (`suggest`, `TrialObjective`)
    worker       the worker loop and the coordinator (`work`, `run_search`)
    best         the chosen trial as an experiment file (`choose_trial`, `write_best`)
The command-line commands (search, search-best, pareto) live in reproduce/cli_search.py.
"""

from __future__ import annotations

from ..study_results import (best_trial, complete_trials, counts, is_feasible, pareto_mask,
                             pareto_trials, summary_metrics)
from .best import choose_trial, pareto_table, resolution_note, write_best
from .objective import TrialObjective, suggest
from .spec import Constraint, Objective, Param, SearchSpec, is_spec, load_spec, spec_ref
from .storage import make_storage, redact, storage_url
from .study import load_study_for, open_study
from .worker import SearchError, run_search, work

__all__ = ["Constraint", "Objective", "Param", "SearchError", "SearchSpec", "TrialObjective",
           "best_trial", "choose_trial", "complete_trials", "counts", "is_feasible", "is_spec",
           "load_spec", "load_study_for", "make_storage", "open_study", "pareto_mask",
           "pareto_table", "pareto_trials", "redact", "resolution_note", "run_search",
           "spec_ref", "storage_url", "suggest", "summary_metrics", "work", "write_best"]
