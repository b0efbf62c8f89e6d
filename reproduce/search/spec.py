"""The search spec (experiments/search-*.yaml): its schema, and validation before anything runs.

Every error names the spec file, the key and a fix; `load_spec` also resolves the base experiment
with the fixed overrides and with every boundary value of the space, so a spec that loads only
samples valid run configs.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

import optuna
import yaml

from ..config import ConfigError, RunConfig, choices_of, flatten, unflatten
from ..contract import DERIVED_METRICS, METRIC_PREFIXES, RUN_METRICS
from ..experiments import EXPERIMENT_KEYS, EXPERIMENTS_DIR, check_keys, experiment_path, find_yaml, \
    load_yaml, plan

SPEC_KEYS = {"name", "description", "base", "variant", "set", "objectives", "constraints", "space",
             "sampler", "pruner", "trials", "study_name", "heartbeat", "profiles"}
SPEC_PROFILE_KEYS = {"description", "trials", "set", "sampler", "pruner"}
PARAM_KEYS = {"float": {"type", "low", "high", "log", "step", "when"},
              "int": {"type", "low", "high", "log", "step", "when"},
              "categorical": {"type", "choices", "when"}}
HEARTBEAT_DEFAULTS = {"interval": 30, "grace_period": 120, "max_retry": 2}

SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "nsga2": "NSGAIISampler",
            "nsga3": "NSGAIIISampler", "cmaes": "CmaEsSampler", "gp": "GPSampler",
            "qmc": "QMCSampler"}
SINGLE_OBJECTIVE_SAMPLERS = {"cmaes"}
PRUNERS = {"median": "MedianPruner", "percentile": "PercentilePruner",
           "successive_halving": "SuccessiveHalvingPruner", "hyperband": "HyperbandPruner",
           "threshold": "ThresholdPruner", "none": "NopPruner"}


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

    @property
    def only(self) -> list[str] | None:
        """The `only` argument of `experiments.plan` that selects the base run."""
        return [self.variant] if self.variant else None


def metric_value(metrics: dict, name: str) -> float:
    if name not in metrics:
        raise KeyError(f"the run has no metric {name!r} (it has {', '.join(sorted(metrics)[:12])}, ...)")
    return float(metrics[name])


def spec_path(name_or_path: str) -> Path:
    return find_yaml(name_or_path, "search spec", accept=is_spec)


def spec_ref(spec: SearchSpec) -> str:
    """How to name the spec on the command line: its name in experiments/, else its path."""
    return spec.path.stem if spec.path.resolve().parent == EXPERIMENTS_DIR.resolve() \
        else str(spec.path)


def is_spec(path: Path) -> bool:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "space" in data


def deep_merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in (b or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# ------------------------------------------------------------------------------ validation

def _nested(where: str, value: Any) -> dict:
    """A `set` block, nested or with dotted keys, as a nested dict."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of config keys to values, got {value!r}")
    return unflatten(flatten(value))


