"""One tracked run's life in MLflow: created (or resumed), an epoch logged at a time, and ended.

    run = TrackedRun.create(c, exp_id, planned)       # or TrackedRun.resume(c, planned, run_id)
    with run:                                          # the run's training happens in here
        result = execute(cfg, on_epoch=run.log_epoch, checkpoints=run.checkpoints,
                         resume=run.resume_state)
        run.finish(result)                             # the final artifacts

How the `with` block ends decides everything about the run's end, through one table, ENDINGS:
its MLflow status, the tags written, whether the structure traces are logged, whether its
checkpoint is kept (so the same command resumes it) and whether the locks it holds (its claim,
a shared pre-training) are released. Every way a run can end is a row of that table.

While a run trains in the main thread of a single process, SIGTERM (a cluster preempts the job),
SIGUSR2 (what a job submitted through submitit gets ahead of its time limit or a preemption,
`--signal=USR2@<s>`) and SIGUSR1 (the same warning where a job asked for it, `--signal=USR1@<s>`)
do not kill it: the loop checkpoints at its next batch boundary, the run ends as `preempted`, and
`Preempted` propagates so that a cluster job can requeue itself; the same call then resumes the
run. The handlers (`preemption_signals`) are installed only while the run trains and put back as
they were when it ends, so whoever installed theirs before (submitit does) gets them back.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml

from . import contract, distributed, tracking
from .checkpoint import RunCheckpoints, compact_checkpoint
from .config import RunConfig, flatten, to_dict
from .experiments import PlannedRun
from .launch.devices import processes_at_once
from .train import device_label, pick_device, threads_label

# What a cluster sends before it stops a job: SIGTERM on preemption (then SIGKILL after Slurm's
# KillWait); SIGUSR2 ahead of the time limit or a preemption in a job submitted through submitit
# (its `slurm_signal_delay_s`, docs/SLURM.md); SIGUSR1 where a job asked for that one instead.
PREEMPTION_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None),
                                       getattr(signal, "SIGUSR1", None),
                                       getattr(signal, "SIGUSR2", None)) if s is not None)


class RunStopped(Exception):
    """Raised by an epoch hook to end a tracked run early on purpose (e.g. an Optuna pruner).

    The run is tagged `state=<state>` and `stop_reason=<reason>` and ends with `status` (ENDINGS,
    "stopped"). The default KILLED keeps it out of everything that wants complete results
    (`tracking.find_finished`, `store.Store.runs` select FINISHED runs only), and a run
    with a stop reason is never resumed (`tracking.find_unfinished`).
    """

    def __init__(self, reason: str, state: str = "pruned", status: str = "KILLED"):
        super().__init__(reason)
        self.reason, self.state, self.status = reason, state, status
        self.run_id: str | None = None


class Preempted(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM, SIGUSR1, SIGUSR2) while a run trained: the run is
    checkpointed at a batch boundary and ended KILLED with `state=preempted` (ENDINGS,
    "preempted"); the same command resumes it. If the run finished before the next batch
    boundary came, it is FINISHED and this still propagates, so no further run starts.
    `waiting`: the signal came while this process trained nothing, waiting for the runs of its
    helper processes (pipeline.train_all), which get the same signal.

    A KeyboardInterrupt, as the suite treats SIGTERM elsewhere (`reproduce search`): code that
    stops politely on Ctrl-C (Optuna, the search's trial retry) stops on it too, and no
    `except Exception` swallows it. A cluster job catches it to requeue itself.
    """

    def __init__(self, signum: int, finished: bool = False, waiting: bool = False):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.finished, self.waiting = signum, finished, waiting
        self.run_id: str | None = None

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    def __str__(self) -> str:
        run = f"run {self.run_id}" if self.run_id else "the run"
        if self.waiting:
            return (f"{self.signal_name} received while this process waited for the others: "
                    f"they checkpoint their runs and stop; run the same command again to resume")
        if self.finished:
            return f"{self.signal_name} received; {run} finished first, nothing is left to resume"
        return (f"{self.signal_name} received; {run} is checkpointed and marked preempted: run "
                f"the same command again to resume it")


def store_trouble(e: BaseException) -> bool:
    """A full disk, or a store that became locked or read-only, while training or logging."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return True
    text = f"{type(e).__name__}: {e}".lower()
    return any(k in text for k in ("no space left", "database or disk is full",
                                   "database is locked", "readonly database"))


def ending_of(e: BaseException | None) -> str:
    """Which row of ENDINGS a run's training ended by (`e`: what it raised, None if nothing)."""
    if e is None:
        return "finished"
    if isinstance(e, RunStopped):
        return "stopped"
    if isinstance(e, Preempted):
        return "preempted"
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    if store_trouble(e):
        return "store"
    return "failed"


