"""What a finished study says: each trial's kept metrics, feasibility, the best trial, the Pareto front.

Read by the search (progress, search-best) and by `analysis.search_plots`, so it imports only
optuna, the standard library and the tracking contract. A spec argument is anything with
`objectives` and `constraints` (a `SearchSpec`); this module never loads one.

Feasibility is Optuna's rule (every value set with `Trial.set_constraint` is <= 0), and the best
trial and the Pareto front are Optuna's own `study.best_trial` / `study.best_trials`, which in
Optuna >= 4.1 select among feasible trials only. So the suite, Optuna and its samplers agree.
"""

from __future__ import annotations

import math
from typing import Sequence

from optuna.trial import FrozenTrial, TrialState

from .contract import MACS_RATIO, PARAMS_RATIO, TRAIN_MACS_RATIO, USAGE, VAL_ACC

# Final metrics every trial keeps in its `metrics` user attribute (besides its objectives and
# constrained metrics): what the Pareto figure and optuna-dashboard show.
SUMMARY_METRICS = (VAL_ACC, MACS_RATIO, PARAMS_RATIO, TRAIN_MACS_RATIO, USAGE)


def summary_metrics(metrics: dict, spec) -> dict:
    keep = {*SUMMARY_METRICS, *(o.metric for o in spec.objectives),
            *(c.metric for c in spec.constraints)}
    return {k: metrics[k] for k in sorted(keep) if k in metrics and math.isfinite(metrics[k])}


def is_feasible(trial: FrozenTrial) -> bool:
    """Optuna's rule: every constraint value <= 0 (set with Trial.set_constraint)."""
    return all(v <= 0 for v in trial.constraints.values())


def counts(study) -> dict[TrialState, int]:
    trials = study.get_trials(deepcopy=False)
    return {s: sum(t.state == s for t in trials) for s in TrialState}


def finished(n: dict[TrialState, int]) -> int:
    """Trials that count towards a study's total: complete or pruned."""
    return n[TrialState.COMPLETE] + n[TrialState.PRUNED]


def complete_trials(study, feasible_only: bool = True) -> list[FrozenTrial]:
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [t for t in done if is_feasible(t)] if feasible_only else done


def best_trial(study) -> FrozenTrial | None:
    """Single objective: the best feasible complete trial (Optuna's `study.best_trial`), or None."""
    try:
        return study.best_trial
    except ValueError:              # no complete trial, or none is feasible
        return None


def pareto_trials(study) -> list[FrozenTrial]:
    """The feasible Pareto front (Optuna's `study.best_trials`), best first objective first."""
    sign = -1 if study.directions[0].name == "MAXIMIZE" else 1
    return sorted(study.best_trials, key=lambda t: (sign * t.values[0], t.number))


def pareto_mask(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[bool]:
    """True for each point that no other point dominates (as good in every coordinate, better in
    one), with "maximize"/"minimize" per coordinate.

    Optuna computes fronts over a study's own objectives only; the Pareto figure draws accuracy
    against MACs for every study, single-objective ones included, so it needs this one.
    """
    signs = [1 if d == "maximize" else -1 for d in directions]
    keyed = [[s * v for s, v in zip(signs, p)] for p in points]

    def dominates(a, b) -> bool:
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    return [not any(dominates(o, p) for o in keyed) for p in keyed]
