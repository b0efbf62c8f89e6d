"""From a finished study to an experiment file: pick a trial, write it as experiments/<spec>-best.yaml."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import yaml
from optuna.trial import FrozenTrial, TrialState

from ..config import ConfigError, flatten, unflatten
from ..experiments import EXPERIMENTS_DIR, load_yaml, plan
from ..study_results import best_trial, complete_trials, pareto_trials
from .spec import SearchSpec, deep_merge, spec_ref


def fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _feasible(study, spec: SearchSpec) -> list[FrozenTrial]:
    """The feasible complete trials, or ConfigError saying why there are none and what to do."""
    feasible = complete_trials(study)
    if not feasible:
        all_done = complete_trials(study, feasible_only=False)
        hint = (f" ({len(all_done)} complete trials violate the constraints "
                f"{'; '.join(c.describe() for c in spec.constraints)}; pick one with --trial N)"
                if all_done else "")
        raise ConfigError(f"study {spec.study_name} has no complete feasible trial yet{hint}; run "
                          f"more trials with `make search SEARCH={spec.name} PROFILE={spec.profile}`")
    return feasible


def pareto_table(study, spec: SearchSpec) -> list[str]:
    """The feasible Pareto front as printable lines: index, trial, objective values, params."""
    feasible = _feasible(study, spec)
    front = pareto_trials(study)
    header = "  ".join(f"{o.metric:>16s}" for o in spec.objectives)
    lines = [f"Pareto front of {spec.study_name} ({len(front)} of {len(feasible)} feasible "
             f"complete trials):", f"  {'index':>5s}  {'trial':>5s}  {header}  params"]
    for i, t in enumerate(front):
        vals = "  ".join(f"{v:16.4g}" for v in t.values)
        ps = ", ".join(f"{k}={fmt(v)}" for k, v in t.params.items())
        lines.append(f"  {i:5d}  {t.number:5d}  {vals}  {ps}")
    return lines


def choose_trial(study, spec: SearchSpec, trial_number: int | None = None,
                 pareto_index: int | None = None) -> FrozenTrial:
    """The trial search-best writes: an explicit one, the best feasible, or a Pareto point."""
    if trial_number is not None:
        match = [t for t in study.get_trials(deepcopy=False) if t.number == trial_number]
        if not match or match[0].state != TrialState.COMPLETE:
            raise ConfigError(f"study {spec.study_name}: trial {trial_number} is not a complete trial")
        return match[0]
    _feasible(study, spec)
    if not spec.multi_objective:
        return best_trial(study)
    front = pareto_trials(study)
    index = 0 if pareto_index is None else pareto_index
    if not 0 <= index < len(front):
        raise ConfigError(f"--pareto-index {index}: choose 0 to {len(front) - 1}")
    return front[index]


def _best_run(spec: SearchSpec, run: dict, params: dict) -> dict:
    """The base run with the search's fixed overrides and the trial's parameters folded in.

    A trial resolved: defaults <- profiles.yaml <- base <- base profile <- run <- run profile
    <- (spec set <- spec profile set <- --set <- params). Folding the last group into the run's
    layers reproduces the trial's exact config (same hash) for the searched profile.
    """
    common = deep_merge(deep_merge(spec.base_set, spec.cli_set), params)
    new_run: dict = {"variant": run.get("variant", "grow"),
                     "config": deep_merge(run.get("config") or {}, common)}
    run_profiles = copy.deepcopy(run.get("profiles") or {})
    for p in sorted(set(run_profiles) | {k for k, v in spec.profile_sets.items() if v}):
        body = run_profiles.get(p) or {}
        layer = deep_merge(body.get("config") or {}, spec.profile_sets.get(p, {}))
        if layer:
            # keys this profile layer sets take the value the trial ended with; other keys keep
            # the run config's value (which already carries the trial's)
            full = flatten(deep_merge(deep_merge(deep_merge(layer, spec.base_set),
                                                 spec.profile_sets.get(p, {})),
                                      deep_merge(spec.cli_set, params)))
            body["config"] = unflatten({k: full[k] for k in flatten(layer)})
        run_profiles[p] = body
    if run_profiles:
        new_run["profiles"] = run_profiles
    return new_run


def write_best(spec: SearchSpec, trial: FrozenTrial, out_path: Path | None = None) -> Path:
    """The trial as a normal experiment file that `python -m reproduce run` trains (or reuses)."""
    base_exp = load_yaml(spec.base)
    runs = base_exp.get("runs") or [{"variant": "grow"}]
    run = next((r for r in runs if str(r.get("variant")) == spec.variant), runs[0]) \
        if spec.variant else runs[0]
    new_run = _best_run(spec, copy.deepcopy(run), unflatten(dict(trial.params)))
    values = ", ".join(f"{o.metric} = {fmt(v)}" for o, v in zip(spec.objectives, trial.values))
    name = f"{spec.name}-best"
    doc = {
        "name": name,
        "description": (f"Trial {trial.number} of Optuna study '{spec.study_name}' "
                        f"(spec {spec.path.name}, base {spec.base.stem}, profile {spec.profile}; "
                        f"{values}; MLflow run {trial.user_attrs.get('mlflow_run_id')}). "
                        f"Searched: {', '.join(f'{k} = {fmt(v)}' for k, v in trial.params.items())}. "
                        f"Written by `python -m reproduce search-best` on "
                        f"{time.strftime('%Y-%m-%d %H:%M')}."),
        "figures": [name],
    }
    for key in ("base", "profiles"):
        if base_exp.get(key):
            doc[key] = copy.deepcopy(base_exp[key])
    doc["runs"] = [new_run]
    out_path = Path(out_path) if out_path else EXPERIMENTS_DIR / f"{name}.yaml"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# Generated from Optuna study {spec.study_name} (trial {trial.number}) by\n"
              f"#   python -m reproduce search-best {spec_ref(spec)} --profile {spec.profile}\n"
              f"# A normal experiment file: python -m reproduce run {out_path}\n")
    out_path.write_text(header + yaml.safe_dump(doc, sort_keys=False, width=100))
    return out_path


def resolution_note(path: Path, spec: SearchSpec, trial: FrozenTrial) -> str | None:
    """Whether a written file resolves to the trial's exact configuration (and reuses its run)."""
    try:
        h = plan(path, spec.profile)[0].hash
    except ConfigError as e:
        return (f"note: {path} does not resolve where it is ({e}); experiment files belong in "
                f"experiments/, beside profiles.yaml")
    want = trial.user_attrs.get("config_hash")
    if want and h != want:
        return (f"note: {path.name} resolves to config {h}, the trial ran {want} "
                f"(profiles differ from the search's); it will be trained anew")
    if want:
        return (f"{path.name} resolves to the trial's exact configuration (hash {h}): running it "
                f"with --profile {spec.profile} reuses the trial's tracked run")
    return None