@dataclass(frozen=True)
class Ending:
    status: str | None      # the MLflow status; None: the one the exception names (RunStopped)
    tags: Callable          # (exception, run) -> the tags written on the run
    traces: bool            # the per-structure traces so far are logged
    checkpoint: str         # "kept" (the same command resumes the run) or "deleted"
    locks: str              # its claim and shared pre-training lock: "released" or "held"


def _no_tags(e, run) -> dict:
    return {}


def _stop_tags(e: RunStopped, run) -> dict:
    return {"state": e.state, "stop_reason": e.reason}


def _preempted_tags(e: Preempted, run) -> dict:
    return {"state": "preempted",
            "failure_reason": f"preempted ({e.signal_name}): checkpointed at a batch boundary; "
                              f"the same command resumes it"}


def _interrupted_tags(e, run) -> dict:
    return {"failure_reason": "interrupted by the user (KeyboardInterrupt)"}


def _store_tags(e, run: "TrackedRun") -> dict:
    return {"failure_reason": tracking.describe_store_error(run.c.tracking_uri, e)}


def _failed_tags(e, run) -> dict:
    return {"failure_reason": f"{type(e).__name__}: {e}"}


# Every way a tracked run can end (`ending_of`), and what is left behind. "store" writes what it
# can (the store is what failed), keeps the run resumable once the store works again, and raises
# tracking.StoreError saying so; every other way re-raises what ended the run.
ENDINGS: dict[str, Ending] = {
    # way           MLflow status  tags written        traces  checkpoint  locks
    "finished":    Ending("FINISHED", _no_tags,          True,  "deleted", "released"),
    "stopped":     Ending(None,       _stop_tags,        True,  "kept",    "released"),
    "preempted":   Ending("KILLED",   _preempted_tags,   True,  "kept",    "released"),
    "interrupted": Ending("KILLED",   _interrupted_tags, True,  "kept",    "released"),
    "store":       Ending("KILLED",   _store_tags,       False, "kept",    "released"),
    "failed":      Ending("FAILED",   _failed_tags,      True,  "kept",    "released"),
}


@contextlib.contextmanager
def preemption_signals(on_signal: Callable[[int, object], None]):
    """`on_signal(signum, frame)` handles PREEMPTION_SIGNALS inside the block; on leaving it, by
    any way, every handler is put back as it was. Yields whether the handlers are installed:
    Python lets only the main thread install them, so elsewhere (a thread, e.g. a worker of a
    thread pool) nothing is installed and the signals keep their usual effect, as under DDP,
    where the other ranks would not stop at the same batch (the last periodic checkpoint is
    resumed there)."""
    if threading.current_thread() is not threading.main_thread() or \
            distributed.is_distributed():
        yield False
        return
    before = {}
    try:
        for signum in PREEMPTION_SIGNALS:
            previous = signal.getsignal(signum)
            signal.signal(signum, on_signal)
            before[signum] = previous
        yield True
    finally:
        for signum, previous in before.items():
            # (None: a handler not set from Python, which cannot be put back; the default then)
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)


def slurm_job_id() -> str | None:
    """The Slurm job this process runs in (`A_i` for an array task), None outside Slurm."""
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    return os.environ.get("SLURM_JOB_ID")


def run_name_of(pr: PlannedRun) -> str:
    """`grow-s0 · resnet20 · figure-7`: what tells the runs of a table apart (variant with its
    budget, seed) first, so that it survives the runs table cutting long names short."""
    return f"{pr.cfg.variant}-s{pr.cfg.seed} · {pr.cfg.model.name} · {pr.experiment}"


def device_tag(cfg: RunConfig) -> str:
    """The `device` tag: what the run trains on, with the CPU threads `runner.execute` sets, and
    how many runs its command trains at once on the machine when more than one (`JOBS=N`): a
    run's times are comparable with those of runs tagged alike (analysis/costs.py)."""
    device = pick_device(cfg.train.device)
    if device.type == "cpu" and cfg.train.threads:
        tag = f"cpu ({threads_label(cfg.train.threads)})"
    else:
        tag = device_label(device)
    at_once = processes_at_once()
    return tag if at_once == 1 else f"{tag}, {at_once} runs at once"


_STRUCTURE_NAMES = ("gate", "index", "kind")     # structure_state's columns that name a structure


