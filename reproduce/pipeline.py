"""What `make figure-N` and `make table-NAME` do: plan, train what is missing, draw from the store.

    make("figure-7", profile="smoke")

1. plan every run the figure's experiment files declare (validated before anything trains);
2. hand those planned runs to the runner, which trains the ones not yet finished in the store
   (reused by config hash, unless forced);
3. select exactly those runs from the store and hand them to the figure's analysis module,
   which reads the store only;
4. write the sidecar `<name>.runs.json` naming the runs, and refresh figures/INDEX.md.

Training lives here, on the package side; `analysis/` never imports it, so any figure can be
redrawn from a store copied to another machine (`run_missing=False`).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import analysis
from analysis.index import write_index

from . import distributed
from .errors import ConfigError
from .experiments import PlannedRun, plan
from .launch.devices import PROCESSES_ENV, process_slots
from .launch.settings import rank_mismatches
from .runner import run_all
from .store import Store
from .tracking import tracking_uri


def experiments_of(targets: list[str]) -> list[str]:
    """The experiment files behind figure/table targets, each once, in order."""
    names = []
    for target in targets:
        module = importlib.import_module(analysis.targets()[analysis.canonical(target)])
        names += [e for e in module.EXPERIMENTS if e not in names]
    return names


def plan_each(experiments: list[str], profile: str = "smoke", overrides: dict | None = None,
              only: list[str] | None = None) -> dict[str, list[PlannedRun]]:
    """Each experiment file's runs, by file; all validated before anything trains."""
    return {e: plan(e, profile, overrides, only) for e in experiments}


def plan_all(experiments: list[str], profile: str = "smoke", overrides: dict | None = None,
             only: list[str] | None = None) -> list[PlannedRun]:
    """Every run of the experiment files, in order; all validated before anything trains."""
    return [pr for runs in plan_each(experiments, profile, overrides, only).values()
            for pr in runs]


def train_all(runs: list[PlannedRun], force: bool = False, jobs: int = 1, progress: bool = True,
              uri: str | None = None, *, launcher: str = "local", launch: dict | None = None,
              wait: bool = True, runs_per_gpu: int | None = None, label: str = "reproduce"
              ) -> list[dict]:
    """Train (or reuse, or resume) planned runs; returns this process's summary of each run
    it trained or reused here (none with the Slurm launcher, whose jobs train them).

    local: `jobs` processes work through the same list; a run's claim (tracking.claim) makes
    sure exactly one trains it, while the others move on and later reuse its result. Process i
    takes GPU i mod G and an even share of the cores (launch/devices.py).
    slurm: one job per missing run (launch/slurm.py), resources from the profile's `launcher:`
    section and `launch` (the command's `--set launcher.*`); with `wait`, until every job ended.
    """
    if launcher == "slurm":
        from .launch import slurm

        outcome = slurm.train(runs, uri=uri or tracking_uri(), launcher_overrides=launch,
                              force=force, wait=wait, progress=progress, label=label)
        if outcome["failed"]:
            raise slurm.SlurmError(f"{len(outcome['failed'])} of {len(runs)} runs did not finish "
                                   f"(their errors are above); fix the cause and run the same "
                                   f"command again: finished runs are reused")
        return []
    if launcher != "local":
        raise ConfigError(f"LAUNCHER={launcher}: choose local (this machine) or slurm")
    for line in rank_mismatches(runs, lambda pr: distributed.world_size()):
        print(f"[warning] {line}", file=sys.stderr)
    slots = process_slots(jobs if not force else 1, runs_per_gpu=runs_per_gpu)
    helpers = []
    if len(slots) > 1:
        spawn = multiprocessing.get_context("spawn")   # fresh interpreters, no forked torch state
        for slot in slots[1:]:
            h = spawn.Process(target=run_all, args=(runs,), kwargs={"progress": False, "uri": uri})
            with _environment(slot.env()):             # the child starts with its slot's GPU
                h.start()
            helpers.append(h)
        _use_threads(slots[0].threads)
    try:
        with _helpers_stop_with_this_process(helpers), \
                _environment({PROCESSES_ENV: str(len(slots))}):
            summaries = run_all(runs, force, progress, uri)
    finally:
        for h in helpers:
            h.join()
    failed = sum(1 for h in helpers if h.exitcode)
    if failed:
        raise RuntimeError(f"{failed} of {len(helpers)} helper processes failed; their runs are "
                           f"marked FAILED in the store with the reason")
    return summaries


