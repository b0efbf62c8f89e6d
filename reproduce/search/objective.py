"""The objective Optuna calls once per trial: suggest values, resolve the run, train (or reuse) it.

A trial is the base run resolved through `experiments.plan` with the suggested values as the
highest-precedence overrides, tracked as a normal run (`tracked_run.TrackedRun`) nested under the
study's MLflow parent run, and trained by `runner.train_tracked`.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import replace
from typing import Any

import optuna
from optuna.trial import TrialState

from .. import tracking
from ..config import ConfigError, flatten, to_dict, unflatten
from ..contract import final_metrics, with_derived
from ..experiments import PlannedRun, plan
from ..runner import train_tracked
from ..study_results import summary_metrics
from ..tracked_run import RunStopped, TrackedRun
from .mlflow_side import marker_run
from .spec import Param, SearchSpec, deep_merge, metric_value
from .storage import redact

# Trial user attributes written by the objective (fresh values overwrite inherited ones on retries).
TRIAL_ATTRS = ("mlflow_run_id", "config_hash", "reused_run_id", "metrics", "feasible",
               "fail_reason", "stop_reason", "surplus")


class TrialFailed(Exception):
    """A trial that cannot be run (its suggested config is invalid); recorded as FAIL."""


def suggest(trial, space: list[Param]) -> dict[str, Any]:
    """Suggest every (active) parameter of the space, in order."""
    params: dict[str, Any] = {}
    for p in space:
        if any(params.get(k) not in vals for k, vals in p.when.items()):
            continue
        if p.type == "categorical":
            params[p.name] = trial.suggest_categorical(p.name, p.choices)
        elif p.type == "int":
            params[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1),
                                               log=p.log)
        else:
            params[p.name] = trial.suggest_float(p.name, float(p.low), float(p.high), step=p.step,
                                                 log=p.log)
    return params


def _frozen(trial):
    """The stored state of a live trial (system attributes, constraints)."""
    return next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)


def _reason(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:2000]


class TrialObjective:
    """The function Optuna calls once per trial."""

    def __init__(self, spec: SearchSpec, c, exp_id: str, parent_id: str, url: str,
                 force: bool = False, progress: bool = True):
        self.spec, self.c, self.exp_id, self.parent_id = spec, c, exp_id, parent_id
        self.url, self.force, self.progress = url, force, progress
        self.last_trial_number: int | None = None

    def __call__(self, trial):
        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except Exception as e:
            if not trial.user_attrs.get("fail_reason"):
                trial.set_user_attr("fail_reason", _reason(e))
            raise

    def _run(self, trial):
        self.last_trial_number = trial.number
        self._start(trial)
        params = suggest(trial, self.spec.space)
        tags = self._tags(trial, params)
        pr = self._plan_or_fail(trial, params, tags)
        existing = None if self.force else tracking.find_finished(self.c, self.exp_id, pr.hash)
        values = self._reuse(trial, pr, existing, tags) if existing is not None else \
            self._train(trial, pr, tags)
        return values if self.spec.multi_objective else values[0]

    def _start(self, trial) -> None:
        """Clear what a retry inherited; stand down if the study already has its trials."""
        spec = self.spec
        inherited = trial.user_attrs                  # retries inherit the failed trial's attributes
        for key in TRIAL_ATTRS:
            if inherited.get(key) is not None:
                trial.set_user_attr(key, None)
        # Several workers may ask for a trial at once when one slot is left: the later one stands down.
        ahead = [t for t in trial.study.get_trials(deepcopy=False, states=(
            TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING))
            if t.number < trial.number]
        if len(ahead) >= spec.trials:
            trial.set_user_attr("surplus", True)
            raise TrialFailed(f"surplus: the study already has {spec.trials} trials; this worker "
                              f"asked for one at the same moment as another and stands down")

    def _tags(self, trial, params: dict) -> dict:
        spec = self.spec
        tags = {"optuna.study_name": spec.study_name, "optuna.trial_number": trial.number,
                "optuna.storage": redact(self.url), "optuna.params": json.dumps(params),
                "search": spec.name, "search.base": spec.base.stem}
        retry_of = _frozen(trial).system_attrs.get("failed_trial")
        if retry_of is not None:
            tags["optuna.retry_of"] = retry_of
        return tags

    def _run_name(self, trial) -> str:
        return f"trial-{trial.number} · {self.spec.study_name}"    # the trial first: names are cut short

    def _plan_or_fail(self, trial, params: dict, tags: dict) -> PlannedRun:
        """The trial's run, resolved; an invalid config fails the trial with a marker run."""
        spec = self.spec
        try:
            pr = plan(spec.base, spec.profile, deep_merge(spec.fixed, unflatten(params)), spec.only)[0]
        except ConfigError as e:
            reason = f"invalid configuration: {e}"
            trial.set_user_attr("fail_reason", reason[:2000])
            trial.set_user_attr("mlflow_run_id", marker_run(
                self.c, self.exp_id, self.parent_id, {**tags, "optuna.state": "FAIL",
                                                      "failure_reason": reason[:5000]},
                self._run_name(trial), "FAILED", params=params))
            raise TrialFailed(reason) from None
        pr = replace(pr, experiment=spec.name, figures=[spec.name])
        trial.set_user_attr("config_hash", pr.hash)
        return pr

    def _reuse(self, trial, pr: PlannedRun, existing, tags: dict) -> list[float]:
        """An identical config was already trained: take its results, record a marker run."""
        spec, c = self.spec, self.c
        first = spec.objectives[0].metric
        metrics = with_derived(final_metrics(existing.data.metrics, existing.data.params))
        history = [(m.step, m.value) for m in sorted(
            c.get_metric_history(existing.info.run_id, first), key=lambda m: m.step)
            if m.step > 0] if not spec.multi_objective else []
        for step, value in history:
            trial.report(value, step)
        values, _ = self._score(trial, metrics)
        trial.set_user_attr("reused_run_id", existing.info.run_id)
        obj_metrics = {f"objective/{o.metric}": v for o, v in zip(spec.objectives, values)}
        trial.set_user_attr("mlflow_run_id", marker_run(
            c, self.exp_id, self.parent_id,
            {**tags, "optuna.state": "COMPLETE", "state": "reused",
             "reused_run_id": existing.info.run_id, "reused_config_hash": pr.hash,
             "model": pr.cfg.model.name, "dataset": pr.cfg.data.dataset,
             "profile": spec.profile, "variant": pr.cfg.variant, "seed": str(pr.cfg.seed),
             "mlflow.note.content": f"Identical configuration (hash {pr.hash}) already "
                                    f"trained in run {existing.info.run_id}; its results are "
                                    f"reused, nothing was retrained."},
            self._run_name(trial) + " (reused)", "FINISHED", params=flatten(to_dict(pr.cfg)),
            metrics={**summary_metrics(metrics, spec), **obj_metrics}, history=history))
        print(f"[search] trial {trial.number}: configuration {pr.hash} already trained in run "
              f"{existing.info.run_id}; reused")
        return values

    def _train(self, trial, pr: PlannedRun, tags: dict) -> list[float]:
        """Train and track the run, reporting the first objective per epoch to the pruner."""
        spec, c = self.spec, self.c
        single, first = not spec.multi_objective, spec.objectives[0].metric
        last: dict = {}
        run = TrackedRun.create(c, self.exp_id, pr, parent_run_id=self.parent_id, extra_tags=tags,
                                run_name=self._run_name(trial))
        trial.set_user_attr("mlflow_run_id", run.run_id)

        def epoch_hook(step: int, stats: dict) -> None:
            if step == 0:
                return
            last.clear()
            last.update(with_derived(stats))
            if not single or first not in last:
                return
            value = last[first]
            trial.report(value, step)
            c.log_metric(run.run_id, "optuna/intermediate_value", value, step=step)
            if step < pr.cfg.train.epochs and trial.should_prune():    # never after the last epoch
                raise RunStopped(f"pruned by the {spec.pruner['name']} pruner after epoch {step} "
                                 f"({first} = {value:.4g})")

        try:
            train_tracked(run, self.progress, epoch_hook=epoch_hook)
        except RunStopped as e:
            self._record_stop(trial, e, last)
            raise optuna.TrialPruned(e.reason) from None
        except KeyboardInterrupt:          # Ctrl-C, or a preemption signal (tracked_run.Preempted)
            self._tag(trial, "optuna.state", "FAIL")
            trial.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number},
                                      skip_if_exists=False)
            print(f"\n[search] interrupted: trial {trial.number}'s parameters are queued and run "
                  f"first when the search resumes (same command)", file=sys.stderr)
            raise
        except Exception as e:
            self._record_failure(trial, e)
            raise
        return self._finish(trial, run.run_id, last, pr.cfg.train.epochs)

    def _record_stop(self, trial, e: RunStopped, last: dict) -> None:
        if e.run_id:
            self.c.set_tag(e.run_id, "optuna.state", "PRUNED")
        trial.set_user_attr("stop_reason", e.reason)
        if last:
            trial.set_user_attr("metrics", summary_metrics(last, self.spec))
            try:
                self._constrain(trial, last)
            except KeyError:
                pass

    def _record_failure(self, trial, e: Exception) -> None:
        self._tag(trial, "optuna.state", "FAIL")
        trial.set_user_attr("fail_reason", _reason(e))

    def _finish(self, trial, run_id: str, last: dict, epochs: int) -> list[float]:
        """Score the trained run and record the outcome on it."""
        try:
            values, feasible = self._score(trial, last)
        except Exception as e:
            self._record_failure(trial, e)
            raise
        tracking.log_metrics(self.c, run_id, {f"objective/{o.metric}": v
                                              for o, v in zip(self.spec.objectives, values)},
                             step=epochs)
        self.c.set_tag(run_id, "optuna.state", "COMPLETE")
        self.c.set_tag(run_id, "optuna.feasible", str(feasible).lower())
        return values

    def _score(self, trial, metrics: dict) -> tuple[list[float], bool]:
        """The objective values; sets the constraint values and the kept metrics on the trial."""
        spec = self.spec
        if not metrics:
            raise RuntimeError("the run reported no epoch metrics")
        values = [metric_value(metrics, o.metric) for o in spec.objectives]
        bad = [o.metric for o, v in zip(spec.objectives, values) if not math.isfinite(v)]
        if bad:
            raise FloatingPointError(f"objective {bad[0]} is not finite")
        trial.set_user_attr("metrics", summary_metrics(metrics, spec))
        feasible = self._constrain(trial, metrics)
        trial.set_user_attr("feasible", feasible)
        return values, feasible

    def _constrain(self, trial, metrics: dict) -> bool:
        have = _frozen(trial).constraints
        feasible = True
        for cn in self.spec.constraints:
            for key, value in cn.values(metrics).items():
                if key not in have:              # a retried trial may carry the old values
                    trial.set_constraint(key, value)
                feasible &= value <= 0
        return feasible

    def _tag(self, trial, key: str, value: str) -> None:
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            try:
                self.c.set_tag(run_id, key, value)
            except Exception:  # noqa: BLE001
                pass
