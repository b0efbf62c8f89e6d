"""Tracked runs: train (or reuse) what an experiment file declares, inside MLflow runs.

`run_experiment(path, profile)` plans the file's runs (reproduce/experiments.py), reuses every
run already finished with the same config hash, and trains the rest through the trainer table
below; `train_tracked` wraps one training in an MLflow run and records how it ended.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Callable

import yaml

import torch

from . import autogrow, baselines, contract, distributed, train, tracking
from .config import RunConfig, flatten, to_dict
from .data import DataBundle, build_data, check_available
from .experiments import PlannedRun, plan
from .tasks import task_class, task_for
from .checkpoint import RunCheckpoints
from .train import Checkpoints, EpochCallback, TrainState

# Which training procedure a run's `method` uses. Every trainer has the signature
# trainer(cfg, data, device, task, on_epoch, progress) -> TrainState.
TRAINERS = {
    "grow": train.train,                                # the method
    "dense": train.train,                               # the model without gates
    "prune": baselines.train_pruning_baseline,          # train dense, prune once, fine-tune
    "autogrow": autogrow.train_autogrow,                # AutoGrow-style periodic layer growing
}


def execute(cfg: RunConfig, on_epoch: EpochCallback | None = None, progress: bool = True,
            data: DataBundle | None = None, *, checkpoints: Checkpoints | None = None,
            resume: dict | None = None, shared=None) -> TrainState:
    """Train one resolved config, untracked: device, data, task, then the method's trainer
    (from a checkpoint's state when `resume` is given; `shared`: a pruning run's shared
    pre-training, baselines.py)."""
    device = train.pick_device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    data = data or build_data(cfg.data, device, seed=cfg.seed)
    extra = {"shared": shared} if shared is not None else {}
    return TRAINERS[cfg.method](cfg, data, device, task_for(cfg, data), on_epoch, progress,
                                checkpoints=checkpoints, resume=resume, **extra)


class RunStopped(Exception):
    """Raised by an `epoch_hook` to end a tracked run early on purpose (e.g. an Optuna pruner).

    `train_tracked` logs the traces so far, tags the run `state=<state>` and
    `stop_reason=<reason>`, terminates it with `status` and re-raises. The default status is
    KILLED: readers that want complete results (`tracking.find_finished`,
    `store.Store.runs`) select FINISHED runs only, so a stopped run is never reused as a
    finished one nor drawn as figure material.
    """

    def __init__(self, reason: str, state: str = "pruned", status: str = "KILLED"):
        super().__init__(reason)
        self.reason, self.state, self.status = reason, state, status
        self.run_id: str | None = None


def run_experiment(path: str | Path, profile: str = "smoke", force: bool = False,
                   overrides: dict | None = None, only: list[str] | None = None,
                   progress: bool = True, uri: str | None = None) -> list[dict]:
    """Train (or reuse, or resume) every run of an experiment; returns one summary per run.

    A finished run with the same config hash is reused; an interrupted one (KILLED, or RUNNING
    with no live process behind it) is resumed in place from its last checkpoint. A config that
    another process is training right now is left to it: this one trains the other runs first,
    then waits for it and reuses its result.
    """
    runs = plan(path, profile, overrides, only)       # validate everything before training anything
    for pr in runs:
        check_available(pr.cfg.data)                  # a missing dataset stops before tracking
    if distributed.is_distributed():
        if not distributed.is_main():
            return _follow(runs)
        try:
            return _run_planned(runs, profile, force, progress, uri)
        finally:
            distributed.broadcast_object(None)       # the other ranks stop following
    return _run_planned(runs, profile, force, progress, uri)


def _follow(runs: list[PlannedRun]) -> list[dict]:
    """Ranks other than 0 under torchrun: train exactly the runs rank 0 trains, untracked.

    Rank 0 decides (reuse, resume, train) and sends, before each training, the run's config
    hash and the checkpoint it resumes from; these ranks then train it with it (no MLflow, no
    checkpoints of their own). A None ends the experiment."""
    by_hash = {pr.hash: pr for pr in runs}
    while True:
        msg = distributed.broadcast_object()
        if msg is None:
            return []
        saved = torch.load(msg["checkpoint"], map_location="cpu", weights_only=False) \
            if msg["checkpoint"] else None
        execute(by_hash[msg["hash"]].cfg, progress=False,
                resume=saved["train"] if saved is not None else None)


def _run_planned(runs: list[PlannedRun], profile: str, force: bool, progress: bool,
                 uri: str | None) -> list[dict]:
    c = tracking.client(uri)
    exp_id = tracking.experiment_id(c, profile)
    sharing = _pretraining_groups(runs, exp_id)
    if force:                                     # retrain means pre-train again too
        for name in set(sharing.values()):
            _shared(uri, name).delete()
    summaries: dict[str, dict] = {}
    waiting = []
    for pr in runs:
        if pr.hash in summaries:                      # two entries resolving to the same config
            continue
        if pr.hash in sharing and _shared(uri, sharing[pr.hash]).busy():
            print(f"{run_name_of(pr)}: another process is pre-training the network it prunes; "
                  f"coming back to it later")
            waiting.append(pr)
            continue
        lock = tracking.claim(uri, exp_id, pr.hash)
        if lock is None:
            print(f"{run_name_of(pr)}: another process is training it; coming back to it later")
            waiting.append(pr)
            continue
        try:                                          # claim() returned it acquired
            summaries[pr.hash] = _reuse_resume_or_train(c, exp_id, pr, force, progress, uri,
                                                        sharing.get(pr.hash))
        finally:
            lock.release()
        _forget_pretraining(c, exp_id, runs, sharing, pr, uri, summaries, force)
    for pr in waiting:
        if pr.hash in summaries:
            continue
        print(f"{run_name_of(pr)}: waiting for the other process to finish it")
        from filelock import FileLock
        with FileLock(str(tracking.state_dir(uri) / "claims" / f"{exp_id}-{pr.hash}.lock")):
            summaries[pr.hash] = _reuse_resume_or_train(c, exp_id, pr, False, progress, uri,
                                                        sharing.get(pr.hash))
        _forget_pretraining(c, exp_id, runs, sharing, pr, uri, summaries, force)
    return [summaries[pr.hash] for pr in runs]


def _pretraining_groups(runs: list[PlannedRun], exp_id: str) -> dict[str, str]:
    """Config hash -> the name its pre-training is shared under, for pruning runs of this plan
    that pre-train the same network as another of its runs (baselines.pretraining_key)."""
    if distributed.is_distributed():              # the other ranks could not follow a load
        return {}
    groups: dict[str, set[str]] = {}
    for pr in runs:
        if pr.cfg.method == "prune" and pr.cfg.baseline.share_pretraining:
            groups.setdefault(baselines.pretraining_key(pr.cfg), set()).add(pr.hash)
    return {h: f"{exp_id}-{key}" for key, hashes in groups.items() if len(hashes) > 1
            for h in hashes}


def _shared(uri: str | None, name: str, run_id: str = "", on_load=None):
    from .checkpoint import SharedPretraining
    return SharedPretraining(tracking.state_dir(uri) / "pretrained", name, run_id, on_load)


def _forget_pretraining(c, exp_id: str, runs: list[PlannedRun], sharing: dict[str, str],
                        pr: PlannedRun, uri: str | None, done: dict, force: bool) -> None:
    """Delete a shared pre-training once every run of the plan that shares it has finished:
    here (`done`), or in another process (in the store; not when retraining them all)."""
    name = sharing.get(pr.hash)
    if name is None:
        return
    siblings = {r.hash for r in runs if sharing.get(r.hash) == name}
    if all(h in done or (not force and tracking.find_finished(c, exp_id, h) is not None)
           for h in siblings):
        _shared(uri, name).delete()


def _reuse_resume_or_train(c, exp_id: str, pr: PlannedRun, force: bool, progress: bool,
                           uri: str | None, pretraining: str | None = None) -> dict:
    """With the config's claim held: reuse a finished run, resume an interrupted one, or train."""
    existing = None if force else tracking.find_finished(c, exp_id, pr.hash)
    if existing is not None:
        tracking.add_figures(c, existing, pr.figures)
        return _summary(existing.info.run_id, pr, existing.data.metrics, reused=True)
    unfinished = tracking.find_unfinished(c, exp_id, pr.hash)
    if unfinished is not None and not force:
        return train_tracked(c, exp_id, pr, progress, resume_run=unfinished.info.run_id, uri=uri,
                             pretraining=pretraining)
    return train_tracked(c, exp_id, pr, progress, uri=uri, pretraining=pretraining)


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
                  run_name: str | None = None, resume_run: str | None = None,
                  uri: str | None = None, pretraining: str | None = None) -> dict:
    """Train one planned run inside an MLflow run; failures and interrupts are recorded as such.

    The run checkpoints its whole training state (beside the store, tracking.state_dir) after
    every epoch and every `train.checkpoint_minutes`. `resume_run` continues an interrupted run
    in place from its last checkpoint: steps already logged are not logged again, so every
    metric keeps one value per step. The checkpoint is deleted once the run has finished.

    Optional, for callers such as the Optuna search: `parent_run_id` nests the run under another
    (tag mlflow.parentRunId), `extra_tags` are added to the contract's tags, `on_start(run_id)` is
    called once the run exists, and `epoch_hook(step, stats)` after each step's metrics are
    logged; the hook may raise `RunStopped` to end the run early (see there). `pretraining`
    names the pre-training a pruning run shares with others (checkpoint.SharedPretraining).
    """
    if resume_run is not None:
        return _train_in_run(c, pr, resume_run, progress, epoch_hook, uri, resumed=True,
                             pretraining=pretraining)
    cfg = pr.cfg
    tags = {"model": cfg.model.name, "dataset": cfg.data.dataset, "profile": pr.profile,
            "variant": cfg.variant, "seed": str(cfg.seed), "figures": ",".join(pr.figures),
            "config_hash": pr.hash, "git_commit": tracking.git_commit(), "experiment": pr.experiment,
            "device": _device_label(cfg)}
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
    return _train_in_run(c, pr, run_id, progress, epoch_hook, uri, resumed=False,
                         pretraining=pretraining)


