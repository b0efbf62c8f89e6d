"""Figures and tables, each drawn from tracked runs only.

`draw("figure-7", profile="smoke")` trains (or reuses) the runs the figure's experiment file
declares, selects exactly those runs from the tracking store by config hash, and hands them to the
figure's module. Every output gets a sidecar `<name>.runs.json` naming the run ids it came from.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from pathlib import Path

from reproduce.config import ConfigError

DEFAULT_FIGURES_DIR = Path(__file__).resolve().parents[1] / "figures"


def figures_dir() -> Path:
    """Where outputs go: $FIGURES_DIR, else figures/ at the repository root."""
    return Path(os.environ.get("FIGURES_DIR") or DEFAULT_FIGURES_DIR)


def targets() -> dict[str, str]:
    """Output name -> analysis module: every analysis/figure_*.py and analysis/table_*.py.

    Each such module declares EXPERIMENTS (the experiment files whose runs it reads) and
    draw(runs, stem, profile, uri) -> list of written paths.
    """
    here = Path(__file__).parent
    found = {}
    for path in sorted(here.glob("figure_*.py")) + sorted(here.glob("table_*.py")):
        kind, _, name = path.stem.partition("_")
        found[f"{kind}-{name.replace('_', '-')}"] = f"analysis.{path.stem}"
    return found


def canonical(target: str) -> str:
    t = str(target).strip().lower()
    if t.isdigit():
        t = f"figure-{t}"
    elif not t.startswith(("figure-", "table-")):
        t = f"table-{t}"
    if t not in targets():
        raise ConfigError(f"unknown figure or table {target!r}; choose one of "
                          f"{', '.join(targets())}")
    return t


def draw(target: str, profile: str = "smoke", run_missing: bool = True, force: bool = False,
         overrides: dict | None = None, out_dir: Path | None = None, progress: bool = True,
         uri: str | None = None) -> list[Path]:
    from reproduce.experiments import plan
    from reproduce.runner import run_experiment

    from .runs import load_runs

    name = canonical(target)
    module = importlib.import_module(targets()[name])
    experiments = list(module.EXPERIMENTS)
    planned = [p for e in experiments for p in plan(e, profile, overrides)]
    if run_missing:
        for e in experiments:
            run_experiment(e, profile, force, overrides, progress=progress, uri=uri)
    hashes = {p.hash for p in planned}
    runs = load_runs(profile, hashes, uri)
    if runs.empty:
        raise ConfigError(f"{name}: no finished runs in the tracking store for profile {profile!r}; "
                          f"train them with `make {name} PROFILE={profile}` "
                          f"(or `python -m reproduce run {' '.join(experiments)} --profile {profile}`)")
    if len(runs) < len(hashes):
        print(f"{name}: {len(hashes) - len(runs)} of {len(hashes)} planned runs are not tracked "
              f"yet; drawing from the {len(runs)} that are")
    out_dir = Path(out_dir or figures_dir())
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = module.draw(runs, out_dir / name, profile=profile, uri=uri)
    sidecar = out_dir / f"{name}.runs.json"
    sidecar.write_text(json.dumps({
        "output": name, "profile": profile, "experiments": experiments,
        "runs": [{"run_id": r.run_id, "experiment": r.experiment, "variant": r.variant,
                  "seed": int(r.seed), "config_hash": r.config_hash} for r in runs.itertuples()],
        "drawn_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }, indent=2))
    from .index import write_index
    write_index(out_dir)           # figures/INDEX.md: every output present and the runs behind it
    return [*outputs, sidecar]
