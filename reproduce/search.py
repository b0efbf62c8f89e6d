"""Optuna search over the method's hyper-parameters, tracked in MLflow, browsable in optuna-dashboard.

A search spec (experiments/search-*.yaml) names a base experiment file and searches some of its
config fields:

    name: search-resnet20-budget
    description: ...
    base: figure-7                  # experiment file whose run is the starting point
    variant: grow                   # optional: which of its runs (default: the first)
    set: {train: {epochs: 20}}      # optional: fixed overrides for every trial (nested or dotted)
    objectives:                     # one (single-objective) or several (multi-objective, Pareto)
      - {metric: val/acc, direction: maximize}
    constraints:                    # optional: feasible when min <= metric <= max
      - {metric: budget/usage, max: 0.55}
    space:                          # dotted config keys, sampled in this order
      budget.lambda_base: {type: float, low: 0.01, high: 0.3, log: true}
      budget.growth_push: {type: categorical, choices: [uniform, cost]}
      temperature.decay: {type: float, low: 0.5, high: 0.99,
                          when: {temperature.schedule: separate_decayed}}   # conditional
    sampler: {name: tpe, seed: 0}   # + any option of the Optuna sampler
    pruner: {name: median, n_warmup_steps: 5}   # + any option of the Optuna pruner
    trials: 20                      # finished (complete or pruned) trials the study ends with
    heartbeat: {interval: 30, grace_period: 120, max_retry: 2}   # optional
    profiles:                       # optional per-profile changes
      smoke: {trials: 8, set: {train: {epochs: 12}}}

A trial is the base run resolved through `experiments.plan` with the sampled values as the
highest-precedence overrides, trained and tracked by `runner.train_tracked` as a normal run, nested
under the study's MLflow parent run. See docs/SEARCH.md for usage, workers and storage.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from . import tracking
from .config import ConfigError, RunConfig, flatten, parse_overrides, unflatten

SPEC_KEYS = {"name", "description", "base", "variant", "set", "objectives", "constraints", "space",
             "sampler", "pruner", "trials", "study_name", "heartbeat", "profiles"}
SPEC_PROFILE_KEYS = {"description", "trials", "set", "sampler", "pruner"}
PARAM_KEYS = {"float": {"type", "low", "high", "log", "step", "when"},
              "int": {"type", "low", "high", "log", "step", "when"},
              "categorical": {"type", "choices", "when"}}
HEARTBEAT_DEFAULTS = {"interval": 30, "grace_period": 120, "max_retry": 2}

# Final-epoch metrics a trial can optimise or constrain (the tracking contract's names) and the
# ratios derived from them.
RUN_METRICS = ("val/acc", "val/loss", "train/acc", "train/loss", "cost/macs", "cost/params",
               "cost/train_macs_total", "cost/inference_savings", "cost/train_savings",
               "budget/usage", "budget/lambda")
DERIVED_METRICS = {"cost/macs_ratio": ("cost/macs", "cost/dense_macs"),
                   "cost/params_ratio": ("cost/params", "cost/dense_params"),
                   "cost/train_macs_ratio": ("cost/train_macs_total", "cost/dense_train_macs_total")}
METRIC_PREFIXES = ("channels/", "blocks/", "temperature/")

SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "nsga2": "NSGAIISampler",
            "nsga3": "NSGAIIISampler", "cmaes": "CmaEsSampler", "gp": "GPSampler",
            "qmc": "QMCSampler"}
SINGLE_OBJECTIVE_SAMPLERS = {"cmaes"}
PRUNERS = {"median": "MedianPruner", "percentile": "PercentilePruner",
           "successive_halving": "SuccessiveHalvingPruner", "hyperband": "HyperbandPruner",
           "threshold": "ThresholdPruner", "none": "NopPruner"}

# Trial user attributes written by the objective (fresh values overwrite inherited ones on retries).
TRIAL_ATTRS = ("mlflow_run_id", "config_hash", "reused_run_id", "metrics", "feasible",
               "fail_reason", "stop_reason", "surplus")


class SearchError(ConfigError):
    """The search cannot go on (e.g. every trial fails); the message says why and what to do."""


class _TrialFailed(Exception):
    """A trial that cannot be run (its sampled config is invalid); recorded as FAIL."""


# ----------------------------------------------------------------------------------- the spec

@dataclass
class Param:
    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: list | None = None
    when: dict[str, list] = field(default_factory=dict)

    def describe(self) -> str:
        if self.type == "categorical":
            text = f"categorical {self.choices}"
        else:
            text = f"{self.type} [{self.low}, {self.high}]" + (" log" if self.log else "") + \
                (f" step {self.step}" if self.step else "")
        if self.when:
            text += " when " + ", ".join(f"{k} in {v}" for k, v in self.when.items())
        return text


@dataclass
class Objective:
    metric: str
    direction: str      # maximize | minimize


@dataclass
class Constraint:
    metric: str
    max: float | None = None
    min: float | None = None

    def values(self, metrics: dict) -> dict[str, float]:
        """{name: value} in Optuna's convention (<= 0 is feasible), one per bound."""
        v = metric_value(metrics, self.metric)
        out = {}
        if self.max is not None:
            out[f"{self.metric} <= {self.max}"] = v - self.max
        if self.min is not None:
            out[f"{self.metric} >= {self.min}"] = self.min - v
        return out

    def describe(self) -> str:
        parts = ([f"{self.min} <="] if self.min is not None else []) + [self.metric] + \
            ([f"<= {self.max}"] if self.max is not None else [])
        return " ".join(parts)


@dataclass
class SearchSpec:
    path: Path
    name: str
    description: str
    base: Path
    variant: str | None
    fixed: dict                     # nested overrides for every trial (spec set + profile set + CLI)
    objectives: list[Objective]
    constraints: list[Constraint]
    space: list[Param]
    sampler: dict
    pruner: dict
    trials: int
    study_name: str
    heartbeat: dict
    profile: str
    profile_sets: dict              # profile -> that profile's own `set` (for search-best)
    base_set: dict                  # the spec's top-level `set`
    cli_set: dict                   # --set overrides given on the command line

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]


def spec_path(name_or_path: str) -> Path:
    from .experiments import find_yaml
    return find_yaml(name_or_path, "search spec", accept=_is_spec)


def spec_ref(spec: "SearchSpec") -> str:
    """How to name the spec on the command line: its name in experiments/, else its path."""
    from .experiments import EXPERIMENTS_DIR
    return spec.path.stem if spec.path.resolve().parent == EXPERIMENTS_DIR.resolve() \
        else str(spec.path)


def _is_spec(path: Path) -> bool:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "space" in data