def _check_mapping(where: str, data: Any, allowed: set[str]) -> None:
    """`experiments.check_keys` for a value that may not be a mapping at all."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    check_keys(where, data, allowed)


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
    check_keys(where, body, PARAM_KEYS[kind])
    try:
        typ, meta = _field(name)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    when = {}
    for key, vals in (body.get("when") or {}).items():
        when[str(key)] = list(vals) if isinstance(vals, (list, tuple)) else [vals]
    if kind == "categorical":
        return Param(name, kind, choices=_choices(where, body.get("choices")), when=when)
    if typ not in (int, float):
        options = choices_of(meta)
        hint = f"; use type: categorical with choices from {', '.join(options)}" if options else \
            "; use type: categorical"
        raise ConfigError(f"{where}: {name} is a {getattr(typ, '__name__', typ)} field, not a number"
                          f"{hint}")
    if kind == "float" and typ is int:
        raise ConfigError(f"{where}: {name} is an integer field; use type: int")
    return Param(name, kind, *_range(where, kind, body), when=when)


def _choices(where: str, choices: Any) -> list:
    if not isinstance(choices, list) or not choices:
        raise ConfigError(f"{where}: choices must be a non-empty list, e.g. choices: [a, b]")
    for c in choices:
        if not (c is None or isinstance(c, (bool, int, float, str))):
            raise ConfigError(f"{where}: choice {c!r} is not a scalar (Optuna categoricals are "
                              f"None, bool, int, float or str)")
    if len(set(map(repr, choices))) != len(choices):
        raise ConfigError(f"{where}: choices contain duplicates: {choices}")
    return choices


def _range(where: str, kind: str, body: dict) -> tuple:
    """(low, high, log, step) of a float or int parameter."""
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
    return low, high, log, step


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
    check_keys(f"{where} ({what} {name})", body, {"name", *accepted})
    return dict(body)


# ------------------------------------------------------------------------ the parts of a spec

def _read(path: Path) -> dict:
    data = load_yaml(path)
    if "space" not in data and set(data) <= EXPERIMENT_KEYS:
        raise ConfigError(f"{path} is an experiment file, not a search spec (it has no `space`); "
                          f"run it with `python -m reproduce run {path}`")
    check_keys(str(path), data, SPEC_KEYS)
    for key in ("base", "objectives", "space"):
        if key not in data:
            raise ConfigError(f"{path}: missing required key {key!r} (a search spec needs base, "
                              f"objectives and space; see docs/SEARCH.md)")
    return data


def _profiles(path: Path, data: dict) -> dict:
    profiles = data.get("profiles") or {}
    if not isinstance(profiles, dict):
        raise ConfigError(f"{path}: profiles: expected a mapping of profile name to settings")
    for pname, body in profiles.items():
        _check_mapping(f"{path}: profiles.{pname}", body or {}, SPEC_PROFILE_KEYS)
    return profiles


def _base(path: Path, ref: Any) -> Path:
    """The base experiment, relative to the spec's directory first."""
    ref = str(ref)
    local = path.parent / (ref if ref.endswith((".yaml", ".yml")) else f"{ref}.yaml")
    return local if local.exists() and local.resolve() != path.resolve() else experiment_path(ref)


