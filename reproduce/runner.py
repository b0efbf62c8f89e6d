"""Tracked runs: train (or reuse) what an experiment file declares, inside MLflow runs.

`run_experiment(path, profile)` plans the file's runs (reproduce/experiments.py), reuses every
run already finished with the same config hash, and trains the rest through the trainer table
below; `train_tracked` wraps one training in an MLflow run and records how it ended.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Callable

import yaml

import torch

from . import autogrow, baselines, contract, train, tracking
from .config import RunConfig, flatten, to_dict
from .data import DataBundle, build_data
from .experiments import PlannedRun, plan
from .tasks import task_class, task_for
from .train import EpochCallback, TrainState

# Which training procedure a run's `method` uses. Every trainer has the signature
# trainer(cfg, data, device, task, on_epoch, progress) -> TrainState.
TRAINERS = {
    "grow": train.train,                                # the method
    "dense": train.train,                               # the model without gates
    "prune": baselines.train_pruning_baseline,          # train dense, prune once, fine-tune
    "autogrow": autogrow.train_autogrow,                # AutoGrow-style periodic layer growing
}


def execute(cfg: RunConfig, on_epoch: EpochCallback | None = None, progress: bool = True,
            data: DataBundle | None = None) -> TrainState:
    """Train one resolved config, untracked: device, data, task, then the method's trainer."""
    device = train.pick_device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    data = data or build_data(cfg.data, device, seed=cfg.seed)
    return TRAINERS[cfg.method](cfg, data, device, task_for(cfg, data), on_epoch, progress)


class RunStopped(Exception):
    """Raised by an `epoch_hook` to end a tracked run early on purpose (e.g. an Optuna pruner).

    `train_tracked` logs the traces so far, tags the run `state=<state>` and
    `stop_reason=<reason>`, terminates it with `status` and re-raises. The default status is
    KILLED: readers that want complete results (`tracking.find_finished`,
    `analysis.runs.load_runs`) select FINISHED runs only, so a stopped run is never reused as a
    finished one nor drawn as figure material.
    """

    def __init__(self, reason: str, state: str = "pruned", status: str = "KILLED"):
        super().__init__(reason)
        self.reason, self.state, self.status = reason, state, status
        self.run_id: str | None = None


def run_experiment(path: str | Path, profile: str = "smoke", force: bool = False,
                   overrides: dict | None = None, only: list[str] | None = None,
                   progress: bool = True, uri: str | None = None) -> list[dict]:
    """Train (or reuse) every run of an experiment; returns one summary per run."""
    runs = plan(path, profile, overrides, only)       # validate everything before training anything
    c = tracking.client(uri)
    exp_id = tracking.experiment_id(c, profile)
    summaries, seen = [], {}
    for pr in runs:
        h = pr.hash
        if h in seen:                                  # two entries resolving to the same config
            summaries.append(seen[h])
            continue
        existing = None if force else tracking.find_finished(c, exp_id, h)
        if existing is not None:
            tracking.add_figures(c, existing, pr.figures)
            summary = _summary(existing.info.run_id, pr, existing.data.metrics, reused=True)
        else:
            summary = train_tracked(c, exp_id, pr, progress)
        seen[h] = summary
        summaries.append(summary)
    return summaries


def _summary(run_id: str, pr: PlannedRun, metrics: dict, reused: bool) -> dict:
    main = task_class(pr.cfg).main_metric
    keys = (main, contract.MACS, contract.DENSE_MACS, contract.PARAMS, contract.TRAIN_MACS_TOTAL,
            contract.USAGE)
    return {"run_id": run_id, "variant": pr.cfg.variant, "seed": pr.cfg.seed, "reused": reused,
            "model": pr.cfg.model.name, "dataset": pr.cfg.data.dataset, "main_metric": main,
            **{k: metrics.get(k, math.nan) for k in keys}}


def run_name_of(pr: PlannedRun) -> str:
    """`figure-7/resnet20-grow-s0`: one name per experiment, so runs table rows are told apart."""
    return f"{pr.experiment}/{pr.cfg.model.name}-{pr.cfg.variant}-s{pr.cfg.seed}"