def _deep_merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in (b or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _nested(where: str, value: Any) -> dict:
    """A `set` block, nested or with dotted keys, as a nested dict."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of config keys to values, got {value!r}")
    return unflatten(flatten(value))


def _check_keys(where: str, data: Any, allowed: set[str]) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(allowed))}")


def _number(where: str, value: Any, integer: bool = False) -> float | int:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok:
        raise ConfigError(f"{where}: expected {'an integer' if integer else 'a number'}, got {value!r}")
    return value


def _field(path: str) -> tuple[Any, dict]:
    """(Python type, dataclass field metadata) of a dotted RunConfig key, or ConfigError."""
    cls: Any = RunConfig
    parts = path.split(".")
    for i, part in enumerate(parts):
        by_name = {f.name: f for f in fields(cls)}
        here = ".".join(parts[:i]) or "the top level"
        if part not in by_name:
            raise ConfigError(f"{path!r} is not a config field: no key {part!r} in {here}; valid keys "
                              f"there: {', '.join(by_name)}")
        typ = get_type_hints(cls)[part]
        if i < len(parts) - 1:
            if not (isinstance(typ, type) and is_dataclass(typ)):
                raise ConfigError(f"{path!r} is not a config field: {'.'.join(parts[:i + 1])} has no "
                                  f"sub-keys")
            cls = typ
        elif isinstance(typ, type) and is_dataclass(typ):
            raise ConfigError(f"{path!r} is a config section, not a field; search one of its keys: "
                              f"{', '.join(path + '.' + f.name for f in fields(typ))}")
        else:
            return typ, dict(by_name[part].metadata)
    raise AssertionError


def _parse_param(where: str, name: str, body: Any) -> Param:
    if not isinstance(body, dict) or "type" not in body:
        raise ConfigError(f"{where}: expected a mapping with a type (float, int or categorical), "
                          f"e.g. {{type: float, low: 0.01, high: 0.3, log: true}}; got {body!r}")
    kind = body["type"]
    if kind not in PARAM_KEYS:
        raise ConfigError(f"{where}: unknown type {kind!r}; choose one of float, int, categorical")
    _check_keys(where, body, PARAM_KEYS[kind])
    try:
        typ, meta = _field(name)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    when = {}
    for key, vals in (body.get("when") or {}).items():
        when[str(key)] = list(vals) if isinstance(vals, (list, tuple)) else [vals]
    if kind == "categorical":
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list, e.g. choices: [a, b]")
        for c in choices:
            if not (c is None or isinstance(c, (bool, int, float, str))):
                raise ConfigError(f"{where}: choice {c!r} is not a scalar (Optuna categoricals are "
                                  f"None, bool, int, float or str)")
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f"{where}: choices contain duplicates: {choices}")
        return Param(name, kind, choices=choices, when=when)
    if typ not in (int, float):
        options = meta.get("choices")
        hint = f"; use type: categorical with choices from {', '.join(options)}" if options else \
            "; use type: categorical"
        raise ConfigError(f"{where}: {name} is a {getattr(typ, '__name__', typ)} field, not a number"
                          f"{hint}")
    if kind == "float" and typ is int:
        raise ConfigError(f"{where}: {name} is an integer field; use type: int")
    for key in ("low", "high"):
        if key not in body:
            raise ConfigError(f"{where}: missing {key}; a {kind} needs low and high")
    integer = kind == "int"
    low, high = _number(f"{where}.low", body["low"], integer), _number(f"{where}.high", body["high"], integer)
    if low >= high:
        raise ConfigError(f"{where}: low ({low}) must be smaller than high ({high}); swap them or "
                          f"fix a value with `set` instead of searching it")
    log = body.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log: expected true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"{where}: log: true needs low > 0 (got low = {low}); use a positive low "
                          f"or log: false")
    step = body.get("step")
    if step is not None:
        step = _number(f"{where}.step", step, integer)
        if step <= 0:
            raise ConfigError(f"{where}.step: must be positive, got {step}")
        if log and (kind == "float" or step != 1):
            raise ConfigError(f"{where}: Optuna cannot combine log: true with a step"
                              f"{'' if kind == 'float' else ' other than 1'}; drop one of them")
    return Param(name, kind, low, high, log, step, when=when)


def _check_metric(where: str, metric: Any) -> str:
    if not isinstance(metric, str):
        raise ConfigError(f"{where}: expected a metric name, got {metric!r}")
    if metric in RUN_METRICS or metric in DERIVED_METRICS or metric.startswith(METRIC_PREFIXES):
        return metric
    raise ConfigError(f"{where}: unknown metric {metric!r}; choose one of "
                      f"{', '.join(RUN_METRICS + tuple(DERIVED_METRICS))} (or channels/..., "
                      f"blocks/..., temperature/...)")


def _options_of(where: str, body: Any, registry: dict[str, str], module: Any, what: str,
                default: str) -> dict:
    body = {"name": default} if body is None else body
    if isinstance(body, str):
        body = {"name": body}
    if not isinstance(body, dict) or "name" not in body:
        raise ConfigError(f"{where}: expected {{name: ...}} with one of {', '.join(registry)}")
    name = body["name"]
    if name not in registry:
        raise ConfigError(f"{where}: unknown {what} {name!r}; choose one of {', '.join(registry)}")
    cls = getattr(module, registry[name])
    accepted = [p for p in inspect.signature(cls.__init__).parameters
                if p not in ("self", "constraints_func", "args", "kwargs")]
    _check_keys(f"{where} ({what} {name})", body, {"name", *accepted})
    return dict(body)


def load_spec(name_or_path: str, profile: str = "smoke", trials: int | None = None,
              overrides: dict | None = None, study_name: str | None = None) -> SearchSpec:
    """Read and validate a search spec for a profile; every error names the file, key and fix."""
    import optuna

    from .experiments import EXPERIMENT_KEYS, experiment_path, load_yaml, plan

    path = spec_path(name_or_path)
    data = load_yaml(path)
    if "space" not in data and set(data) <= EXPERIMENT_KEYS:
        raise ConfigError(f"{path} is an experiment file, not a search spec (it has no `space`); "
                          f"run it with `python -m reproduce run {path}`")
    _check_keys(str(path), data, SPEC_KEYS)
    for key in ("base", "objectives", "space"):
        if key not in data:
            raise ConfigError(f"{path}: missing required key {key!r} (a search spec needs base, "
                              f"objectives and space; see docs/SEARCH.md)")
    name = str(data.get("name", path.stem))

    profiles = data.get("profiles") or {}
    if not isinstance(profiles, dict):
        raise ConfigError(f"{path}: profiles: expected a mapping of profile name to settings")
    for pname, body in profiles.items():
        _check_keys(f"{path}: profiles.{pname}", body or {}, SPEC_PROFILE_KEYS)
    own = profiles.get(profile) or {}

    # base experiment, relative to the spec's directory first
    base_ref = str(data["base"])
    local = path.parent / (base_ref if base_ref.endswith((".yaml", ".yml")) else f"{base_ref}.yaml")
    base = local if local.exists() and local.resolve() != path.resolve() else experiment_path(base_ref)
    variant = data.get("variant")
    variant = None if variant is None else str(variant)

    base_set = _nested(f"{path}: set", data.get("set"))
    profile_sets = {p: _nested(f"{path}: profiles.{p}.set", (b or {}).get("set"))
                    for p, b in profiles.items()}
    fixed = _deep_merge(_deep_merge(base_set, profile_sets.get(profile, {})), overrides or {})
    only = [variant] if variant else None
    # the base with the fixed overrides must resolve (this also checks the profile exists)
    plan(base, profile, fixed, only)

    # objectives and constraints
    objectives_raw = data["objectives"]
    if isinstance(objectives_raw, dict):
        objectives_raw = [objectives_raw]
    if not isinstance(objectives_raw, list) or not objectives_raw:
        raise ConfigError(f"{path}: objectives: expected a list like [{{metric: val/acc, direction: "
                          f"maximize}}]")
    objectives = []
    for i, o in enumerate(objectives_raw):
        where = f"{path}: objectives[{i}]"
        _check_keys(where, o, {"metric", "direction"})
        metric = _check_metric(f"{where}.metric", o.get("metric"))
        direction = o.get("direction", "maximize")
        if direction not in ("maximize", "minimize"):
            raise ConfigError(f"{where}.direction: expected maximize or minimize, got {direction!r}")
        objectives.append(Objective(metric, direction))
    if len({o.metric for o in objectives}) != len(objectives):
        raise ConfigError(f"{path}: objectives: the same metric appears twice")
    constraints = []
    for i, c in enumerate(data.get("constraints") or []):
        where = f"{path}: constraints[{i}]"
        _check_keys(where, c, {"metric", "max", "min"})
        metric = _check_metric(f"{where}.metric", c.get("metric"))
        if "max" not in c and "min" not in c:
            raise ConfigError(f"{where}: give max and/or min, e.g. {{metric: budget/usage, max: 0.55}}")
        lo = _number(f"{where}.min", c["min"]) if "min" in c else None
        hi = _number(f"{where}.max", c["max"]) if "max" in c else None
        if lo is not None and hi is not None and lo > hi:
            raise ConfigError(f"{where}: min ({lo}) is larger than max ({hi})")
        constraints.append(Constraint(metric, hi, lo))

    # the space
    space_raw = data["space"]
    if not isinstance(space_raw, dict) or not space_raw:
        raise ConfigError(f"{path}: space: expected a mapping of config keys to distributions, e.g. "
                          f"budget.lambda_base: {{type: float, low: 0.01, high: 0.3, log: true}}")
    space: list[Param] = []
    for key, body in space_raw.items():
        param = _parse_param(f"{path}: space.{key}", str(key), body)
        for cond, vals in param.when.items():
            earlier = next((p for p in space if p.name == cond), None)
            if earlier is None or earlier.type != "categorical":
                raise ConfigError(f"{path}: space.{key}.when: {cond!r} must be a categorical key "
                                  f"listed earlier in space")
            bad = [v for v in vals if v not in earlier.choices]
            if bad:
                raise ConfigError(f"{path}: space.{key}.when: {bad[0]!r} is not a choice of {cond} "
                                  f"({earlier.choices})")
        space.append(param)
    for param in space:        # every boundary and choice must resolve to a valid run config
        values = param.choices if param.type == "categorical" else [param.low, param.high]
        for v in values:
            try:
                plan(base, profile, _deep_merge(fixed, unflatten({param.name: v})), only)
            except ConfigError as e:
                raise ConfigError(f"{path}: space.{param.name}: value {v!r} is not valid for this "
                                  f"field ({e}). Narrow the range or fix the choices.") from None

    # sampler, pruner, trials, heartbeat
    sampler = _options_of(f"{path}: sampler", own.get("sampler", data.get("sampler")), SAMPLERS,
                          optuna.samplers, "sampler", "tpe")
    pruner = _options_of(f"{path}: pruner", own.get("pruner", data.get("pruner")), PRUNERS,
                         optuna.pruners, "pruner", "none")
    if len(objectives) > 1:
        if sampler["name"] in SINGLE_OBJECTIVE_SAMPLERS:
            raise ConfigError(f"{path}: sampler {sampler['name']} handles one objective only; use "
                              f"nsga2, tpe or random for {len(objectives)} objectives")
        if pruner["name"] != "none":
            raise ConfigError(f"{path}: pruner {pruner['name']}: Optuna cannot prune "
                              f"multi-objective trials; use pruner: {{name: none}} or one objective")
    if sampler["name"] == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise ConfigError(f"{path}: sampler cmaes needs the `cmaes` package (pip install "
                              f"cmaes), or choose tpe") from None
    n = trials if trials is not None else own.get("trials", data.get("trials", 20))
    n = _number(f"{path}: trials", n, integer=True)
    if n < 1:
        raise ConfigError(f"{path}: trials must be >= 1, got {n}")
    hb_raw = data.get("heartbeat") or {}
    _check_keys(f"{path}: heartbeat", hb_raw, set(HEARTBEAT_DEFAULTS))
    heartbeat = {k: _number(f"{path}: heartbeat.{k}", hb_raw.get(k, v), integer=True)
                 for k, v in HEARTBEAT_DEFAULTS.items()}
    if heartbeat["interval"] < 1 or heartbeat["grace_period"] <= heartbeat["interval"] or \
            heartbeat["max_retry"] < 0:
        raise ConfigError(f"{path}: heartbeat: need interval >= 1, grace_period > interval and "
                          f"max_retry >= 0; got {heartbeat}")
    default_study = f"{data.get('study_name') or name}-{profile}"
    return SearchSpec(path=path, name=name, description=str(data.get("description", "")).strip(),
                      base=base, variant=variant, fixed=fixed, objectives=objectives,
                      constraints=constraints, space=space, sampler=sampler, pruner=pruner,
                      trials=int(n), study_name=study_name or default_study, heartbeat=heartbeat,
                      profile=profile, profile_sets=profile_sets, base_set=base_set,
                      cli_set=overrides or {})


# ------------------------------------------------------------------------------ metrics

def with_derived(stats: dict) -> dict:
    """A run's metrics plus the ratios to the dense model (cost/macs_ratio, ...)."""
    out = {k: float(v) for k, v in stats.items() if isinstance(v, (int, float))}
    for name, (num, den) in DERIVED_METRICS.items():
        if num in out and out.get(den):
            out[name] = out[num] / out[den]
    return out


def metric_value(metrics: dict, name: str) -> float:
    if name not in metrics:
        raise KeyError(f"the run has no metric {name!r} (it has {', '.join(sorted(metrics)[:12])}, ...)")
    return float(metrics[name])


def summary_metrics(metrics: dict, spec: SearchSpec) -> dict:
    keep = {"val/acc", "cost/macs_ratio", "cost/params_ratio", "cost/train_macs_ratio",
            "budget/usage", *(o.metric for o in spec.objectives), *(c.metric for c in spec.constraints)}
    return {k: metrics[k] for k in sorted(keep) if k in metrics and math.isfinite(metrics[k])}


def is_feasible(trial, spec: SearchSpec | None = None) -> bool:
    """Optuna's rule: every constraint value <= 0 (set with Trial.set_constraint)."""
    vals = trial.constraints
    if not vals:
        return not (spec and spec.constraints)
    return all(v <= 0 for v in vals.values())


# ------------------------------------------------------------------------ storage and study

def storage_url(explicit: str | None = None) -> str:
    return explicit or os.environ.get("OPTUNA_STORAGE") or \
        f"sqlite:///{tracking.REPO_ROOT / 'optuna.db'}"


def redact(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not an SQLAlchemy URL: show as is
        return url


def _quiet_optuna_warnings() -> None:
    import optuna
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


@contextlib.contextmanager
def sqlite_init_lock(url: str):
    """Serialise creating (and migrating) a SQLite store between processes on this machine.

    Two processes that create the tables of a fresh SQLite file at the same moment can leave it
    half-migrated (MLflow's alembic migrations are not atomic on SQLite). A SQLite file is only
    ever shared on one machine, so an advisory lock file beside it is enough; database servers
    need nothing.
    """
    if not url.startswith("sqlite:///"):
        yield
        return
    import fcntl
    import tempfile
    # one lock file per user for every SQLite store: initialisation takes a second, so sharing it
    # costs nothing, and nothing is written beside the store (nor left per store in /tmp)
    lock_path = Path(tempfile.gettempdir()) / f"reproduce-sqlite-init-{os.getuid()}.lock"
    with open(lock_path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _mlflow_client_and_experiment(profile: str):
    with sqlite_init_lock(tracking.tracking_uri()):
        c = tracking.client()
        return c, tracking.experiment_id(c, profile)


def _transient() -> tuple[type[BaseException], ...]:
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException
    return (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError, MlflowException,
            tracking.StoreError)


def _retrying(what: str, fn, attempts: int = 8):
    """Run fn, retrying transient store errors (two processes creating the same tables, SQLite
    locks past the busy timeout) with a jittered back-off instead of crashing the worker."""
    for i in range(attempts):
        try:
            return fn()
        except _transient() as e:
            if i == attempts - 1:
                raise
            wait = min(30.0, 0.5 * 2 ** i) * (0.5 + random.random())
            print(f"[search] {what}: {type(e).__name__}: {str(e)[:200]}; retrying in {wait:.1f}s",
                  file=sys.stderr)
            time.sleep(wait)


def make_storage(url: str, heartbeat: dict | None = None, on_failed=None):
    """An RDBStorage with heartbeats, retry of dead workers' trials and a SQLite busy timeout."""
    import optuna

    _quiet_optuna_warnings()
    if url.startswith("sqlite:///"):
        parent = Path(url[len("sqlite:///"):]).resolve().parent
        if not parent.is_dir():
            raise ConfigError(f"Optuna storage {url}: directory {parent} does not exist; create it or "
                              f"set OPTUNA_STORAGE to sqlite:///path/optuna.db or a database URL")
        engine_kwargs = {"connect_args": {"timeout": 60}}    # wait on locks, do not fail
    elif "://" not in url:
        raise ConfigError(f"Optuna storage {url!r} is not a database URL; use e.g. "
                          f"sqlite:///optuna.db or postgresql://user:pass@host/db")
    else:
        engine_kwargs = {"pool_pre_ping": True}
    hb = heartbeat or HEARTBEAT_DEFAULTS
    retry = optuna.storages.RetryFailedTrialCallback(max_retry=hb["max_retry"])

    def failed(study, trial) -> None:       # a trial whose worker stopped sending heartbeats
        retry(study, trial)
        if on_failed is not None:
            on_failed(study, trial)

    def build():
        try:
            with sqlite_init_lock(url):
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                                  heartbeat_interval=hb["interval"],
                                                  grace_period=hb["grace_period"],
                                                  failed_trial_callback=failed)
        except ImportError as e:
            raise ConfigError(f"Optuna storage {redact(url)}: database driver missing ({e}); for "
                              f"PostgreSQL: pip install psycopg2-binary") from None
    return _retrying(f"opening Optuna storage {redact(url)}", build)


def build_sampler(spec: SearchSpec, worker_index: int = 0, offset: int = 0):
    """The spec's sampler. Its seed is offset by the worker index (parallel workers must not draw
    the same points) and by the number of trials a resumed study already has (a resumed search
    must not replay the sequence it started with); a fresh single-worker study is reproducible."""
    import optuna

    opts = {k: v for k, v in spec.sampler.items() if k != "name"}
    if opts.get("seed") is not None:
        opts["seed"] = int(opts["seed"]) + worker_index + 7919 * offset
    name = spec.sampler["name"]
    if name == "qmc":
        opts.setdefault("warn_independent_sampling", False)
    return getattr(optuna.samplers, SAMPLERS[name])(**opts)


def build_pruner(spec: SearchSpec):
    import optuna
    opts = {k: v for k, v in spec.pruner.items() if k != "name"}
    return getattr(optuna.pruners, PRUNERS[spec.pruner["name"]])(**opts)


def open_study(spec: SearchSpec, storage, worker_index: int = 0, create: bool = True,
               claim_parent: bool = False):
    """(study, created): create the study, or load it when another worker (or run) already did.

    With `claim_parent`, a newly created study is marked as waiting for its MLflow parent run, so
    that workers starting at the same moment wait for this one to create it (see _parent_run)."""
    import optuna

    sampler, pruner = build_sampler(spec, worker_index), build_pruner(spec)
    if create:
        try:
            study = optuna.create_study(storage=storage, study_name=spec.study_name,
                                        directions=spec.directions, sampler=sampler, pruner=pruner)
            study.set_metric_names([o.metric for o in spec.objectives])
            for k, v in {"spec": spec.name, "spec_path": str(spec.path), "base": str(spec.base),
                         "variant": spec.variant or "", "profile": spec.profile,
                         "objectives": [f"{o.direction} {o.metric}" for o in spec.objectives],
                         "constraints": [c.describe() for c in spec.constraints],
                         "space": {p.name: p.describe() for p in spec.space},
                         "mlflow_tracking_uri": redact(tracking.tracking_uri()),
                         **({"mlflow_parent_pending": True} if claim_parent else {})}.items():
                study.set_user_attr(k, v)
            return study, True
        except optuna.exceptions.DuplicatedStudyError:
            pass
    try:
        study = optuna.load_study(study_name=spec.study_name, storage=storage, sampler=sampler,
                                  pruner=pruner)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise ConfigError(f"no study {spec.study_name!r} in the Optuna storage (studies there: "
                          f"{', '.join(names) or 'none'}); run `make search SEARCH={spec.name} "
                          f"PROFILE={spec.profile}` first, or pass --study-name") from None
    have = [d.name.lower() for d in study.directions]
    if have != spec.directions:
        raise ConfigError(f"study {spec.study_name!r} exists with directions {have}, but "
                          f"{spec.path} now declares {spec.directions}; start a new study with "
                          f"--study-name NAME (or delete the old one)")
    n = len(study.get_trials(deepcopy=False))
    if n:
        study.sampler = build_sampler(spec, worker_index, offset=n)
    return study, False


# ------------------------------------------------------------------------------- MLflow side

def _parent_run(c, exp_id: str, study, spec: SearchSpec, url: str, created: bool) -> str:
    """One MLflow parent run per study, shared by every worker: the creator of the study makes it
    and records its id in the study; others read it from there (or find it by tags)."""
    if not created:
        for _ in range(60):                      # the creator sets the id right after creating
            attrs = study.user_attrs
            if attrs.get("mlflow_parent_run_id") or not attrs.get("mlflow_parent_pending"):
                break
            time.sleep(0.5)
    run_id = study.user_attrs.get("mlflow_parent_run_id")
    if run_id:
        try:
            run = c.get_run(run_id)
            if run.info.experiment_id == exp_id and run.info.lifecycle_stage == "active":
                return run_id
        except Exception:  # noqa: BLE001 - not in this MLflow store (e.g. another tracking URI)
            pass
    found = c.search_runs([exp_id], f"tags.`optuna.study_name` = '{spec.study_name}' and "
                          f"tags.`optuna.storage` = '{redact(url)}' and tags.run_kind = 'search'",
                          order_by=["attributes.start_time ASC"], max_results=1)
    if found:
        run_id = found[0].info.run_id
    else:
        from .experiments import plan
        base_cfg = plan(spec.base, spec.profile, spec.fixed,
                        [spec.variant] if spec.variant else None)[0].cfg
        tags = {"run_kind": "search", "search": spec.name, "optuna.study_name": spec.study_name,
                "model": base_cfg.model.name, "dataset": base_cfg.data.dataset,
                "variant": f"search:{base_cfg.variant}",
                "optuna.storage": redact(url), "profile": spec.profile,
                "search.base": str(spec.base.stem), "search.variant": spec.variant or "",
                "git_commit": tracking.git_commit(),
                "mlflow.note.content": f"Optuna study {spec.study_name} ({spec.path.name}). "
                                      f"{spec.description}"}
        run_id = c.create_run(exp_id, run_name=f"search:{spec.study_name}", tags=tags).info.run_id
        params = {f"space.{p.name}": p.describe() for p in spec.space}
        params.update({"search.objectives": ", ".join(f"{o.direction} {o.metric}"
                                                      for o in spec.objectives),
                       "search.constraints": ", ".join(c_.describe() for c_ in spec.constraints),
                       "search.sampler": json.dumps(spec.sampler),
                       "search.pruner": json.dumps(spec.pruner),
                       **{f"fixed.{k}": v for k, v in flatten(spec.fixed).items()}})
        tracking.log_params(c, run_id, params)
    study.set_user_attr("mlflow_parent_run_id", run_id)
    study.set_user_attr("mlflow_parent_pending", False)
    return run_id


def _mark_stale_run(c_holder: dict):
    """failed_trial_callback part: the MLflow run of a trial whose worker died is closed too."""
    def mark(study, trial) -> None:
        c, run_id = c_holder.get("client"), trial.user_attrs.get("mlflow_run_id")
        if c is None or not run_id:
            return
        try:
            if c.get_run(run_id).info.status == "RUNNING":
                c.set_tag(run_id, "optuna.state", "FAIL")
                c.set_tag(run_id, "failure_reason", "the worker stopped sending heartbeats (died "
                          "or was killed); Optuna retries the trial's parameters as a new trial")
                c.set_terminated(run_id, "KILLED")
        except Exception as e:  # noqa: BLE001 - bookkeeping must not stop the search
            print(f"[search] could not close MLflow run {run_id}: {e}", file=sys.stderr)
    return mark


def _log_parent_progress(c, parent_id: str, study, spec: SearchSpec) -> None:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    count = {s: sum(t.state == s for t in trials) for s in TrialState}
    metrics = {"trials/complete": count[TrialState.COMPLETE],
               "trials/pruned": count[TrialState.PRUNED], "trials/failed": count[TrialState.FAIL]}
    done = [t for t in trials if t.state == TrialState.COMPLETE and is_feasible(t, spec)]
    if done and not spec.multi_objective:
        best = best_trial(study, spec, trials=done)
        metrics[f"best/{spec.objectives[0].metric}"] = best.values[0]
    elif done:
        metrics["pareto/size"] = len(pareto_trials(spec, done))
    step = max((t.number for t in trials), default=0)
    try:
        tracking.log_metrics(c, parent_id, metrics, step=step)
        c.set_tag(parent_id, "optuna.n_trials", str(spec.trials))
    except Exception as e:  # noqa: BLE001
        print(f"[search] could not log progress to the parent run: {e}", file=sys.stderr)


# ------------------------------------------------------------------------------- the objective

def sample(trial, space: list[Param]) -> dict[str, Any]:
    """Suggest every (active) parameter of the space, in order."""
    params: dict[str, Any] = {}
    for p in space:
        if any(params.get(k) not in vals for k, vals in p.when.items()):
            continue
        if p.type == "categorical":
            params[p.name] = trial.suggest_categorical(p.name, p.choices)
        elif p.type == "int":
            params[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1),
                                               log=p.log)
        else:
            params[p.name] = trial.suggest_float(p.name, float(p.low), float(p.high), step=p.step,
                                                 log=p.log)
    return params


def _marker_run(c, exp_id: str, parent_id: str, tags: dict, name: str, status: str,
                params: dict | None = None, metrics: dict | None = None,
                history: list[tuple[int, float]] | None = None) -> str:
    """A nested run for a trial that trained nothing (reused config, invalid config). It has no
    `config_hash` or `figures` tag, so figure selection and run reuse never pick it."""
    run_id = c.create_run(exp_id, run_name=name, tags={**tags, "mlflow.parentRunId": parent_id}).info.run_id
    if params:
        tracking.log_params(c, run_id, params)
    for step, value in history or []:
        tracking.log_metrics(c, run_id, {"val/acc": value}, step=step)
    if metrics:
        tracking.log_metrics(c, run_id, metrics, step=max([s for s, _ in history or []] or [0]))
    c.set_terminated(run_id, status)
    return run_id


def _frozen(trial):
    """The stored state of a live trial (system attributes, constraints)."""
    return next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)


