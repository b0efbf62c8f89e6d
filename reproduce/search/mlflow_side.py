"""The study in MLflow: one parent run per study (shared by every worker), its progress metrics,
small nested runs for trials that trained nothing, and closing the runs of dead workers' trials."""

from __future__ import annotations

import json
import sys
import time

from optuna.trial import TrialState

from .. import tracking
from ..config import flatten
from ..contract import VAL_ACC
from ..experiments import plan
from ..study_results import best_trial, counts, finished, is_feasible, pareto_trials
from .spec import SearchSpec
from .storage import redact, sqlite_init_lock


def client_and_experiment(profile: str):
    """The MLflow client and the profile's experiment (creating a fresh SQLite store safely)."""
    with sqlite_init_lock(tracking.tracking_uri()):
        c = tracking.client()
        return c, tracking.experiment_id(c, profile)


def parent_run(c, exp_id: str, study, spec: SearchSpec, url: str, created: bool) -> str:
    """One MLflow parent run per study, shared by every worker: the creator of the study makes it
    and records its id in the study; others read it from there (or find it by tags)."""
    if not created:
        for _ in range(60):                      # the creator sets the id right after creating
            attrs = study.user_attrs
            if attrs.get("mlflow_parent_run_id") or not attrs.get("mlflow_parent_pending"):
                break
            time.sleep(0.5)
    run_id = study.user_attrs.get("mlflow_parent_run_id")
    if run_id:
        try:
            run = c.get_run(run_id)
            if run.info.experiment_id == exp_id and run.info.lifecycle_stage == "active":
                return run_id
        except Exception:  # noqa: BLE001 - not in this MLflow store (e.g. another tracking URI)
            pass
    found = c.search_runs([exp_id], f"tags.`optuna.study_name` = '{spec.study_name}' and "
                          f"tags.`optuna.storage` = '{redact(url)}' and tags.run_kind = 'search'",
                          order_by=["attributes.start_time ASC"], max_results=1)
    run_id = found[0].info.run_id if found else _create_parent(c, exp_id, spec, url)
    study.set_user_attr("mlflow_parent_run_id", run_id)
    study.set_user_attr("mlflow_parent_pending", False)
    return run_id


def _create_parent(c, exp_id: str, spec: SearchSpec, url: str) -> str:
    base_cfg = plan(spec.base, spec.profile, spec.fixed, spec.only)[0].cfg
    tags = {"run_kind": "search", "search": spec.name, "optuna.study_name": spec.study_name,
            "model": base_cfg.model.name, "dataset": base_cfg.data.dataset,
            "variant": f"search:{base_cfg.variant}",
            "optuna.storage": redact(url), "profile": spec.profile,
            "search.base": str(spec.base.stem), "search.variant": spec.variant or "",
            "git_commit": tracking.git_commit(),
            "mlflow.note.content": f"Optuna study {spec.study_name} ({spec.path.name}). "
                                  f"{spec.description}"}
    run_id = c.create_run(exp_id, run_name=f"search:{spec.study_name}", tags=tags).info.run_id
    params = {f"space.{p.name}": p.describe() for p in spec.space}
    params.update({"search.objectives": ", ".join(f"{o.direction} {o.metric}"
                                                  for o in spec.objectives),
                   "search.constraints": ", ".join(cn.describe() for cn in spec.constraints),
                   "search.sampler": json.dumps(spec.sampler),
                   "search.pruner": json.dumps(spec.pruner),
                   **{f"fixed.{k}": v for k, v in flatten(spec.fixed).items()}})
    tracking.log_params(c, run_id, params)
    return run_id


def mark_stale_run(c_holder: dict):
    """failed_trial_callback part: the MLflow run of a trial whose worker died is closed too."""
    def mark(study, trial) -> None:
        c, run_id = c_holder.get("client"), trial.user_attrs.get("mlflow_run_id")
        if c is None or not run_id:
            return
        try:
            if c.get_run(run_id).info.status == "RUNNING":
                c.set_tag(run_id, "optuna.state", "FAIL")
                c.set_tag(run_id, "failure_reason", "the worker stopped sending heartbeats (died "
                          "or was killed); Optuna retries the trial's parameters as a new trial")
                c.set_terminated(run_id, "KILLED")
        except Exception as e:  # noqa: BLE001 - bookkeeping must not stop the search
            print(f"[search] could not close MLflow run {run_id}: {e}", file=sys.stderr)
    return mark


def log_parent_progress(c, parent_id: str, study, spec: SearchSpec) -> None:
    n = counts(study)
    metrics = {"trials/complete": n[TrialState.COMPLETE], "trials/pruned": n[TrialState.PRUNED],
               "trials/failed": n[TrialState.FAIL]}
    if not spec.multi_objective:
        best = best_trial(study)
        if best is not None:
            metrics[f"best/{spec.objectives[0].metric}"] = best.values[0]
    elif any(is_feasible(t) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))):
        metrics["pareto/size"] = len(pareto_trials(study))
    step = max((t.number for t in study.get_trials(deepcopy=False)), default=0)
    try:
        tracking.log_metrics(c, parent_id, metrics, step=step)
        c.set_tag(parent_id, "optuna.n_trials", str(spec.trials))
    except Exception as e:  # noqa: BLE001
        print(f"[search] could not log progress to the parent run: {e}", file=sys.stderr)


def marker_run(c, exp_id: str, parent_id: str, tags: dict, name: str, status: str,
               params: dict | None = None, metrics: dict | None = None,
               history: list[tuple[int, float]] | None = None) -> str:
    """A nested run for a trial that trained nothing (reused config, invalid config). It has no
    `config_hash` or `figures` tag, so figure selection and run reuse never pick it."""
    run_id = c.create_run(exp_id, run_name=name, tags={**tags, "mlflow.parentRunId": parent_id}).info.run_id
    if params:
        tracking.log_params(c, run_id, params)
    for step, value in history or []:
        tracking.log_metrics(c, run_id, {VAL_ACC: value}, step=step)
    if metrics:
        tracking.log_metrics(c, run_id, metrics, step=max([s for s, _ in history or []] or [0]))
    c.set_terminated(run_id, status)
    return run_id


def mark_parent_running(c, parent_id: str) -> None:
    try:
        c.update_run(parent_id, status="RUNNING")
    except Exception:  # noqa: BLE001 - bookkeeping must not stop the search
        pass


def finish_parent(c, parent_id: str, study, spec: SearchSpec) -> bool:
    """Terminate the parent run (FINISHED, with its end time) once the study has all its trials."""
    if finished(counts(study)) < spec.trials:
        return False
    try:
        c.set_terminated(parent_id, "FINISHED")
    except Exception:  # noqa: BLE001 - bookkeeping must not stop the search
        return False
    return True
