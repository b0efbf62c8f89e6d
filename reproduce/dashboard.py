"""The suite's optuna-dashboard: optuna-dashboard's own app on a storage view that shows a
constrained study's feasibility, so every "best" it shows is Optuna's constrained choice.

optuna-dashboard 0.21 reads feasibility from Optuna's older per-trial attribute `constraints`
(a list of values), which Optuna 5's `Trial.set_constraint` no longer writes (it stores one
`constraints:<name>` attribute per constraint), and takes a study's best trial from
`storage.get_best_trial` (single objective) or its own unconstrained Pareto front, both blind to
constraints. So it named an infeasible trial "Best Trial". Here:

- `FeasibilityStorage` wraps the study's storage and hands the dashboard every trial with the
  older list as well (read-only: nothing is written to the storage, where the list would count
  each constraint twice for Optuna 5's samplers). The dashboard then greys out infeasible trials
  in its plots and draws the history's best-value line through feasible trials. Its
  `get_best_trial` is the best feasible trial.
- `FeasibleBest`, a Bottle plugin on the study route, also replaces the route's `best_trials` (the
  study page's Best Trial card and the "Best Trial" badges of the trials list) with Optuna's own
  `study.best_trial` / `study.best_trials`, which select among feasible trials: the trial that
  `search-best` writes. Without a feasible trial, no trial is named best (where the dashboard
  alone would answer with an error), and a multi-objective study's front is the feasible one.

`make optuna-dashboard` serves it (`reproduce.serve`); `create_app` is the WSGI app.
"""

from __future__ import annotations

import abc
import copy
import inspect

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

LEGACY_CONSTRAINTS = "constraints"           # before Optuna 5, and optuna-dashboard: a list
NAMED_PREFIX = "constraints:"                # Optuna 5: one system attribute per constraint
STUDY_ROUTE = "/api/studies/<study_id:int>"  # optuna-dashboard's study detail (its best_trials)


def with_constraint_list(trial: FrozenTrial) -> FrozenTrial:
    """The trial as optuna-dashboard reads feasibility: its named constraint values also as the
    older list (a copy; the stored trial is not changed)."""
    attrs = trial.system_attrs
    named = [v for k, v in attrs.items() if k.startswith(NAMED_PREFIX)]
    if not named or LEGACY_CONSTRAINTS in attrs:
        return trial
    shown = copy.copy(trial)
    shown._system_attrs = {**attrs, LEGACY_CONSTRAINTS: named}
    return shown


def _delegate(name: str):
    def method(self, *args, **kwargs):
        return getattr(self.inner, name)(*args, **kwargs)
    method.__name__ = name
    return method


def _delegating(cls):
    """Every storage method not defined in the class goes to the wrapped storage."""
    for name, _ in inspect.getmembers(BaseStorage, inspect.isfunction):
        if not name.startswith("_") and name not in cls.__dict__:
            setattr(cls, name, _delegate(name))
    return abc.update_abstractmethods(cls)


@_delegating
class FeasibilityStorage(BaseStorage):
    """A storage whose trials carry their constraint values in both of Optuna's formats."""

    def __init__(self, inner: BaseStorage):
        self.inner = inner

    def __getattr__(self, name):            # what a particular storage adds (engine, ...)
        return getattr(self.inner, name)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return with_constraint_list(self.inner.get_trial(trial_id))

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states=None) -> list[FrozenTrial]:
        return [with_constraint_list(t)
                for t in self.inner.get_all_trials(study_id, deepcopy=deepcopy, states=states)]

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        """The best feasible complete trial (single objective), as Optuna's `study.best_trial`
        chooses it; what the dashboard's Best Trial card and badges show."""
        best = feasible_best(self.inner, study_id)
        if len(best) != 1:
            raise ValueError(f"study {study_id} has no feasible complete trial")
        return with_constraint_list(best[0])


def feasible_best(storage: BaseStorage, study_id: int) -> list[FrozenTrial]:
    """Optuna's best trials of a study: for one objective the best feasible complete trial (none
    without one), for several the feasible Pareto front."""
    name = storage.get_study_name_from_id(study_id)
    study = optuna.load_study(study_name=name, storage=storage,
                              sampler=optuna.samplers.RandomSampler())
    if len(study.directions) > 1:
        return study.best_trials
    try:
        return [study.best_trial]
    except ValueError:                       # no complete trial, or none is feasible
        return []


class FeasibleBest:
    """Bottle plugin: the study route's `best_trials` become Optuna's constrained choice."""

    name, api = "reproduce-feasible-best", 2

    def __init__(self, storage: FeasibilityStorage):
        self.storage = storage

    def setup(self, app) -> None:
        if not any(r.rule == STUDY_ROUTE and r.method == "GET" for r in app.routes):
            raise RuntimeError(f"optuna-dashboard {_version()} has no route GET {STUDY_ROUTE}: the "
                               f"suite's dashboard cannot show the feasible best trial with it "
                               f"(written for optuna-dashboard 0.21; requirements.lock pins it)")

    def apply(self, callback, route):
        if route.rule != STUDY_ROUTE or route.method != "GET":
            return callback
        from optuna_dashboard._serializer import serialize_frozen_trial

        def study_detail(*args, **kwargs):
            body = callback(*args, **kwargs)
            if isinstance(body, dict) and "best_trials" in body and not body.get("is_preferential"):
                study_id = kwargs["study_id"]
                attrs = self.storage.get_study_system_attrs(study_id)
                body["best_trials"] = [
                    serialize_frozen_trial(study_id, with_constraint_list(t), attrs)
                    for t in feasible_best(self.storage.inner, study_id)]
            return body
        return study_detail


def _version() -> str:
    from optuna_dashboard import __version__
    return __version__


def open_storage(url: str) -> BaseStorage:
    """The study storage as optuna-dashboard opens it: read what is there, create no tables."""
    return optuna.storages.RDBStorage(url, skip_compatibility_check=True, skip_table_creation=True)


def create_app(storage: str | BaseStorage):
    """optuna-dashboard's WSGI app on `storage` (a URL or a storage), with the feasible best."""
    from optuna_dashboard import wsgi

    inner = open_storage(storage) if isinstance(storage, str) else storage
    shown = FeasibilityStorage(inner)
    app = wsgi(shown)
    app.install(FeasibleBest(shown))
    return app