class TrialObjective:
    """The function Optuna calls once per trial."""

    def __init__(self, spec: SearchSpec, c, exp_id: str, parent_id: str, url: str,
                 force: bool = False, progress: bool = True):
        self.spec, self.c, self.exp_id, self.parent_id = spec, c, exp_id, parent_id
        self.url, self.force, self.progress = url, force, progress
        self.last_trial_number: int | None = None

    def __call__(self, trial):
        import optuna
        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except Exception as e:
            if not trial.user_attrs.get("fail_reason"):
                trial.set_user_attr("fail_reason", f"{type(e).__name__}: {e}"[:2000])
            raise

    def _run(self, trial):
        import optuna
        from optuna.trial import TrialState

        from .experiments import plan
        from .runner import RunStopped, train_tracked

        spec, c = self.spec, self.c
        self.last_trial_number = trial.number
        inherited = trial.user_attrs                  # retries inherit the failed trial's attributes
        for key in TRIAL_ATTRS:
            if inherited.get(key) is not None:
                trial.set_user_attr(key, None)
        # Several workers may ask for a trial at once when one slot is left: the later one stands down.
        ahead = [t for t in trial.study.get_trials(deepcopy=False, states=(
            TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING))
            if t.number < trial.number]
        if len(ahead) >= spec.trials:
            trial.set_user_attr("surplus", True)
            raise _TrialFailed(f"surplus: the study already has {spec.trials} trials; this worker "
                               f"asked for one at the same moment as another and stands down")
        params = sample(trial, spec.space)
        tags = {"optuna.study_name": spec.study_name, "optuna.trial_number": trial.number,
                "optuna.storage": redact(self.url), "optuna.params": json.dumps(params),
                "search": spec.name, "search.base": spec.base.stem}
        retry_of = _frozen(trial).system_attrs.get("failed_trial")
        if retry_of is not None:
            tags["optuna.retry_of"] = retry_of
        run_name = f"{spec.study_name}-trial-{trial.number}"
        try:
            pr = plan(spec.base, spec.profile, _deep_merge(spec.fixed, unflatten(params)),
                      [spec.variant] if spec.variant else None)[0]
        except ConfigError as e:
            reason = f"invalid configuration: {e}"
            trial.set_user_attr("fail_reason", reason[:2000])
            trial.set_user_attr("mlflow_run_id", _marker_run(
                c, self.exp_id, self.parent_id, {**tags, "optuna.state": "FAIL",
                                                 "failure_reason": reason[:5000]},
                run_name, "FAILED", params=params))
            raise _TrialFailed(reason) from None
        pr = replace(pr, experiment=spec.name, figures=[spec.name])
        trial.set_user_attr("config_hash", pr.hash)
        single = not spec.multi_objective
        first = spec.objectives[0].metric
        last: dict = {}

        existing = None if self.force else tracking.find_finished(c, self.exp_id, pr.hash)
        if existing is not None:                     # identical config already trained: reuse it
            metrics = with_derived(existing.data.metrics)
            history = [(m.step, m.value) for m in sorted(
                c.get_metric_history(existing.info.run_id, first), key=lambda m: m.step)
                if m.step > 0] if single else []
            for step, value in history:
                trial.report(value, step)
            values, feasible = self._finish(trial, metrics)
            trial.set_user_attr("reused_run_id", existing.info.run_id)
            obj_metrics = {f"objective/{o.metric}": v for o, v in zip(spec.objectives, values)}
            trial.set_user_attr("mlflow_run_id", _marker_run(
                c, self.exp_id, self.parent_id,
                {**tags, "optuna.state": "COMPLETE", "state": "reused",
                 "reused_run_id": existing.info.run_id, "reused_config_hash": pr.hash,
                 "model": pr.cfg.model.name, "dataset": pr.cfg.data.dataset,
                 "profile": spec.profile, "variant": pr.cfg.variant, "seed": str(pr.cfg.seed),
                 "mlflow.note.content": f"Identical configuration (hash {pr.hash}) already "
                                        f"trained in run {existing.info.run_id}; its results are "
                                        f"reused, nothing was retrained."},
                run_name + " (reused)", "FINISHED", params=flatten(_cfg_dict(pr.cfg)),
                metrics={**summary_metrics(metrics, spec), **obj_metrics}, history=history))
            print(f"[search] trial {trial.number}: configuration {pr.hash} already trained in run "
                  f"{existing.info.run_id}; reused")
            return values if spec.multi_objective else values[0]

        run_ids: list[str] = []

        def on_start(run_id: str) -> None:
            run_ids.append(run_id)
            trial.set_user_attr("mlflow_run_id", run_id)

        def epoch_hook(step: int, stats: dict) -> None:
            if step == 0:
                return
            last.clear()
            last.update(with_derived(stats))
            if not single or first not in last:
                return
            value = last[first]
            trial.report(value, step)
            c.log_metric(run_ids[0], "optuna/intermediate_value", value, step=step)
            if step < pr.cfg.train.epochs and trial.should_prune():    # never after the last epoch
                raise RunStopped(f"pruned by the {spec.pruner['name']} pruner after epoch {step} "
                                 f"({first} = {value:.4g})")

        try:
            train_tracked(c, self.exp_id, pr, self.progress, parent_run_id=self.parent_id,
                          extra_tags=tags, epoch_hook=epoch_hook, on_start=on_start,
                          run_name=run_name)
        except RunStopped as e:
            if e.run_id:
                c.set_tag(e.run_id, "optuna.state", "PRUNED")
            trial.set_user_attr("stop_reason", e.reason)
            if last:
                trial.set_user_attr("metrics", summary_metrics(last, spec))
                try:
                    self._constrain(trial, last)
                except KeyError:
                    pass
            raise optuna.TrialPruned(e.reason) from None
        except KeyboardInterrupt:
            self._tag(trial, "optuna.state", "FAIL")
            trial.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number},
                                      skip_if_exists=False)
            print(f"\n[search] interrupted: trial {trial.number}'s parameters are queued and run "
                  f"first when the search resumes (same command)", file=sys.stderr)
            raise
        except Exception as e:
            self._tag(trial, "optuna.state", "FAIL")
            trial.set_user_attr("fail_reason", f"{type(e).__name__}: {e}"[:2000])
            raise
        try:
            values, feasible = self._finish(trial, last)
        except Exception as e:
            self._tag(trial, "optuna.state", "FAIL")
            trial.set_user_attr("fail_reason", f"{type(e).__name__}: {e}"[:2000])
            raise
        run_id = run_ids[0]
        tracking.log_metrics(c, run_id, {f"objective/{o.metric}": v
                                         for o, v in zip(spec.objectives, values)},
                             step=pr.cfg.train.epochs)
        c.set_tag(run_id, "optuna.state", "COMPLETE")
        c.set_tag(run_id, "optuna.feasible", str(feasible).lower())
        return values if spec.multi_objective else values[0]

    def _finish(self, trial, metrics: dict) -> tuple[list[float], bool]:
        spec = self.spec
        if not metrics:
            raise RuntimeError("the run reported no epoch metrics")
        values = [metric_value(metrics, o.metric) for o in spec.objectives]
        bad = [o.metric for o, v in zip(spec.objectives, values) if not math.isfinite(v)]
        if bad:
            raise FloatingPointError(f"objective {bad[0]} is not finite")
        trial.set_user_attr("metrics", summary_metrics(metrics, spec))
        feasible = self._constrain(trial, metrics)
        trial.set_user_attr("feasible", feasible)
        return values, feasible

    def _constrain(self, trial, metrics: dict) -> bool:
        have = _frozen(trial).constraints
        feasible = True
        for cn in self.spec.constraints:
            for key, value in cn.values(metrics).items():
                if key not in have:              # a retried trial may carry the old values
                    trial.set_constraint(key, value)
                feasible &= value <= 0
        return feasible

    def _tag(self, trial, key: str, value: str) -> None:
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            try:
                self.c.set_tag(run_id, key, value)
            except Exception:  # noqa: BLE001
                pass


