"""Tracked runs: train (or reuse, or resume) planned runs, each inside its MLflow run.

`run_all(runs)` takes what `experiments.plan` resolved, reuses every run already finished
with the same config hash, resumes interrupted ones and trains the rest through the trainer
table below; `run_planned(run)` does the same for exactly one run and returns its run id (what a
cluster job calls); `run_experiment(path, profile)` plans an experiment file and runs it. A run's
life in MLflow (created or resumed, logged, and how it ends) is `tracked_run.TrackedRun`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from . import autogrow, baselines, contract, distributed, train, tracking
from .checkpoint import SharedPretraining
from .config import RunConfig
from .data import DataBundle, build_data, check_available
from .experiments import PlannedRun, plan
from .tasks import task_class, task_for
from .tracked_run import Preempted, TrackedRun, run_name_of
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


def run_experiment(path: str | Path, profile: str = "smoke", force: bool = False,
                   overrides: dict | None = None, only: list[str] | None = None,
                   progress: bool = True, uri: str | None = None) -> list[dict]:
    """Plan an experiment file's runs (all validated before anything trains) and run them."""
    return run_all(plan(path, profile, overrides, only), force, progress, uri)


def run_all(runs: list[PlannedRun], force: bool = False, progress: bool = True,
            uri: str | None = None) -> list[dict]:
    """Train (or reuse, or resume) planned runs; one summary per run, in their order.

    A finished run with the same config hash is reused; an interrupted one (KILLED, or RUNNING
    with no live process behind it) is resumed in place from its last checkpoint. A config that
    another process is training right now is left to it: this one trains the other runs first,
    then waits for it and reuses its result. Under torchrun rank 0 does all this, and the other
    ranks train each run with it (and return []).
    """
    for pr in runs:
        check_available(pr.cfg.data)                  # a missing dataset stops before tracking
    summaries = _on_every_rank(runs, lambda: _lead_all(runs, force, progress, uri))
    return summaries if distributed.is_main() else []


def run_planned(pr: PlannedRun, *, uri: str | None = None, force: bool = False,
                progress: bool = True, pretraining: Pretraining | None = None) -> str:
    """Train exactly one planned run into the store and return its MLflow run id.

    What a cluster job calls, in a fresh process: every argument pickles (`pr` as
    `experiments.plan` returned it), and nothing is read from the command line; the store is
    `uri`, else $MLFLOW_TRACKING_URI (tracking.tracking_uri), and checkpoints and claims are in
    its state folder (tracking.state_dir: $REPRODUCE_STATE_DIR when set, else beside a SQLite
    store, else ./.state), which every process training into the store must share.

    - The config's claim (tracking.claim) is held while anything is decided or trained, so two
      processes never train one run: while another process holds it, this call waits for it.
    - Already finished (a FINISHED run with the config hash in the profile's experiment, here or
      by the process it waited for): nothing trains; that run's id is returned (its `figures`
      tag gains `pr.figures`). `force` trains a new run instead.
    - Interrupted before (KILLED or RUNNING with the config hash: preempted, Ctrl-C, a killed
      process, store trouble): the same run is resumed from its checkpoint in the state folder
      (from its start when there is none) and its id returned once it finished.
    - Otherwise a new run is created, trained and finished, and its id returned.
    - Preempted (SIGTERM, SIGUSR1 or SIGUSR2 while it trains in the main thread): the run
      checkpoints at its next batch boundary, is left KILLED with `state=preempted` (resumable:
      the next call resumes it, exactly as if never stopped), the claim is released, the signal
      handlers there before are put back, and `tracked_run.Preempted` (a KeyboardInterrupt
      carrying `signum` and `run_id`) is raised for the caller to requeue the job. A signal that
      comes after the last batch lets the run finish: then its id is returned.
    - Fails (any other exception): the run is left FAILED with `failure_reason`, the claim
      released, and the exception raised; a later call trains a new run (FAILED is not resumed).
      Store trouble raises tracking.StoreError and leaves the run resumable; a missing dataset
      raises data.DatasetMissing before anything is tracked.

    `pretraining` is the pre-training this pruning run shares with others of its plan
    (`pretraining_groups`). Under torchrun every rank calls it: rank 0 tracks, the others train
    with it, and every rank returns the run id.
    """
    check_available(pr.cfg.data)

    def lead() -> str:
        c = tracking.client(uri)
        exp_id = tracking.experiment_id(c, pr.profile)
        try:
            run_id = _claimed(c, exp_id, pr, force, progress, pretraining, wait=True)["run_id"]
        except Preempted as stop:
            if not stop.finished:
                raise
            run_id = stop.run_id               # nothing is left to resume: the run is done
        _forget_pretraining(c, exp_id, pretraining, {pr.hash}, force)
        return run_id
    return _on_every_rank([pr], lead)


