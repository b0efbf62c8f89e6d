"""What `make figure-N` and `make table-NAME` do: plan, train what is missing, draw from the store.

    make("figure-7", profile="smoke")

1. plan every run the figure's experiment files declare (validated before anything trains);
2. train the runs not yet finished in the store (reused by config hash, unless forced);
3. select exactly those runs from the store and hand them to the figure's analysis module,
   which reads the store only;
4. write the sidecar `<name>.runs.json` naming the runs, and refresh figures/INDEX.md.

Training lives here, on the package side; `analysis/` never imports it, so any figure can be
redrawn from a store copied to another machine (`run_missing=False`).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import analysis
from analysis.index import write_index

from .errors import ConfigError
from .experiments import plan
from .runner import run_experiment
from .store import Store


def experiments_of(targets: list[str]) -> list[str]:
    """The experiment files behind figure/table targets, each once, in order."""
    names = []
    for target in targets:
        module = importlib.import_module(analysis.targets()[analysis.canonical(target)])
        names += [e for e in module.EXPERIMENTS if e not in names]
    return names


def train_all(experiments: list[str], profile: str = "smoke", force: bool = False,
              overrides: dict | None = None, jobs: int = 1, progress: bool = True,
              uri: str | None = None) -> None:
    """Train what the experiments need with `jobs` processes working through the same list.

    Every process walks all runs; a run's claim (tracking.claim) makes sure exactly one trains
    it, while the others move on and later reuse its result. With jobs = 1 this is one
    run_experiment per file.
    """
    for e in experiments:                      # validate everything before anything trains
        plan(e, profile, overrides)
    helpers = []
    if jobs > 1 and not force:                 # (forcing retrains in one process)
        command = [sys.executable, "-m", "reproduce", "run", *experiments, "--profile", profile,
                   "--quiet", "--jobs", "1", "--overrides-json", json.dumps(overrides or {})]
        env = {**os.environ, **({"MLFLOW_TRACKING_URI": uri} if uri else {})}
        helpers = [subprocess.Popen(command, env=env) for _ in range(jobs - 1)]
    try:
        for e in experiments:
            run_experiment(e, profile, force, overrides, progress=progress, uri=uri)
    finally:
        codes = [h.wait() for h in helpers]
    if any(codes):
        raise RuntimeError(f"{sum(1 for c in codes if c)} of {len(helpers)} helper processes "
                           f"failed; their runs are marked FAILED in the store with the reason")


def make(target: str, profile: str = "smoke", run_missing: bool = True, force: bool = False,
         overrides: dict | None = None, out_dir: Path | None = None, progress: bool = True,
         uri: str | None = None) -> list[Path]:
    name = analysis.canonical(target)
    module = importlib.import_module(analysis.targets()[name])
    experiments = list(module.EXPERIMENTS)
    planned = [p for e in experiments for p in plan(e, profile, overrides)]
    if run_missing:
        for e in experiments:
            run_experiment(e, profile, force, overrides, progress=progress, uri=uri)
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