def _cfg_dict(cfg) -> dict:
    from .config import to_dict
    return to_dict(cfg)


# ------------------------------------------------------------------------------ the worker

def _counts(study) -> dict:
    from optuna.trial import TrialState
    trials = study.get_trials(deepcopy=False)
    return {s: sum(t.state == s for t in trials) for s in TrialState}


def work(spec: SearchSpec, study, objective, c, parent_id: str, poll_s: float | None = None,
         max_consecutive_failures: int = 3) -> None:
    """Run trials until the study has `spec.trials` finished (complete or pruned) trials.

    Before each trial: fail trials whose worker died (their parameters are retried), then stop if
    enough trials are finished, or wait while the remaining ones run in other workers (to take
    over if one of them dies). So several workers on one storage end with exactly N finished trials.
    """
    import optuna
    from optuna.trial import TrialState

    max_poll = poll_s or min(10.0, float(spec.heartbeat["interval"]))
    poll, failures, waiting_said = 1.0, 0, False

    def after_trial(study_, frozen) -> None:
        _log_parent_progress(c, parent_id, study_, spec)

    while True:
        def check():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                optuna.storages.fail_stale_trials(study)
            return _counts(study)
        n = _retrying("reading the study", check)
        finished = n[TrialState.COMPLETE] + n[TrialState.PRUNED]
        if finished >= spec.trials:
            return
        if finished + n[TrialState.RUNNING] + n[TrialState.WAITING] >= spec.trials and \
                n[TrialState.WAITING] == 0:
            if not waiting_said:
                print(f"[search] {finished}/{spec.trials} trials finished, {n[TrialState.RUNNING]} "
                      f"running in other workers: waiting for them (to take over if one dies)")
                waiting_said = True
            time.sleep(poll)
            poll = min(max_poll, poll * 1.5)
            continue
        waiting_said, poll = False, 1.0
        objective.last_trial_number = None
        _retrying("running a trial", lambda: study.optimize(
            objective, n_trials=1, catch=(Exception,), callbacks=[after_trial]))
        mine = [t for t in study.get_trials(deepcopy=False) if t.number == objective.last_trial_number]
        failed = [t for t in mine if t.state == TrialState.FAIL and not t.user_attrs.get("surplus")]
        failures = failures + 1 if failed else 0
        if failures >= max_consecutive_failures:
            reason = failed[-1].user_attrs.get("fail_reason") or "see the log above"
            raise SearchError(f"{failures} trials in a row failed in this worker; the last: {reason}")


