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

import importlib
import json
import multiprocessing
import time
from pathlib import Path

import analysis
from analysis.index import write_index

from .errors import ConfigError
from .experiments import PlannedRun, plan
from .runner import run_all
from .store import Store


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
              uri: str | None = None) -> list[dict]:
    """Train (or reuse, or resume) planned runs with `jobs` processes working through the same
    list; returns this process's summary of each run.

    Every process walks all runs; a run's claim (tracking.claim) makes sure exactly one trains
    it, while the others move on and later reuse its result. With jobs = 1 this is run_all.
    """
    helpers = []
    if jobs > 1 and not force:                 # (forcing retrains in one process)
        spawn = multiprocessing.get_context("spawn")   # fresh interpreters, no forked torch state
        helpers = [spawn.Process(target=run_all, args=(runs,),
                                 kwargs={"progress": False, "uri": uri}) for _ in range(jobs - 1)]
        for h in helpers:
            h.start()
    try:
        summaries = run_all(runs, force, progress, uri)
    finally:
        for h in helpers:
            h.join()
    failed = sum(1 for h in helpers if h.exitcode)
    if failed:
        raise RuntimeError(f"{failed} of {len(helpers)} helper processes failed; their runs are "
                           f"marked FAILED in the store with the reason")
    return summaries


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