def run_planned_in_turn(runs: list[PlannedRun], *, pretraining: Pretraining | None = None,
                        uri: str | None = None, force: bool = False,
                        progress: bool = True) -> list[str]:
    """`run_planned` for each of `runs`, one after another; their run ids. What one cluster job
    does for the pruning runs that share a pre-training (`pretraining`): the first trains and
    saves it, the others load it, as one local process does. `force` pre-trains afresh too."""
    if force and pretraining is not None:
        _shared(uri, pretraining.name).delete()
    return [run_planned(pr, uri=uri, force=force, progress=progress, pretraining=pretraining)
            for pr in runs]


def _on_every_rank(runs: list[PlannedRun], lead: Callable):
    """`lead()` here; under torchrun on rank 0 only, while the other ranks follow and then
    return what it returned (None when it raised)."""
    if not distributed.is_distributed():
        return lead()
    if not distributed.is_main():
        return _follow(runs)
    result = None
    try:
        result = lead()
        return result
    finally:
        distributed.broadcast_object({"done": result})    # the other ranks stop following


def _follow(runs: list[PlannedRun]):
    """Ranks other than 0 under torchrun: train exactly the runs rank 0 trains, untracked.

    Rank 0 decides (reuse, resume, train) and sends, before each training, the run's config
    hash and the checkpoint it resumes from; these ranks then train it with it (no MLflow, no
    checkpoints of their own). `{"done": result}` ends the experiment with rank 0's result."""
    by_hash = {pr.hash: pr for pr in runs}
    while True:
        msg = distributed.broadcast_object()
        if "done" in msg:
            return msg["done"]
        saved = torch.load(msg["checkpoint"], map_location="cpu", weights_only=False) \
            if msg["checkpoint"] else None
        execute(by_hash[msg["hash"]].cfg, progress=False,
                resume=saved["train"] if saved is not None else None)


def _lead_all(runs: list[PlannedRun], force: bool, progress: bool, uri: str | None) -> list[dict]:
    c = tracking.client(uri)
    unique = _one_per_config(runs)
    exp_ids = {p: tracking.experiment_id(c, p) for p in dict.fromkeys(pr.profile for pr in unique)}
    sharing = pretraining_groups(unique, c)
    if force:                                     # retrain means pre-train again too
        for group in set(sharing.values()):
            _shared(uri, group.name).delete()
    summaries: dict[str, dict] = {}
    waiting = []
    for pr in unique:
        group = sharing.get(pr.hash)
        if group is not None and _shared(uri, group.name).busy():
            print(f"{run_name_of(pr)}: another process is pre-training the network it prunes; "
                  f"coming back to it later")
            waiting.append(pr)
            continue
        summary = _claimed(c, exp_ids[pr.profile], pr, force, progress, group, wait=False)
        if summary is None:
            print(f"{run_name_of(pr)}: another process is training it; coming back to it later")
            waiting.append(pr)
            continue
        summaries[pr.hash] = summary
        _forget_pretraining(c, exp_ids[pr.profile], group, summaries, force)
    for pr in waiting:
        print(f"{run_name_of(pr)}: waiting for the other process to finish it")
        group = sharing.get(pr.hash)
        summaries[pr.hash] = _claimed(c, exp_ids[pr.profile], pr, False, progress, group,
                                      wait=True)
        _forget_pretraining(c, exp_ids[pr.profile], group, summaries, force)
    return [summaries[pr.hash] for pr in runs]


def _one_per_config(runs: list[PlannedRun]) -> list[PlannedRun]:
    """The first run of each config hash, carrying the figures of every entry with that hash
    (experiment files that need the same run share it)."""
    first: dict[str, PlannedRun] = {}
    for pr in runs:
        have = first.setdefault(pr.hash, pr)
        if have is not pr:
            first[pr.hash] = replace(have, figures=list(dict.fromkeys(have.figures + pr.figures)))
    return list(first.values())