def _mark_parent(c, parent_id: str, status: str) -> None:
    try:
        c.update_run(parent_id, status=status)
    except Exception:  # noqa: BLE001
        pass


def run_search(spec: SearchSpec, url: str | None = None, worker_index: int = 0, force: bool = False,
               progress: bool = True, workers: int = 1, extra_args: list[str] | None = None) -> dict:
    """Create or resume the study and run trials (in this process, or in `workers` subprocesses)."""
    url = storage_url(url)
    holder: dict = {}
    storage = make_storage(url, spec.heartbeat, on_failed=_mark_stale_run(holder))
    study, created = _retrying("opening the study",
                               lambda: open_study(spec, storage, worker_index, claim_parent=True))
    c, exp_id = _retrying("opening the MLflow store and experiment",
                          lambda: _mlflow_client_and_experiment(spec.profile))
    holder["client"] = c
    parent_id = _retrying("finding the MLflow parent run",
                          lambda: _parent_run(c, exp_id, study, spec, url, created))
    n = _counts(study)
    from optuna.trial import TrialState
    finished = n[TrialState.COMPLETE] + n[TrialState.PRUNED]
    print(f"[search] study {spec.study_name} in {redact(url)}: {finished}/{spec.trials} trials "
          f"finished{' (new study)' if created else ''}; MLflow parent run {parent_id}")
    if finished < spec.trials:
        _mark_parent(c, parent_id, "RUNNING")
    if workers > 1:
        procs = []
        for i in range(workers):
            cmd = [sys.executable, "-m", "reproduce", "search", str(spec.path), "--profile",
                   spec.profile, "--trials", str(spec.trials), "--storage", url, "--study-name",
                   spec.study_name, "--worker-index", str(worker_index + i), "--spawned", *(extra_args or [])]
            procs.append(subprocess.Popen(cmd))
        try:
            codes = [p.wait() for p in procs]
        except KeyboardInterrupt:
            codes = [p.wait() for p in procs]
            raise
        if any(codes):
            raise SearchError(f"{sum(1 for x in codes if x)} of {workers} workers failed (exit codes "
                              f"{codes}); rerun the same command to resume the study")
    else:
        objective = TrialObjective(spec, c, exp_id, parent_id, url, force, progress)
        work(spec, study, objective, c, parent_id)
    _log_parent_progress(c, parent_id, study, spec)
    n = _counts(study)
    if n[TrialState.COMPLETE] + n[TrialState.PRUNED] >= spec.trials:
        _mark_parent(c, parent_id, "FINISHED")
    return {"study": study, "parent_run_id": parent_id, "counts": n, "url": url}


