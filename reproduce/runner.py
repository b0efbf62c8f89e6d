"""Experiment files in, tracked runs out.

An experiment file (experiments/<name>.yaml) declares which runs a figure or table needs:

    name: figure-7
    figures: [figure-7, figure-9]        # ids of the figures/tables that read these runs
    description: ...
    base: {model: {name: resnet20}}      # overrides for every run
    profiles:                            # per-profile overrides (on top of experiments/profiles.yaml)
      smoke: {seeds: [0], config: {train: {epochs: 30}}}
      paper: {seeds: [0, 1, 2]}
    runs:                                # one entry per variant (default: one run named "grow")
      - variant: grow
        config: {budget: {target: 0.5}}

A run's config = defaults ← profiles.yaml[profile] ← base ← profiles[profile].config ← run config
← command-line --set, then seed. Its identity is the hash of that resolved config: a finished run
with the same hash is reused unless forced.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from . import tracking
from .config import ConfigError, RunConfig, config_hash, flatten, resolve, to_dict

EXPERIMENTS_DIR = tracking.REPO_ROOT / "experiments"
PROFILES_FILE = "profiles.yaml"
EXPERIMENT_KEYS = {"name", "description", "figures", "base", "profiles", "runs"}
PROFILE_KEYS = {"seeds", "config", "description"}
RUN_KEYS = {"variant", "config", "profiles", "description"}


@dataclass
class PlannedRun:
    cfg: RunConfig
    experiment: str
    figures: list[str]
    profile: str

    @property
    def hash(self) -> str:
        return config_hash(self.cfg)


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


def find_yaml(name_or_path: str, what: str = "experiment",
              accept: Callable[[Path], bool] | None = None) -> Path:
    """A YAML path, or a name in experiments/; a miss lists the known names of that kind."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    candidate = EXPERIMENTS_DIR / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    known = sorted(q.stem for q in EXPERIMENTS_DIR.glob("*.yaml")
                   if q.name != PROFILES_FILE and (accept is None or accept(q)))
    raise ConfigError(f"{what} {name_or_path!r} not found (looked for {p} and {candidate}); "
                      f"known {what}s: {', '.join(known) or 'none'}")


def experiment_path(name_or_path: str) -> Path:
    return find_yaml(name_or_path, "experiment")


def load_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _check_keys(where: str, data: dict, allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(allowed))}")


def load_profiles(directory: Path) -> dict:
    path = directory / PROFILES_FILE
    profiles = load_yaml(path) if path.exists() else {}
    for name, body in profiles.items():
        _check_keys(f"{path}: profile {name!r}", body or {}, PROFILE_KEYS)
    return profiles


def plan(path: str | Path, profile: str = "smoke", overrides: dict | None = None,
         only: list[str] | None = None) -> list[PlannedRun]:
    """Every run an experiment file declares for a profile, fully resolved and validated."""
    path = experiment_path(str(path))
    exp = load_yaml(path)
    if "space" in exp and "objectives" in exp:
        raise ConfigError(f"{path} is a search spec, not an experiment file; run it with "
                          f"`python -m reproduce search {path.stem}` (make search SEARCH={path.stem})")
    _check_keys(str(path), exp, EXPERIMENT_KEYS)
    profiles = load_profiles(path.parent)
    exp_profiles = exp.get("profiles") or {}
    if profile not in profiles and profile not in exp_profiles:
        known = sorted(set(profiles) | set(exp_profiles))
        raise ConfigError(f"{path}: unknown profile {profile!r}; choose one of {', '.join(known)}")
    shared, own = profiles.get(profile) or {}, exp_profiles.get(profile) or {}
    _check_keys(f"{path}: profiles.{profile}", own, PROFILE_KEYS)
    seeds = own.get("seeds", shared.get("seeds", [0]))
    name = exp.get("name", path.stem)
    figures = [str(f) for f in exp.get("figures", [name])]
    runs = exp.get("runs") or [{"variant": "grow"}]
    planned = []
    for i, run in enumerate(runs):
        _check_keys(f"{path}: runs[{i}]", run, RUN_KEYS)
        run_profile = (run.get("profiles") or {}).get(profile) or {}
        _check_keys(f"{path}: runs[{i}].profiles.{profile}", run_profile, PROFILE_KEYS)
        variant = str(run.get("variant", f"run{i}"))
        if only and variant not in only:
            continue
        for seed in run_profile.get("seeds", seeds):
            cfg = resolve(shared.get("config"), exp.get("base"), own.get("config"), run.get("config"),
                          run_profile.get("config"), overrides, {"variant": variant, "seed": seed},
                          source=f"{path} (profile {profile}, run {variant!r})")
            planned.append(PlannedRun(cfg, name, figures, profile))
    if only and not planned:
        raise ConfigError(f"{path}: no run named {', '.join(only)}; variants: "
                          f"{', '.join(str(r.get('variant')) for r in runs)}")
    return planned


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
    keys = ("val/acc", "cost/macs", "cost/dense_macs", "cost/params", "cost/train_macs_total",
            "budget/usage")
    return {"run_id": run_id, "variant": pr.cfg.variant, "seed": pr.cfg.seed, "reused": reused,
            "model": pr.cfg.model.name, "dataset": pr.cfg.data.dataset,
            **{k: metrics.get(k, math.nan) for k in keys}}


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
    from .train import train

    cfg = pr.cfg
    tags = {"model": cfg.model.name, "dataset": cfg.data.dataset, "profile": pr.profile,
            "variant": cfg.variant, "seed": str(cfg.seed), "figures": ",".join(pr.figures),
            "config_hash": pr.hash, "git_commit": tracking.git_commit(), "experiment": pr.experiment}
    tags.update({k: str(v) for k, v in (extra_tags or {}).items()})
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run = c.create_run(exp_id, run_name=run_name or f"{cfg.model.name}-{cfg.variant}-s{cfg.seed}",
                       tags=tags)
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
        result = train(cfg, on_epoch=on_epoch, progress=progress)
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
    import torch

    from .method import architecture_summary, export
    from .models import compact_checkpoint

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
