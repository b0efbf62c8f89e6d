"""The method's options: every vocabulary and range, defined and checked once, here.

    GrowthController(model, input_shape, epochs=160,
                     gates=GateOptions(sampling="bernoulli", seed_fraction=0.25),
                     temperature=TemperatureOptions(schedule="separate"),
                     budget=BudgetOptions(target=0.5), rng_seed=0)

Anyone using the method in their own loop gets the same clear errors as an experiment file: the
suite's config schema (reproduce/config.py) takes its vocabularies from here. "Seed" in
`seed_fraction`, `seed_blocks` and `seed_selection` is the seed *architecture* the network grows
from; the random-number seed is `rng_seed`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

SAMPLING_MODES = ("bernoulli", "straight_through", "deterministic", "hard")
SEED_BLOCKS = ("one_per_stage", "all", "<n>_per_stage")   # e.g. 2_per_stage
SEED_SELECTIONS = ("first", "random")
SCHEDULES = ("global", "separate", "separate_decayed")
BUDGET_METRICS = ("macs", "params", "none")
USAGES = ("hard", "expected")
COSTS = ("macs", "params", "uniform")
NORMALIZATIONS = ("mean", "total")
GROWTH_PUSHES = ("uniform", "cost")
EXECUTION_MODES = ("masked", "restructured")   # execution.py: same mathematics, different speed


class OptionError(ValueError):
    """An unknown or out-of-range method option; the message names it and what is accepted."""


def _choice(group: str, name: str, value, options: tuple) -> None:
    if value not in options:
        raise OptionError(f"{group}.{name}: unknown value {value!r}; choose one of "
                          f"{', '.join(options)}")


def seed_blocks_per_stage(value: str) -> int | None:
    """Blocks per stage the seed architecture keeps on: 1 for `one_per_stage`, n for
    `<n>_per_stage` (n >= 1), None for `all`. Raises OptionError for anything else."""
    if value == "all":
        return None
    if value == "one_per_stage":
        return 1
    head, sep, tail = str(value).partition("_")
    if sep and tail == "per_stage" and head.isdigit() and int(head) >= 1:
        return int(head)
    raise OptionError(f"gates.seed_blocks: unknown value {value!r}; choose one of "
                      f"{', '.join(SEED_BLOCKS)}")


def _check(group: str, name: str, ok: bool, expected: str, value) -> None:
    if not ok:
        raise OptionError(f"{group}.{name} = {value!r}: must be {expected}")


@dataclass(frozen=True)
class GateOptions:
    """How gates behave in training and which architecture the network starts from."""
    sampling: str = "bernoulli"         # SAMPLING_MODES (gates.py explains each)
    seed_fraction: float = 0.25         # share of every channel gate's channels that start on
    seed_blocks: str = "one_per_stage"  # SEED_BLOCKS: how many blocks per stage start on
    seed_selection: str = "first"       # SEED_SELECTIONS: which channels form the seed
    s_on: float = 0.5                   # initial logit of seed structures (p = σ(β_0·s_on))
    s_off: float = -0.1                 # initial logit of the rest ...
    s_off_spread: float = 0.5           # ... minus spread·U(0, 1), so they cross 0 one by one
    min_channels: int = 1               # channels every channel gate keeps on (0: zero width ok)
    # bernoulli: draw q every this many iterations and train the same sub-network in between
    # (the paper's periodic restructuring; 1 = a new sub-network every iteration)
    resample_every: int = 1

    def __post_init__(self):
        _choice("gates", "sampling", self.sampling, SAMPLING_MODES)
        seed_blocks_per_stage(self.seed_blocks)
        _choice("gates", "seed_selection", self.seed_selection, SEED_SELECTIONS)
        _check("gates", "seed_fraction", 0.0 < self.seed_fraction <= 1.0, "in (0, 1]",
               self.seed_fraction)
        _check("gates", "min_channels", self.min_channels >= 0, ">= 0", self.min_channels)
        _check("gates", "s_off_spread", self.s_off_spread >= 0, ">= 0", self.s_off_spread)
        _check("gates", "resample_every", isinstance(self.resample_every, int)
               and self.resample_every >= 1, "an integer >= 1", self.resample_every)
        _check("gates", "resample_every", self.resample_every == 1
               or self.sampling in ("bernoulli", "straight_through"),
               f"1 with gates.sampling = {self.sampling!r} (only bernoulli and straight_through "
               f"draw samples)", self.resample_every)


@dataclass(frozen=True)
class TemperatureOptions:
    """How β rises so that σ(β·s) hardens into a binary mask (temperature.py)."""
    schedule: str = "global"            # SCHEDULES
    beta_0: float = 5.0
    beta_final: float = 200.0
    decay: float = 0.9                  # separate_decayed: β_i ← max(β_0, δ·β_i) while inactive
    ramp_fraction: float = 0.5          # β reaches beta_final after this fraction of the epochs

    def __post_init__(self):
        _choice("temperature", "schedule", self.schedule, SCHEDULES)
        _check("temperature", "beta_0", self.beta_0 > 0, "positive", self.beta_0)
        _check("temperature", "beta_final", self.beta_final >= self.beta_0,
               ">= temperature.beta_0", self.beta_final)
        _check("temperature", "decay", 0.0 < self.decay <= 1.0, "in (0, 1]", self.decay)
        _check("temperature", "ramp_fraction", 0.0 < self.ramp_fraction <= 1.0, "in (0, 1]",
               self.ramp_fraction)


@dataclass(frozen=True)
class BudgetOptions:
    """The resource target and the sparsity penalty that steers towards it (budget.py)."""
    metric: str = "macs"                # BUDGET_METRICS; none keeps λ = λ_base fixed
    target: float = 0.5                 # τ: fraction of the dense model's cost
    lambda_base: float = 0.05
    usage: str = "hard"                 # USAGES: the hard architecture's cost, or the expected one
    cost: str = "macs"                  # COSTS: what one structure costs in the penalty
    normalize: str = "mean"             # NORMALIZATIONS: structure costs over their mean or total
    growth_push: str = "cost"           # GROWTH_PUSHES: the penalty's weights while growing

    def __post_init__(self):
        _choice("budget", "metric", self.metric, BUDGET_METRICS)
        _choice("budget", "usage", self.usage, USAGES)
        _choice("budget", "cost", self.cost, COSTS)
        _choice("budget", "normalize", self.normalize, NORMALIZATIONS)
        _choice("budget", "growth_push", self.growth_push, GROWTH_PUSHES)
        _check("budget", "target", 0.0 < self.target <= 1.0, "in (0, 1]", self.target)
        _check("budget", "lambda_base", self.lambda_base >= 0, ">= 0", self.lambda_base)


def from_fields(cls, source) -> object:
    """Build an options dataclass from any object with attributes of the same names."""
    return cls(**{f.name: getattr(source, f.name) for f in fields(cls)})
