"""Running a study: a worker loop that ends with exactly N finished trials, and the coordinator
that opens the study and its MLflow parent run, then works itself or spawns worker processes."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings
from typing import Callable

import optuna
from optuna.trial import TrialState

from ..config import ConfigError
from ..study_results import counts, finished
from .mlflow_side import client_and_experiment, finish_parent, log_parent_progress, \
    mark_parent_running, mark_stale_run, parent_run
from .objective import TrialObjective
from .spec import SearchSpec
from .storage import make_storage, redact, retrying, storage_url
from .study import open_study, record_best


class SearchError(ConfigError):
    """The search cannot go on (e.g. every trial fails); the message says why and what to do."""


def work(spec: SearchSpec, study, objective, c, parent_id: str, poll_s: float | None = None,
         max_consecutive_failures: int = 3) -> None:
    """Run trials until the study has `spec.trials` finished (complete or pruned) trials.

    Before each trial: fail trials whose worker died (their parameters are retried), then stop if
    enough trials are finished, or wait while the remaining ones run in other workers (to take
    over if one of them dies). So several workers on one storage end with exactly N finished trials.
    (Optuna's MaxTrialsCallback alone overshoots by up to workers - 1 trials and does not wait to
    take over from a dead worker.)
    """
    max_poll = poll_s or min(10.0, float(spec.heartbeat["interval"]))
    poll, failures, waiting_said = 1.0, 0, False

    def after_trial(study_, frozen) -> None:
        log_parent_progress(c, parent_id, study_, spec)
        record_best(study_, spec)

    def check():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optuna.storages.fail_stale_trials(study)
        return counts(study)

    while True:
        n = retrying("reading the study", check)
        done = finished(n)
        if done >= spec.trials:
            return
        if done + n[TrialState.RUNNING] + n[TrialState.WAITING] >= spec.trials and \
                n[TrialState.WAITING] == 0:
            if not waiting_said:
                print(f"[search] {done}/{spec.trials} trials finished, {n[TrialState.RUNNING]} "
                      f"running in other workers: waiting for them (to take over if one dies)")
                waiting_said = True
            time.sleep(poll)
            poll = min(max_poll, poll * 1.5)
            continue
        waiting_said, poll = False, 1.0
        objective.last_trial_number = None
        retrying("running a trial", lambda: study.optimize(
            objective, n_trials=1, catch=(Exception,), callbacks=[after_trial]))
        mine = [t for t in study.get_trials(deepcopy=False) if t.number == objective.last_trial_number]
        failed = [t for t in mine if t.state == TrialState.FAIL and not t.user_attrs.get("surplus")]
        failures = failures + 1 if failed else 0
        if failures >= max_consecutive_failures:
            reason = failed[-1].user_attrs.get("fail_reason") or "see the log above"
            raise SearchError(f"{failures} trials in a row failed in this worker; the last: {reason}")


def _spawn(spec: SearchSpec, url: str, workers: int, worker_index: int,
           extra_args: list[str] | None) -> None:
    """Run `workers` worker processes on the study and wait for them."""
    procs = []
    for i in range(workers):
        cmd = [sys.executable, "-m", "reproduce", "search", str(spec.path), "--profile",
               spec.profile, "--trials", str(spec.trials), "--storage", url, "--study-name",
               spec.study_name, "--worker-index", str(worker_index + i), "--spawned",
               *(extra_args or [])]
        procs.append(subprocess.Popen(cmd))
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        codes = [p.wait() for p in procs]
        raise
    if any(codes):
        raise SearchError(f"{sum(1 for x in codes if x)} of {workers} workers failed (exit codes "
                          f"{codes}); rerun the same command to resume the study")


def run_search(spec: SearchSpec, url: str | None = None, worker_index: int = 0, force: bool = False,
               progress: bool = True, workers: int = 1, extra_args: list[str] | None = None,
               submit_workers: Callable | None = None) -> dict:
    """Create or resume the study and run trials: in this process, in `workers` subprocesses, or
    through `submit_workers(spec, url, workers, worker_index, force, tracking_uri)`, which runs
    them elsewhere and returns once they ended (launch.slurm.run_search_workers: Slurm jobs)."""
    url = storage_url(url)
    holder: dict = {}
    storage = make_storage(url, spec.heartbeat, on_failed=mark_stale_run(holder))
    study, created = retrying("opening the study",
                              lambda: open_study(spec, storage, worker_index, claim_parent=True))
    c, exp_id = retrying("opening the MLflow store and experiment",
                         lambda: client_and_experiment(spec.profile))
    holder["client"] = c
    parent_id = retrying("finding the MLflow parent run",
                         lambda: parent_run(c, exp_id, study, spec, url, created))
    done = finished(counts(study))
    print(f"[search] study {spec.study_name} in {redact(url)}: {done}/{spec.trials} trials "
          f"finished{' (new study)' if created else ''}; MLflow parent run {parent_id}")
    if done < spec.trials:
        mark_parent_running(c, parent_id)
    if submit_workers is not None:
        submit_workers(spec, url, workers, worker_index, force, c.tracking_uri)
    elif workers > 1:
        _spawn(spec, url, workers, worker_index, extra_args)
    else:
        objective = TrialObjective(spec, c, exp_id, parent_id, url, force, progress)
        work(spec, study, objective, c, parent_id)
    log_parent_progress(c, parent_id, study, spec)
    record_best(study, spec)
    finish_parent(c, parent_id, study, spec)
    return {"study": study, "parent_run_id": parent_id, "counts": counts(study), "url": url}