def finished_hashes(planned: list[PlannedRun], uri: str | None = None) -> set[str]:
    """The config hashes of the planned runs that have a FINISHED run in the store."""
    from . import tracking

    c = tracking.client(uri)
    out = set()
    for profile in dict.fromkeys(pr.profile for pr in planned):
        exp_id = tracking.experiment_id(c, profile, create=False)
        if exp_id is None:
            continue
        out |= {pr.hash for pr in planned if pr.profile == profile
                and tracking.find_finished(c, exp_id, pr.hash) is not None}
    return out


@contextlib.contextmanager
def _helpers_stop_with_this_process(helpers: list) -> Iterator[None]:
    """A preemption signal (SIGTERM, SIGUSR1, SIGUSR2) sent to this process stops its helpers
    too: each gets the same signal, checkpoints the run it trains and stops, instead of going
    on, or picking up the run this process just checkpointed, after the machine was asked to stop.
    While this process trains, its run handles the signal (tracked_run.Preempted propagates);
    while it waits for a helper's run, the handler installed here raises the same. (Ctrl-C
    reaches every process of the terminal's group by itself.)"""
    from .tracked_run import PREEMPTION_SIGNALS, Preempted, preemption_signals

    def stop(signum, frame):
        raise Preempted(signum, waiting=True)

    with contextlib.ExitStack() as stack:
        if helpers:
            stack.enter_context(preemption_signals(stop))
        try:
            yield
        except Preempted as e:
            for h in helpers:
                if h.is_alive() and e.signum in PREEMPTION_SIGNALS:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(h.pid, e.signum)
            raise


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    """os.environ with `values` set inside the block (what a process started there inherits)."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _use_threads(n: int) -> None:
    """This process's share of the cores (a run's own train.threads, when set, wins)."""
    import torch
    torch.set_num_threads(n)


def make(target: str, profile: str = "smoke", run_missing: bool = True, force: bool = False,
         overrides: dict | None = None, out_dir: Path | None = None, progress: bool = True,
         uri: str | None = None, plans: dict[str, list[PlannedRun]] | None = None) -> list[Path]:
    """Draw one figure or table. `plans`: experiment files already planned (`plan_each`) with
    the same profile and overrides, so that a command drawing several targets plans once."""
    name = analysis.canonical(target)
    module = importlib.import_module(analysis.targets()[name])
    experiments = list(module.EXPERIMENTS)
    plans = plans or {}
    plans = {**plan_each([e for e in experiments if e not in plans], profile, overrides), **plans}
    planned = [pr for e in experiments for pr in plans[e]]
    if run_missing:
        run_all(planned, force, progress, uri)
    hashes = {p.hash for p in planned}
    store = Store(uri)
    runs = store.runs(profile, hashes)
    if runs.empty:
        raise ConfigError(f"{name}: no finished runs in the tracking store for profile {profile!r}; "
                          f"train them with `make {name} PROFILE={profile}` "
                          f"(or `python -m reproduce run {' '.join(experiments)} --profile {profile}`)")
    if len(runs) < len(hashes):
        print(f"{name}: {len(hashes) - len(runs)} of {len(hashes)} planned runs are not tracked "
              f"yet; drawing from the {len(runs)} that are")
    out_dir = Path(out_dir or analysis.figures_dir())
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = module.draw(runs, out_dir / name, profile=profile, store=store)
    sidecar = out_dir / f"{name}.runs.json"
    sidecar.write_text(json.dumps({
        "output": name, "profile": profile, "experiments": experiments,
        "runs": [{"run_id": r.run_id, "experiment": r.experiment, "variant": r.variant,
                  "seed": int(r.seed), "config_hash": r.config_hash} for r in runs.itertuples()],
        "drawn_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }, indent=2))
    write_index(out_dir)           # figures/INDEX.md: every output present and the runs behind it
    return [*outputs, sidecar]