def _objectives(path: Path, raw: Any) -> list[Objective]:
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{path}: objectives: expected a list like [{{metric: val/acc, direction: "
                          f"maximize}}]")
    objectives = []
    for i, o in enumerate(raw):
        where = f"{path}: objectives[{i}]"
        _check_mapping(where, o, {"metric", "direction"})
        metric = _check_metric(f"{where}.metric", o.get("metric"))
        direction = o.get("direction", "maximize")
        if direction not in ("maximize", "minimize"):
            raise ConfigError(f"{where}.direction: expected maximize or minimize, got {direction!r}")
        objectives.append(Objective(metric, direction))
    if len({o.metric for o in objectives}) != len(objectives):
        raise ConfigError(f"{path}: objectives: the same metric appears twice")
    return objectives


def _constraints(path: Path, raw: Any) -> list[Constraint]:
    constraints = []
    for i, c in enumerate(raw or []):
        where = f"{path}: constraints[{i}]"
        _check_mapping(where, c, {"metric", "max", "min"})
        metric = _check_metric(f"{where}.metric", c.get("metric"))
        if "max" not in c and "min" not in c:
            raise ConfigError(f"{where}: give max and/or min, e.g. {{metric: budget/usage, max: 0.55}}")
        lo = _number(f"{where}.min", c["min"]) if "min" in c else None
        hi = _number(f"{where}.max", c["max"]) if "max" in c else None
        if lo is not None and hi is not None and lo > hi:
            raise ConfigError(f"{where}: min ({lo}) is larger than max ({hi})")
        constraints.append(Constraint(metric, hi, lo))
    return constraints


def _space(path: Path, raw: Any) -> list[Param]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: space: expected a mapping of config keys to distributions, e.g. "
                          f"budget.lambda_base: {{type: float, low: 0.01, high: 0.3, log: true}}")
    space: list[Param] = []
    for key, body in raw.items():
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
    return space


def _check_space_values(path: Path, space: list[Param], base: Path, profile: str, fixed: dict,
                        only: list[str] | None) -> None:
    """Every boundary and choice must resolve to a valid run config."""
    for param in space:
        values = param.choices if param.type == "categorical" else [param.low, param.high]
        for v in values:
            try:
                plan(base, profile, deep_merge(fixed, unflatten({param.name: v})), only)
            except ConfigError as e:
                raise ConfigError(f"{path}: space.{param.name}: value {v!r} is not valid for this "
                                  f"field ({e}). Narrow the range or fix the choices.") from None


def _sampler_and_pruner(path: Path, data: dict, own: dict, n_objectives: int) -> tuple[dict, dict]:
    sampler = _options_of(f"{path}: sampler", own.get("sampler", data.get("sampler")), SAMPLERS,
                          optuna.samplers, "sampler", "tpe")
    pruner = _options_of(f"{path}: pruner", own.get("pruner", data.get("pruner")), PRUNERS,
                         optuna.pruners, "pruner", "none")
    if n_objectives > 1:
        if sampler["name"] in SINGLE_OBJECTIVE_SAMPLERS:
            raise ConfigError(f"{path}: sampler {sampler['name']} handles one objective only; use "
                              f"nsga2, tpe or random for {n_objectives} objectives")
        if pruner["name"] != "none":
            raise ConfigError(f"{path}: pruner {pruner['name']}: Optuna cannot prune "
                              f"multi-objective trials; use pruner: {{name: none}} or one objective")
    if sampler["name"] == "cmaes":
        try:
            import cmaes  # noqa: F401 - an optional package: only probe whether it is installed
        except ImportError:
            raise ConfigError(f"{path}: sampler cmaes needs the `cmaes` package (pip install "
                              f"cmaes), or choose tpe") from None
    return sampler, pruner


def _trials(path: Path, data: dict, own: dict, trials: int | None) -> int:
    n = trials if trials is not None else own.get("trials", data.get("trials", 20))
    n = _number(f"{path}: trials", n, integer=True)
    if n < 1:
        raise ConfigError(f"{path}: trials must be >= 1, got {n}")
    return int(n)


def _heartbeat(path: Path, raw: Any) -> dict:
    raw = raw or {}
    _check_mapping(f"{path}: heartbeat", raw, set(HEARTBEAT_DEFAULTS))
    heartbeat = {k: _number(f"{path}: heartbeat.{k}", raw.get(k, v), integer=True)
                 for k, v in HEARTBEAT_DEFAULTS.items()}
    if heartbeat["interval"] < 1 or heartbeat["grace_period"] <= heartbeat["interval"] or \
            heartbeat["max_retry"] < 0:
        raise ConfigError(f"{path}: heartbeat: need interval >= 1, grace_period > interval and "
                          f"max_retry >= 0; got {heartbeat}")
    return heartbeat


def load_spec(name_or_path: str, profile: str = "smoke", trials: int | None = None,
              overrides: dict | None = None, study_name: str | None = None) -> SearchSpec:
    """Read and validate a search spec for a profile; every error names the file, key and fix."""
    path = spec_path(name_or_path)
    data = _read(path)
    name = str(data.get("name", path.stem))
    profiles = _profiles(path, data)
    own = profiles.get(profile) or {}

    base = _base(path, data["base"])
    variant = None if data.get("variant") is None else str(data["variant"])
    only = [variant] if variant else None
    base_set = _nested(f"{path}: set", data.get("set"))
    profile_sets = {p: _nested(f"{path}: profiles.{p}.set", (b or {}).get("set"))
                    for p, b in profiles.items()}
    fixed = deep_merge(deep_merge(base_set, profile_sets.get(profile, {})), overrides or {})
    # the base with the fixed overrides must resolve (this also checks the profile exists)
    plan(base, profile, fixed, only)

    objectives = _objectives(path, data["objectives"])
    constraints = _constraints(path, data.get("constraints"))
    space = _space(path, data["space"])
    _check_space_values(path, space, base, profile, fixed, only)
    sampler, pruner = _sampler_and_pruner(path, data, own, len(objectives))
    n = _trials(path, data, own, trials)
    heartbeat = _heartbeat(path, data.get("heartbeat"))
    default_study = f"{data.get('study_name') or name}-{profile}"
    return SearchSpec(path=path, name=name, description=str(data.get("description", "")).strip(),
                      base=base, variant=variant, fixed=fixed, objectives=objectives,
                      constraints=constraints, space=space, sampler=sampler, pruner=pruner,
                      trials=n, study_name=study_name or default_study, heartbeat=heartbeat,
                      profile=profile, profile_sets=profile_sets, base_set=base_set,
                      cli_set=overrides or {})