def train_tracked(c, exp_id: str, pr: PlannedRun, progress: bool = True, *,
                  parent_run_id: str | None = None, extra_tags: dict | None = None,
                  epoch_hook: Callable[[int, dict], None] | None = None,
                  on_start: Callable[[str], None] | None = None,
                  run_name: str | None = None) -> dict:
    """Train one planned run inside an MLflow run; failures and interrupts are recorded as such.

    Optional, for callers such as the Optuna search: `parent_run_id` nests the run under another
    (tag mlflow.parentRunId), `extra_tags` are added to the contract's tags, `on_start(run_id)` is
    called once the run exists, and `epoch_hook(step, stats)` after each step's metrics are
    logged; the hook may raise `RunStopped` to end the run early (see there).
    """
    cfg = pr.cfg
    tags = {"model": cfg.model.name, "dataset": cfg.data.dataset, "profile": pr.profile,
            "variant": cfg.variant, "seed": str(cfg.seed), "figures": ",".join(pr.figures),
            "config_hash": pr.hash, "git_commit": tracking.git_commit(), "experiment": pr.experiment}
    tags.update({k: str(v) for k, v in (extra_tags or {}).items()})
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    if pr.description:
        tags["mlflow.note.content"] = pr.description          # shown as the run's description
    run = c.create_run(exp_id, run_name=run_name or run_name_of(pr), tags=tags)
    run_id = run.info.run_id
    if on_start is not None:
        on_start(run_id)
    tracking.log_params(c, run_id, flatten(to_dict(cfg)))
    c.log_text(run_id, yaml.safe_dump(to_dict(cfg), sort_keys=False), tracking.ARTIFACT_CONFIG)
    traces: list[dict] = []

    def on_epoch(epoch: int, stats: dict, controller) -> None:
        tracking.log_metrics(c, run_id, stats, step=epoch)
        state = controller.structure_state()
        state["epoch"] = [epoch] * len(state["gate"])
        traces.append(state)
        if epoch_hook is not None:
            epoch_hook(epoch, stats)

    try:
        result = execute(cfg, on_epoch=on_epoch, progress=progress)
        _log_final_artifacts(c, run_id, result, traces)
    except RunStopped as e:
        e.run_id = run_id
        _log_traces(c, run_id, traces)
        c.set_tag(run_id, "state", e.state)
        c.set_tag(run_id, "stop_reason", e.reason[:5000])
        c.set_terminated(run_id, e.status)
        raise
    except KeyboardInterrupt:
        _log_traces(c, run_id, traces)
        c.set_tag(run_id, "failure_reason", "interrupted by the user (KeyboardInterrupt)")
        c.set_terminated(run_id, "KILLED")
        raise
    except BaseException as e:
        _log_traces(c, run_id, traces)
        c.set_tag(run_id, "failure_reason", f"{type(e).__name__}: {e}"[:5000])
        c.set_terminated(run_id, "FAILED")
        raise
    c.set_terminated(run_id, "FINISHED")
    return _summary(run_id, pr, result.final, reused=False)


def _log_traces(c, run_id: str, traces: list[dict]) -> None:
    if not traces:
        return
    import pandas as pd

    frame = pd.concat([pd.DataFrame(t) for t in traces], ignore_index=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(tracking.ARTIFACT_TRACES).name
        frame.to_csv(path, index=False, compression="gzip")
        c.log_artifact(run_id, str(path), str(Path(tracking.ARTIFACT_TRACES).parent))


def _log_final_artifacts(c, run_id: str, result, traces: list[dict]) -> None:
    from .method import architecture_summary, export
    from .checkpoint import compact_checkpoint

    model, controller = result.model, result.controller
    arch = architecture_summary(model)
    macs, params = controller.costs.hard()
    arch.update({"macs": macs, "params": params, "dense_macs": controller.costs.dense_macs,
                 "dense_params": controller.costs.dense_params,
                 "convention": "MACs and params of conv and linear layers only; FLOPs = 2 x MACs"})
    c.log_text(run_id, json.dumps(arch, indent=2), tracking.ARTIFACT_ARCH)
    _log_traces(c, run_id, traces)
    compact = export(model)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(tracking.ARTIFACT_MODEL).name
        torch.save(compact_checkpoint(model, compact), path)
        c.log_artifact(run_id, str(path), str(Path(tracking.ARTIFACT_MODEL).parent))