def _device_label(cfg: RunConfig) -> str:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    return train.device_label(train.pick_device(cfg.train.device))


def _train_in_run(c, pr: PlannedRun, run_id: str, progress: bool, epoch_hook, uri: str | None,
                  resumed: bool, pretraining: str | None = None) -> dict:
    cfg = pr.cfg
    checkpoints = RunCheckpoints(tracking.state_dir(uri), run_id, cfg.train.checkpoint_minutes,
                                 extra={"traces": []})
    saved = checkpoints.load() if resumed else None
    if saved is not None:
        checkpoints.extra = saved["extra"]
    traces: list[dict] = checkpoints.extra["traces"]
    logged = tracking.last_step(c, run_id, contract.USAGE) if resumed else -1
    if resumed:
        c.update_run(run_id, "RUNNING")
        where = "its start" if saved is None else f"epoch {saved['train']['epoch']}" + (
            f", batch {saved['train']['position']['batch']}" if saved["train"]["position"] else "")
        print(f"{run_name_of(pr)}: resuming run {run_id} from {where}")
    _mark_alive(c, run_id)

    def on_epoch(epoch: int, stats: dict, controller) -> None:
        if epoch > logged:                     # exactly once per step, across resumes
            tracking.log_metrics(c, run_id, stats, step=epoch)
        state = controller.structure_state()
        state["epoch"] = [epoch] * len(state["gate"])
        traces.append(state)
        _mark_alive(c, run_id)
        if epoch_hook is not None:
            epoch_hook(epoch, stats)

    if distributed.is_distributed():              # the other ranks train it with this process
        distributed.broadcast_object({"hash": pr.hash, "checkpoint": str(checkpoints.path)
                                      if saved is not None else None})
    shared = None
    if pretraining is not None:    # held until the pre-training is saved (or the run ends)
        shared = _shared(uri, pretraining, run_id,
                         on_load=lambda source: c.set_tag(run_id, "pretrained_in", source))
        shared.lock()
    try:
        result = execute(cfg, on_epoch=on_epoch, progress=progress, checkpoints=checkpoints,
                         resume=saved["train"] if saved is not None else None, shared=shared)
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
        if _store_trouble(e):
            # the store (or the disk under it) failed, not the training: keep the checkpoint and
            # leave the run resumable; the same command continues it once the store works again
            reason = tracking.describe_store_error(c.tracking_uri, e)
            with contextlib.suppress(Exception):
                c.set_tag(run_id, "failure_reason", reason[:5000])
                c.set_terminated(run_id, "KILLED")
            raise tracking.StoreError(f"{run_name_of(pr)} (run {run_id}) stopped: {reason} "
                                      f"Its checkpoint is kept: run the same command again to "
                                      f"resume it.") from e
        with contextlib.suppress(Exception):
            _log_traces(c, run_id, traces)
        c.set_tag(run_id, "failure_reason", f"{type(e).__name__}: {e}"[:5000])
        c.set_terminated(run_id, "FAILED")
        raise
    finally:
        if shared is not None:
            shared.release()
    c.set_terminated(run_id, "FINISHED")
    checkpoints.delete()                        # the compact model stays, as an artifact
    return _summary(run_id, pr, result.final, reused=False)


def _store_trouble(e: BaseException) -> bool:
    """A full disk, or a store that became locked or read-only, while training or logging."""
    import errno
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return True
    text = f"{type(e).__name__}: {e}".lower()
    return any(k in text for k in ("no space left", "database or disk is full",
                                   "database is locked", "readonly database"))


def _mark_alive(c, run_id: str) -> None:
    """Heartbeat: who trains the run and when it last reported (visible in the runs table)."""
    c.set_tag(run_id, "heartbeat", time.strftime("%Y-%m-%d %H:%M:%S"))
    c.set_tag(run_id, "host_pid", f"{socket.gethostname()}:{os.getpid()}")


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
    from .checkpoint import compact_checkpoint
    from .method import architecture_summary, export

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