# ----------------------------------------------------------------------------- best / Pareto

def _dominates(a: list[float], b: list[float], directions: list[str]) -> bool:
    better = False
    for x, y, d in zip(a, b, directions):
        if d == "minimize":
            x, y = -x, -y
        if x < y:
            return False
        better |= x > y
    return better


def pareto_trials(spec: SearchSpec, trials: list) -> list:
    """Non-dominated complete trials, best first objective first."""
    front = [t for t in trials if not any(_dominates(o.values, t.values, spec.directions)
                                          for o in trials if o is not t)]
    sign = -1 if spec.directions[0] == "maximize" else 1
    return sorted(front, key=lambda t: (sign * t.values[0], t.number))


def complete_trials(study, spec: SearchSpec, feasible_only: bool = True) -> list:
    from optuna.trial import TrialState
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [t for t in done if is_feasible(t, spec)] if feasible_only else done


def best_trial(study, spec: SearchSpec, trials: list | None = None):
    trials = complete_trials(study, spec) if trials is None else trials
    if not trials:
        return None
    sign = -1 if spec.directions[0] == "maximize" else 1
    return min(trials, key=lambda t: (sign * t.values[0], t.number))


def load_study_for(spec: SearchSpec, url: str | None = None):
    storage = make_storage(storage_url(url), spec.heartbeat)
    study, _ = open_study(spec, storage, create=False)
    return study


