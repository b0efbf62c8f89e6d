"""Experiment files: what runs a figure or table needs, resolved and validated.

An experiment file (experiments/<name>.yaml) declares which runs a figure or table needs:

    name: figure-7
    figures: [figure-7, figure-9]        # ids of the figures/tables that read these runs
    description: ...
    base: {model: {name: resnet20}}      # overrides for every run
    profiles:                            # per-profile overrides (on top of experiments/profiles.yaml)
      smoke: {seeds: [0], config: {train: {epochs: 30}}}
      paper: {seeds: [0, 1, 2]}
      # or on top of another shared profile: these runs' `paper` is ImageNet, not CIFAR-10
      # paper: {shared: paper-imagenet}
    runs:                                # one entry per variant (default: one run named "grow")
      - variant: grow
        config: {budget: {target: 0.5}}

A run's config = defaults ← profiles.yaml[profile] ← base ← profiles[profile].config ← run config
← command-line --set, then seed. `profiles[profile].shared` names the profiles.yaml entry to
start from instead of profiles.yaml[profile] (its seeds and config), for experiments whose data
and schedule differ from the profile's usual ones (ImageNet under `paper`, whose shared entry
is CIFAR-10); the runs are still tracked under `profile`. Its identity is the hash of that resolved config: a finished run
with the same hash is reused unless forced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from .config import ConfigError, RunConfig, config_hash, resolve

REPO_ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS_DIR = REPO_ROOT / "experiments"
PROFILES_FILE = "profiles.yaml"
EXPERIMENT_KEYS = {"name", "description", "figures", "base", "profiles", "runs"}
PROFILE_KEYS = {"seeds", "config", "description"}
# profiles.yaml's entries also say what a cluster job of theirs asks for (launch/settings.py)
SHARED_PROFILE_KEYS = PROFILE_KEYS | {"launcher"}
# an experiment file's own profile entry may also name the shared profile it starts from
EXPERIMENT_PROFILE_KEYS = PROFILE_KEYS | {"shared"}
RUN_KEYS = {"variant", "config", "profiles", "description"}


@dataclass
class PlannedRun:
    cfg: RunConfig
    experiment: str
    figures: list[str]
    profile: str
    description: str = ""           # the experiment file's description (the run's MLflow note)
    # what a Slurm job of this run asks for: the `launcher:` section of its profile (not identity)
    launch: dict = field(default_factory=dict, compare=False)

    @property
    def hash(self) -> str:
        return config_hash(self.cfg)


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


def check_keys(where: str, data: dict, allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(allowed))}")


def load_profiles(directory: Path) -> dict:
    """The suite's profiles (experiments/profiles.yaml), and those of a profiles.yaml beside an
    experiment file kept elsewhere, which add to or replace them by name."""
    profiles: dict = {}
    for folder in dict.fromkeys([EXPERIMENTS_DIR, Path(directory)]):
        path = folder / PROFILES_FILE
        if not path.exists():
            continue
        for name, body in load_yaml(path).items():
            check_keys(f"{path}: profile {name!r}", body or {}, SHARED_PROFILE_KEYS)
            profiles[name] = body
    return profiles


def plan(path: str | Path, profile: str = "smoke", overrides: dict | None = None,
         only: list[str] | None = None) -> list[PlannedRun]:
    """Every run an experiment file declares for a profile, fully resolved and validated."""
    path = experiment_path(str(path))
    exp = load_yaml(path)
    if not exp:
        raise ConfigError(f"{path} is empty; an experiment file declares its runs, e.g. "
                          f"`runs: [{{variant: grow, config: {{budget: {{target: 0.5}}}}}}]` "
                          f"(see experiments/figure-7.yaml)")
    if "space" in exp and "objectives" in exp:
        raise ConfigError(f"{path} is a search spec, not an experiment file; run it with "
                          f"`python -m reproduce search {path.stem}` (make search SEARCH={path.stem})")
    check_keys(str(path), exp, EXPERIMENT_KEYS)
    profiles = load_profiles(path.parent)
    exp_profiles = exp.get("profiles") or {}
    if profile not in profiles and profile not in exp_profiles:
        known = sorted(set(profiles) | set(exp_profiles))
        raise ConfigError(f"{path}: unknown profile {profile!r}; choose one of {', '.join(known)}")
    own = exp_profiles.get(profile) or {}
    check_keys(f"{path}: profiles.{profile}", own, EXPERIMENT_PROFILE_KEYS)
    base_profile = str(own.get("shared", profile))
    if "shared" in own and base_profile not in profiles:
        raise ConfigError(f"{path}: profiles.{profile}.shared: unknown shared profile "
                          f"{base_profile!r}; profiles.yaml defines {', '.join(sorted(profiles))}")
    shared = profiles.get(base_profile) or {}
    seeds = own.get("seeds", shared.get("seeds", [0]))
    name = exp.get("name", path.stem)
    figures = [str(f) for f in exp.get("figures", [name])]
    runs = exp.get("runs") or [{"variant": "grow"}]
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise ConfigError(f"{path}: runs: expected a list of mappings like "
                          f"[{{variant: grow, config: {{...}}}}], got {runs!r}")
    planned = []
    for i, run in enumerate(runs):
        check_keys(f"{path}: runs[{i}]", run, RUN_KEYS)
        run_profile = (run.get("profiles") or {}).get(profile) or {}
        check_keys(f"{path}: runs[{i}].profiles.{profile}", run_profile, PROFILE_KEYS)
        variant = str(run.get("variant", f"run{i}"))
        if only and variant not in only:
            continue
        for seed in run_profile.get("seeds", seeds):
            cfg = resolve(shared.get("config"), exp.get("base"), own.get("config"), run.get("config"),
                          run_profile.get("config"), overrides, {"variant": variant, "seed": seed},
                          source=f"{path} (profile {profile}, run {variant!r})")
            description = str(run.get("description") or exp.get("description") or "").strip()
            planned.append(PlannedRun(cfg, name, figures, profile, description,
                                      dict(shared.get("launcher") or {})))
    seen: dict[tuple, int] = {}
    for p in planned:                 # tables and figures tell runs apart by model and variant
        key = (p.cfg.model.name, p.cfg.variant, p.cfg.seed)
        if key in seen:
            raise ConfigError(f"{path}: variant {p.cfg.variant!r} of {p.cfg.model.name} is declared "
                              f"more than once; give every run its own variant name")
        seen[key] = 1
    if only and not planned:
        raise ConfigError(f"{path}: no run named {', '.join(only)}; variants: "
                          f"{', '.join(str(r.get('variant')) for r in runs)}")
    return planned