def _claimed(c, exp_id: str, pr: PlannedRun, force: bool, progress: bool,
             pretraining: Pretraining | None, wait: bool) -> dict | None:
    """With the config's claim held: reuse a finished run, resume an interrupted one, or train.
    None when another process holds the claim and `wait` is False."""
    uri = c.tracking_uri
    lock = tracking.claim(uri, exp_id, pr.hash, wait=wait)
    if lock is None:
        return None
    try:
        existing = None if force else tracking.find_finished(c, exp_id, pr.hash)
        if existing is not None:
            tracking.add_figures(c, existing, pr.figures)
            return _summary(existing.info.run_id, pr, contract.final_metrics(
                existing.data.metrics, existing.data.params), reused=True)
        unfinished = None if force else tracking.find_unfinished(c, exp_id, pr.hash)
        run = TrackedRun.resume(c, pr, unfinished.info.run_id) if unfinished is not None \
            else TrackedRun.create(c, exp_id, pr)
        run.hold(lock)                            # released when the run ends (ENDINGS)
        return train_tracked(run, progress,
                             pretraining=pretraining.name if pretraining is not None else None)
    finally:
        lock.release()                            # (a no-op when the run released it)


def train_tracked(run: TrackedRun, progress: bool = True, *,
                  epoch_hook: Callable[[int, dict], None] | None = None,
                  pretraining: str | None = None) -> dict:
    """Train a tracked run's config inside it (from its checkpoint when it was resumed) and
    return its summary; how the run ends is `tracked_run.ENDINGS`.

    The run checkpoints its whole training state (beside the store, tracking.state_dir) after
    every epoch and every `train.checkpoint_minutes`. `epoch_hook(step, stats)` is called after
    each step is logged and may raise `tracked_run.RunStopped` to end the run early (e.g. an
    Optuna pruner). `pretraining` names the pre-training a pruning run shares with others
    (checkpoint.SharedPretraining), locked until it is saved or the run ends.
    """
    pr = run.pr

    def on_epoch(step: int, stats: dict, controller) -> None:
        run.log_epoch(step, stats, controller)
        if epoch_hook is not None:
            epoch_hook(step, stats)

    if distributed.is_distributed():              # the other ranks train it with this process
        distributed.broadcast_object({"hash": pr.hash, "checkpoint": str(run.checkpoints.path)
                                      if run.resume_state is not None else None})
    with run:
        shared = None
        if pretraining is not None:    # held until the pre-training is saved (or the run ends)
            shared = _shared(run.uri, pretraining, run.run_id,
                             on_load=lambda source: run.set_tag("pretrained_in", source))
            run.hold(shared)
            shared.lock()
        result = execute(pr.cfg, on_epoch=on_epoch, progress=progress,
                         checkpoints=run.checkpoints, resume=run.resume_state, shared=shared)
        run.finish(result)
    return _summary(run.run_id, pr, result.final, reused=False)


@dataclass(frozen=True)
class Pretraining:
    """A pre-training that pruning runs of one plan share (baselines.pretraining_key): its name
    in the state folder, and the config hashes of every run that shares it."""
    name: str
    hashes: frozenset[str]


def pretraining_groups(runs: list[PlannedRun], c) -> dict[str, Pretraining]:
    """Config hash -> the pre-training it shares, for the pruning runs among `runs` that pre-train
    the same network as another of them (none under torchrun: the other ranks could not follow
    a load)."""
    if distributed.is_distributed():
        return {}
    keys: dict[tuple[str, str], set[str]] = {}
    for pr in runs:
        if pr.cfg.method == "prune" and pr.cfg.baseline.share_pretraining:
            key = (tracking.experiment_id(c, pr.profile), baselines.pretraining_key(pr.cfg))
            keys.setdefault(key, set()).add(pr.hash)
    return {h: Pretraining(f"{exp_id}-{key}", frozenset(hashes))
            for (exp_id, key), hashes in keys.items() if len(hashes) > 1 for h in hashes}


def _shared(uri: str | None, name: str, run_id: str = "", on_load=None) -> SharedPretraining:
    return SharedPretraining(tracking.state_dir(uri) / "pretrained", name, run_id, on_load)


def _forget_pretraining(c, exp_id: str, group: Pretraining | None, done, force: bool) -> None:
    """Delete a shared pre-training once every run sharing it has finished: here (`done`), or
    in another process (in the store; not when retraining them all)."""
    if group is None:
        return
    if all(h in done or (not force and tracking.find_finished(c, exp_id, h) is not None)
           for h in group.hashes):
        _shared(c.tracking_uri, group.name).delete()


def _summary(run_id: str, pr: PlannedRun, metrics: dict, reused: bool) -> dict:
    main = task_class(pr.cfg).main_metric
    keys = (main, contract.MACS, contract.DENSE_MACS, contract.PARAMS, contract.TRAIN_MACS_TOTAL,
            contract.USAGE)
    return {"run_id": run_id, "variant": pr.cfg.variant, "seed": pr.cfg.seed, "reused": reused,
            "model": pr.cfg.model.name, "dataset": pr.cfg.data.dataset, "main_metric": main,
            **{k: metrics.get(k, math.nan) for k in keys}}