def choose_trial(study, spec: SearchSpec, trial_number: int | None = None,
                 pareto_index: int | None = None, out=print):
    """The trial search-best writes: an explicit one, the best feasible, or a Pareto point."""
    from optuna.trial import TrialState

    if trial_number is not None:
        match = [t for t in study.get_trials(deepcopy=False) if t.number == trial_number]
        if not match or match[0].state != TrialState.COMPLETE:
            raise ConfigError(f"study {spec.study_name}: trial {trial_number} is not a complete trial")
        return match[0]
    feasible = complete_trials(study, spec)
    all_done = complete_trials(study, spec, feasible_only=False)
    if not feasible:
        hint = (f" ({len(all_done)} complete trials violate the constraints "
                f"{'; '.join(c.describe() for c in spec.constraints)}; pick one with --trial N)"
                if all_done else "")
        raise ConfigError(f"study {spec.study_name} has no complete feasible trial yet{hint}; run "
                          f"more trials with `make search SEARCH={spec.name} PROFILE={spec.profile}`")
    if not spec.multi_objective:
        if pareto_index is not None:
            out("note: --pareto-index applies to multi-objective searches; taking the best trial")
        return best_trial(study, spec, feasible)
    front = pareto_trials(spec, feasible)
    out(f"Pareto front of {spec.study_name} ({len(front)} of {len(feasible)} feasible complete "
        f"trials):")
    header = "  ".join(f"{o.metric:>16s}" for o in spec.objectives)
    out(f"  {'index':>5s}  {'trial':>5s}  {header}  params")
    for i, t in enumerate(front):
        vals = "  ".join(f"{v:16.4g}" for v in t.values)
        ps = ", ".join(f"{k}={_fmt(v)}" for k, v in t.params.items())
        out(f"  {i:5d}  {t.number:5d}  {vals}  {ps}")
    index = 0 if pareto_index is None else pareto_index
    if not 0 <= index < len(front):
        raise ConfigError(f"--pareto-index {index}: choose 0 to {len(front) - 1}")
    return front[index]


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_best(spec: SearchSpec, study, trial, out_path: Path | None = None) -> Path:
    """The trial as a normal experiment file that `python -m reproduce run` trains (or reuses)."""
    from .experiments import EXPERIMENTS_DIR, load_yaml, plan

    base_exp = load_yaml(spec.base)
    runs = base_exp.get("runs") or [{"variant": "grow"}]
    run = next((r for r in runs if str(r.get("variant")) == spec.variant), runs[0]) \
        if spec.variant else runs[0]
    run = copy.deepcopy(run)
    params = unflatten(dict(trial.params))
    # A trial resolved: defaults <- profiles.yaml <- base <- base profile <- run <- run profile
    # <- (spec set <- spec profile set <- --set <- params). Folding the last group into the run's
    # layers reproduces the trial's exact config (same hash) for the searched profile.
    common = _deep_merge(_deep_merge(spec.base_set, spec.cli_set), params)
    new_run: dict = {"variant": run.get("variant", "grow"),
                     "config": _deep_merge(run.get("config") or {}, common)}
    run_profiles = copy.deepcopy(run.get("profiles") or {})
    for p in sorted(set(run_profiles) | {k for k, v in spec.profile_sets.items() if v}):
        body = run_profiles.get(p) or {}
        layer = _deep_merge(body.get("config") or {}, spec.profile_sets.get(p, {}))
        if layer:
            # keys this profile layer sets take the value the trial ended with; other keys keep
            # the run config's value (which already carries the trial's)
            full = flatten(_deep_merge(_deep_merge(_deep_merge(layer, spec.base_set),
                                                   spec.profile_sets.get(p, {})),
                                       _deep_merge(spec.cli_set, params)))
            body["config"] = unflatten({k: full[k] for k in flatten(layer)})
        run_profiles[p] = body
    if run_profiles:
        new_run["profiles"] = run_profiles
    values = ", ".join(f"{o.metric} = {_fmt(v)}" for o, v in zip(spec.objectives, trial.values))
    name = f"{spec.name}-best"
    doc = {
        "name": name,
        "description": (f"Trial {trial.number} of Optuna study '{spec.study_name}' "
                        f"(spec {spec.path.name}, base {spec.base.stem}, profile {spec.profile}; "
                        f"{values}; MLflow run {trial.user_attrs.get('mlflow_run_id')}). "
                        f"Searched: {', '.join(f'{k} = {_fmt(v)}' for k, v in trial.params.items())}. "
                        f"Written by `python -m reproduce search-best` on "
                        f"{time.strftime('%Y-%m-%d %H:%M')}."),
        "figures": [name],
    }
    for key in ("base", "profiles"):
        if base_exp.get(key):
            doc[key] = copy.deepcopy(base_exp[key])
    doc["runs"] = [new_run]
    out_path = Path(out_path) if out_path else EXPERIMENTS_DIR / f"{name}.yaml"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# Generated from Optuna study {spec.study_name} (trial {trial.number}) by\n"
              f"#   python -m reproduce search-best {spec_ref(spec)} --profile {spec.profile}\n"
              f"# A normal experiment file: python -m reproduce run {out_path}\n")
    out_path.write_text(header + yaml.safe_dump(doc, sort_keys=False, width=100))
    try:
        h = plan(out_path, spec.profile)[0].hash
    except ConfigError as e:
        print(f"note: {out_path} does not resolve where it is ({e}); experiment files belong in "
              f"experiments/, beside profiles.yaml")
        return out_path
    want = trial.user_attrs.get("config_hash")
    if want and h != want:
        print(f"note: {out_path.name} resolves to config {h}, the trial ran {want} "
              f"(profiles differ from the search's); it will be trained anew")
    elif want:
        print(f"{out_path.name} resolves to the trial's exact configuration (hash {h}): running it "
              f"with --profile {spec.profile} reuses the trial's tracked run")
    return out_path