def _trace_record(state: dict[str, list], step: int, previous: dict | None) -> dict:
    """One epoch's row block of the structure traces, in the form every checkpoint saves: the
    columns that name structures are the previous epoch's own lists when they are equal (pickled
    once however many epochs share them), the values are arrays. As plain lists, every value was
    a Python object pickled again at each epoch's checkpoint: O(epochs x structures) per save,
    which was most of what saving a small run's checkpoint cost."""
    record = {}
    for key, column in state.items():
        if key in _STRUCTURE_NAMES:
            same = previous is not None and previous.get(key) == column
            record[key] = previous[key] if same else column
        else:
            record[key] = np.asarray(column)
    record["epoch"] = np.full(len(state["gate"]), step)
    return record


class _Checkpoints(RunCheckpoints):
    """The run's checkpoints; once a preemption signal came, due at the next batch boundary,
    where the save is followed by `Preempted`."""

    signum: int | None = None

    def due(self) -> bool:
        return self.signum is not None or super().due()

    def save(self, state, position: dict | None = None) -> None:
        super().save(state, position)
        if self.signum is not None:
            raise Preempted(self.signum)


class TrackedRun:
    """One MLflow run from creation (or resumption) to its end; a context manager around its
    training. `checkpoints` and `resume_state` go to the trainer, `log_epoch` is its epoch
    callback; `hold(lock)` hands over a lock to release when the run ends (ENDINGS, locks)."""

    def __init__(self, c, pr: PlannedRun, run_id: str, resumed: bool = False):
        self.c, self.pr, self.run_id = c, pr, run_id
        self.uri: str = c.tracking_uri
        self.checkpoints = _Checkpoints(tracking.state_dir(self.uri), run_id,
                                        pr.cfg.train.checkpoint_minutes, extra={"traces": []})
        self.saved = self.checkpoints.load() if resumed else None
        if self.saved is not None:
            self.checkpoints.extra = self.saved["extra"]
        self.logged = tracking.last_step(c, run_id, contract.USAGE) if resumed else -1
        self._locks: list = []
        self._signals = contextlib.ExitStack()
        self._constants_logged: set[str] | None = None if resumed else set()

    @classmethod
    def create(cls, c, exp_id: str, pr: PlannedRun, *, parent_run_id: str | None = None,
               extra_tags: dict | None = None, run_name: str | None = None) -> "TrackedRun":
        """A new run with the contract's tags, the flattened config as params and config.yaml.
        `parent_run_id` nests it (e.g. under a study's run); `extra_tags` add to the tags."""
        cfg = pr.cfg
        tags = {"model": cfg.model.name, "dataset": cfg.data.dataset, "profile": pr.profile,
                "variant": cfg.variant, "seed": str(cfg.seed), "figures": ",".join(pr.figures),
                "config_hash": pr.hash, "git_commit": tracking.git_commit(),
                "experiment": pr.experiment, "device": device_tag(cfg),
                "world_size": str(distributed.world_size())}
        tags.update({k: str(v) for k, v in (extra_tags or {}).items()})
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        if pr.description:
            tags["mlflow.note.content"] = pr.description      # shown as the run's description
        run_id = c.create_run(exp_id, run_name=run_name or run_name_of(pr), tags=tags).info.run_id
        tracking.log_params(c, run_id, flatten(to_dict(cfg)))
        c.log_text(run_id, yaml.safe_dump(to_dict(cfg), sort_keys=False), tracking.ARTIFACT_CONFIG)
        return cls(c, pr, run_id)

    @classmethod
    def resume(cls, c, pr: PlannedRun, run_id: str) -> "TrackedRun":
        """An interrupted run, continued in place from its last checkpoint (or from its start)."""
        run = cls(c, pr, run_id, resumed=True)
        c.update_run(run_id, "RUNNING")
        stored = c.get_run(run_id)
        if stored.data.tags.get("state") == "preempted":
            c.delete_tag(run_id, "state")          # it trains again; failure_reason keeps the story
        tracking.add_figures(c, stored, pr.figures)     # as a reused run would
        saved = run.saved
        where = "its start" if saved is None else f"epoch {saved['train']['epoch']}" + (
            f", batch {saved['train']['position']['batch']}" if saved["train"]["position"] else "")
        print(f"{run_name_of(pr)}: resuming run {run_id} from {where}")
        return run

    @property
    def resume_state(self) -> dict | None:
        """The training state to continue from (None: train from the start)."""
        return self.saved["train"] if self.saved is not None else None

    @property
    def traces(self) -> list[dict]:
        return self.checkpoints.extra["traces"]

    def hold(self, lock) -> None:
        """Release `lock` (anything with `release()`) when the run ends, as ENDINGS says."""
        self._locks.append(lock)

    def set_tag(self, key: str, value: str) -> None:
        self.c.set_tag(self.run_id, key, value)

    def log_epoch(self, step: int, stats: dict, controller) -> None:
        """The trainer's epoch callback: the step's metrics (exactly once per step, across
        resumes), the structures' state for the traces, and a heartbeat."""
        if step > self.logged:
            series, constants = tracking.split_epoch_stats(
                stats, controller.constant_keys(), controller.shared_temperature())
            tracking.log_metrics(self.c, self.run_id, series, step=step)
            if self._constants_logged is None:     # on a resumed run, those it logged already
                self._constants_logged = set(self.c.get_run(self.run_id).data.params)
            new = {k: v for k, v in constants.items() if k not in self._constants_logged}
            if new:                                # once per run (a later phase's are the same)
                tracking.log_params(self.c, self.run_id, new)
                self._constants_logged.update(new)
        self.traces.append(_trace_record(controller.structure_state(), step,
                                         self.traces[-1] if self.traces else None))
        self._heartbeat()

    def finish(self, result) -> None:
        """The final artifacts of a trained run: architecture.json, the compact model, its README
        and the run's channel-dynamics picture (run_artifacts)."""
        from .method import architecture_summary, export

        model, controller = result.model, result.controller
        arch = architecture_summary(model)
        macs, params = controller.costs.hard()
        arch.update({"macs": macs, "params": params, "dense_macs": controller.costs.dense_macs,
                     "dense_params": controller.costs.dense_params,
                     "convention": "MACs and params of conv and linear layers only; FLOPs = 2 x MACs"})
        self.c.log_text(self.run_id, json.dumps(arch, indent=2), tracking.ARTIFACT_ARCH)
        compact = export(model)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(tracking.ARTIFACT_MODEL).name
            torch.save(compact_checkpoint(model, compact), path)
            self.c.log_artifact(self.run_id, str(path), str(Path(tracking.ARTIFACT_MODEL).parent))
        from .run_artifacts import log_run_artifacts
        log_run_artifacts(self.c, self.run_id, compact, controller.costs.input_shape)

    # -- the run's life ------------------------------------------------------------------------

    def __enter__(self) -> "TrackedRun":
        self._heartbeat()
        self._signals.enter_context(preemption_signals(self._on_signal))
        return self

    def __exit__(self, kind, e, tb) -> bool:
        self._signals.close()                       # the handlers from before the run, again
        late = None
        if e is None:
            try:
                self._record("finished", None)
            except Exception as x:  # noqa: BLE001 - the store failed while the run was closed
                late = x
        failure = e if e is not None else late
        way = ending_of(failure)
        if failure is not None:
            if isinstance(failure, (RunStopped, Preempted)):
                failure.run_id = self.run_id
            with contextlib.suppress(Exception):      # the reason the run ended goes on
                self._record(way, failure)
        ending = ENDINGS[way]
        if ending.checkpoint == "deleted":
            self.checkpoints.delete()                  # the compact model stays, as an artifact
        if ending.locks == "released":
            for lock in self._locks:
                lock.release()
        if way == "store":
            raise tracking.StoreError(
                f"{run_name_of(self.pr)} (run {self.run_id}) stopped: "
                f"{tracking.describe_store_error(self.uri, failure)} "
                f"Its checkpoint is kept: run the same command again to resume it.") from failure
        if late is not None:
            raise late
        if e is None and self.checkpoints.signum is not None:
            stop = Preempted(self.checkpoints.signum, finished=True)
            stop.run_id = self.run_id
            raise stop
        return False

    def _record(self, way: str, e: BaseException | None) -> None:
        """Write ENDINGS[way] into the store: traces, tags, status."""
        ending = ENDINGS[way]
        if ending.traces:
            self._log_traces()
        for key, value in ending.tags(e, self).items():
            self.c.set_tag(self.run_id, key, str(value)[:5000])
        self.c.set_terminated(self.run_id, ending.status or e.status)

    def _heartbeat(self) -> None:
        """Who trains the run and when it last reported (visible in the runs table)."""
        self.c.set_tag(self.run_id, "heartbeat", time.strftime("%Y-%m-%d %H:%M:%S"))
        self.c.set_tag(self.run_id, "host_pid", f"{socket.gethostname()}:{os.getpid()}")
        job = slurm_job_id()
        if job:                                        # which Slurm job trains it (make jobs)
            self.c.set_tag(self.run_id, "slurm_job", job)

    def _log_traces(self) -> None:
        if not self.traces:
            return
        import pandas as pd

        frame = pd.concat([pd.DataFrame(t) for t in self.traces], ignore_index=True)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(tracking.ARTIFACT_TRACES).name
            frame.to_csv(path, index=False, compression="gzip")
            self.c.log_artifact(self.run_id, str(path), str(Path(tracking.ARTIFACT_TRACES).parent))

    def _on_signal(self, signum: int, frame) -> None:
        self.checkpoints.signum = signum               # the loop checkpoints at its next batch
