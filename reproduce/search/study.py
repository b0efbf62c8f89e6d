"""The Optuna study of a spec: its sampler and pruner, created once and loaded by every worker."""

from __future__ import annotations

import sys

import optuna

from .. import tracking
from ..config import ConfigError
from ..study_results import best_trial, pareto_trials
from .spec import PRUNERS, SAMPLERS, SearchSpec
from .storage import make_storage, redact, storage_url

# First line of the study note the search writes; a note without it was written by someone in
# optuna-dashboard and is left alone.
NOTE_MARK = ("_Written by `python -m reproduce search` after every trial; delete this line to keep "
             "your own note._")


def build_sampler(spec: SearchSpec, worker_index: int = 0, offset: int = 0):
    """The spec's sampler. Its seed is offset by the worker index (parallel workers must not draw
    the same points) and by the number of trials a resumed study already has (a resumed search
    must not replay the sequence it started with); a fresh single-worker study is reproducible.

    Constraints reach the samplers through `Trial.set_constraint` (Optuna 5 deprecates the
    samplers' `constraints_func`): TPE, NSGA-II/III and GP read them from every finished trial.
    """
    opts = {k: v for k, v in spec.sampler.items() if k != "name"}
    if opts.get("seed") is not None:
        opts["seed"] = int(opts["seed"]) + worker_index + 7919 * offset
    name = spec.sampler["name"]
    if name == "qmc":
        opts.setdefault("warn_independent_sampling", False)
    return getattr(optuna.samplers, SAMPLERS[name])(**opts)


def build_pruner(spec: SearchSpec):
    opts = {k: v for k, v in spec.pruner.items() if k != "name"}
    return getattr(optuna.pruners, PRUNERS[spec.pruner["name"]])(**opts)


def _study_attrs(spec: SearchSpec, claim_parent: bool) -> dict:
    return {"spec": spec.name, "spec_path": str(spec.path), "base": str(spec.base),
            "variant": spec.variant or "", "profile": spec.profile,
            "objectives": [f"{o.direction} {o.metric}" for o in spec.objectives],
            "constraints": [c.describe() for c in spec.constraints],
            "space": {p.name: p.describe() for p in spec.space},
            "mlflow_tracking_uri": redact(tracking.tracking_uri()),
            **({"mlflow_parent_pending": True} if claim_parent else {})}


def _check_matches(study, spec: SearchSpec) -> None:
    """A resumed study must still optimise what its trials were scored on."""
    have = [d.name.lower() for d in study.directions]
    if have != spec.directions:
        raise ConfigError(f"study {spec.study_name!r} exists with directions {have}, but "
                          f"{spec.path} now declares {spec.directions}; start a new study with "
                          f"--study-name NAME (or delete the old one)")
    # Constraint values are stored per trial: old trials keep the values (or lack of values) of
    # the constraints they ran under, and Optuna would count a trial without values as feasible.
    have = study.user_attrs.get("constraints")
    want = [c.describe() for c in spec.constraints]
    if have is not None and list(have) != want:
        raise ConfigError(f"study {spec.study_name!r} exists with constraints {list(have) or 'none'}, "
                          f"but {spec.path} now declares {want or 'none'}; start a new study with "
                          f"--study-name NAME (or delete the old one)")


def open_study(spec: SearchSpec, storage, worker_index: int = 0, create: bool = True,
               claim_parent: bool = False):
    """(study, created): create the study, or load it when another worker (or run) already did.

    With `claim_parent`, a newly created study is marked as waiting for its MLflow parent run, so
    that workers starting at the same moment wait for this one to create it (see
    mlflow_side.parent_run)."""
    sampler, pruner = build_sampler(spec, worker_index), build_pruner(spec)
    if create:
        try:
            study = optuna.create_study(storage=storage, study_name=spec.study_name,
                                        directions=spec.directions, sampler=sampler, pruner=pruner)
            study.set_metric_names([o.metric for o in spec.objectives])
            for k, v in _study_attrs(spec, claim_parent).items():
                study.set_user_attr(k, v)
            return study, True
        except optuna.exceptions.DuplicatedStudyError:
            pass
    try:
        study = optuna.load_study(study_name=spec.study_name, storage=storage, sampler=sampler,
                                  pruner=pruner)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise ConfigError(f"no study {spec.study_name!r} in the Optuna storage (studies there: "
                          f"{', '.join(names) or 'none'}); run `make search SEARCH={spec.name} "
                          f"PROFILE={spec.profile}` first, or pass --study-name") from None
    _check_matches(study, spec)
    n = len(study.get_trials(deepcopy=False))
    if n:
        study.sampler = build_sampler(spec, worker_index, offset=n)
    return study, False


def load_study_for(spec: SearchSpec, url: str | None = None):
    storage = make_storage(storage_url(url), spec.heartbeat)
    study, _ = open_study(spec, storage, create=False)
    return study


def record_best(study, spec: SearchSpec) -> None:
    """Show Optuna's constrained choice where optuna-dashboard shows things.

    Optuna knows the constraints (`Trial.set_constraint`): its `study.best_trial(s)` and its
    samplers skip infeasible trials, as search-best and the Pareto figure do. optuna-dashboard 0.21
    does not: it marks as "best" the storage's unconstrained best trial (and draws an unconstrained
    Pareto front), which may break a constraint. So Optuna's choice also goes into the study user
    attribute `best_feasible_trials` and, for a constrained spec, into the study's note, both on
    the dashboard's study page.
    """
    # optuna_dashboard is imported here: it takes seconds, and only a running search writes notes.
    from optuna_dashboard import get_note, save_note

    try:
        if spec.multi_objective:
            chosen = [t.number for t in pareto_trials(study)]
        else:
            best = best_trial(study)
            chosen = [best.number] if best is not None else []
        study.set_user_attr("best_feasible_trials", chosen)
        if not spec.constraints:
            return
        note = get_note(study)
        if note and not note.startswith(NOTE_MARK):
            return
        which = ("Feasible Pareto front (Optuna's `study.best_trials`)" if spec.multi_objective
                 else "Best feasible trial (Optuna's `study.best_trial`, what search-best writes)")
        save_note(study, f"{NOTE_MARK}\n\n"
                         f"**Constraints**: {'; '.join(c.describe() for c in spec.constraints)}\n\n"
                         f"**{which}**: {', '.join(f'#{n}' for n in chosen) or 'none yet'}\n\n"
                         f"`make optuna-dashboard` marks it as the best trial; optuna-dashboard "
                         f"started on its own ignores the constraints there. Each trial's user "
                         f"attribute `feasible` says whether it meets them.\n")
    except Exception as e:  # noqa: BLE001 - bookkeeping must not stop the search
        print(f"[search] could not record the best trial on the study: {e}", file=sys.stderr)