# ----------------------------------------------------------------------------------- the CLI

def _common(p, with_trials: bool = False) -> None:
    p.add_argument("spec", help="search spec name (search-resnet20-budget) or path to its YAML")
    p.add_argument("--profile", default=os.environ.get("PROFILE", "smoke"))
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL (default: $OPTUNA_STORAGE, else sqlite:///optuna.db at "
                        "the repository root)")
    p.add_argument("--study-name", default=None, help="default: <spec name>-<profile>")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="fixed override for every trial, e.g. --set train.threads=1")
    if with_trials:
        p.add_argument("--trials", type=int, default=None,
                       help="finished trials the study should end with (default: the spec's)")


def cmd_search(args) -> int:
    from optuna.trial import TrialState

    spec = load_spec(args.spec, args.profile, args.trials, parse_overrides(args.overrides),
                     args.study_name)
    if args.workers < 1:
        raise ConfigError("--workers must be >= 1")
    extra = [x for s in args.overrides for x in ("--set", s)]
    extra += ["--force"] if args.force else []
    extra += ["--quiet"] if args.quiet or args.workers > 1 else []
    old_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):            # a polite stop: the running trial is queued again
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        res = run_search(spec, args.storage, args.worker_index, args.force, not args.quiet,
                         args.workers, extra)
    except KeyboardInterrupt:
        print(f"[search] stopped; resume with the same command (study {spec.study_name})",
              file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, old_term)
    if args.spawned:
        return 0                            # a spawned worker: the coordinator prints the summary
    study, n = res["study"], res["counts"]
    print(f"\nstudy {spec.study_name}: {n[TrialState.COMPLETE]} complete, {n[TrialState.PRUNED]} "
          f"pruned, {n[TrialState.FAIL]} failed (storage {redact(res['url'])})")
    if spec.multi_objective:
        front = pareto_trials(spec, complete_trials(study, spec))
        print(f"Pareto front: trials {', '.join(str(t.number) for t in front) or 'none yet'}")
    else:
        best = best_trial(study, spec)
        if best is not None:
            print(f"best trial {best.number}: {spec.objectives[0].metric} = {best.values[0]:.4g}  "
                  + ", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items()))
        else:
            print("no complete trial satisfies the constraints yet")
    make_vars = f"SEARCH={spec_ref(spec)} PROFILE={spec.profile}"
    print(f"next: make optuna-dashboard   (OPTUNA_STORAGE={redact(res['url'])})\n"
          f"      make search-best {make_vars}\n"
          f"      make figure-pareto {make_vars}\n"
          f"      MLflow parent run {res['parent_run_id']} (make mlflow-ui)")
    return 0


def cmd_search_best(args) -> int:
    spec = load_spec(args.spec, args.profile, None, parse_overrides(args.overrides), args.study_name)
    study = load_study_for(spec, args.storage)
    trial = choose_trial(study, spec, args.trial, args.pareto_index)
    path = write_best(spec, study, trial, Path(args.out) if args.out else None)
    values = ", ".join(f"{o.metric} = {_fmt(v)}" for o, v in zip(spec.objectives, trial.values))
    print(f"trial {trial.number} ({values}): "
          + ", ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items()))
    from .experiments import EXPERIMENTS_DIR
    how = (f"make run EXP={path.stem} PROFILE={spec.profile}"
           if path.resolve().parent == EXPERIMENTS_DIR.resolve()
           else f"python -m reproduce run {path} --profile {spec.profile}")
    print(f"wrote {path}\nrun it: {how}")
    return 0


def cmd_pareto(args) -> int:
    from analysis.search_plots import draw_search

    spec = load_spec(args.spec, args.profile, None, parse_overrides(args.overrides), args.study_name)
    study = load_study_for(spec, args.storage)
    for path in draw_search(spec, study, Path(args.out) if args.out else None):
        print(f"wrote {path}")
    return 0


def register_cli(sub) -> None:
    """Add the search sub-commands to the CLI."""
    import argparse
    p = sub.add_parser("search", help="run (or resume) an Optuna search of a search spec")
    _common(p, with_trials=True)
    p.add_argument("--workers", type=int, default=1,
                   help="start this many local worker processes on the study (default 1: this one)")
    p.add_argument("--worker-index", type=int, default=0,
                   help="offsets the sampler seed so that workers draw different points; give each "
                        "machine's worker its own index")
    p.add_argument("--force", action="store_true", default=os.environ.get("FORCE") == "1",
                   help="retrain trials whose exact configuration is already tracked")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--spawned", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("search-best", help="write a search's best trial (or a Pareto point) as a "
                                           "runnable experiment file")
    _common(p)
    p.add_argument("--pareto-index", type=int, default=None,
                   help="multi-objective: which Pareto point (0 = most accurate; the table lists them)")
    p.add_argument("--trial", type=int, default=None, help="take this trial number instead")
    p.add_argument("--out", default=None, help="default: experiments/<spec name>-best.yaml")
    p.set_defaults(func=cmd_search_best)

    p = sub.add_parser("pareto", help="accuracy vs MACs of every trial, Pareto front, importances")
    _common(p)
    p.add_argument("--out", default=None, help="output directory (default: figures/)")
    p.set_defaults(func=cmd_pareto)
