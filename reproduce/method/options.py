"""The method's options: every knob of the method, with its default, range and why, declared once.

    GrowthController(model, input_shape, epochs=160,
                     gates=GateOptions(sampling="bernoulli", seed_fraction=0.25),
                     temperature=TemperatureOptions(schedule="separate"),
                     budget=BudgetOptions(target=0.5), rng_seed=0)

Anyone using the method in their own loop gets the same clear errors as an experiment file: the
suite's config schema (reproduce/config.py) uses these dataclasses as its `gates`, `temperature`
and `budget` sections. "Seed" in `seed_fraction`, `seed_blocks` and `seed_selection` is the seed
*architecture* the network grows from; the random-number seed is `rng_seed`.

Adding a method knob is one field here, e.g. in GateOptions

    warmup_epochs: int = field(default=0, metadata=at_least(0, added_later=0))

and experiment files, `--set gates.warmup_epochs=2`, search spaces and the tracked params all
have it; `added_later=0` keeps every run tracked before it at its identity while it is 0.

A field's metadata is plain data, read by `check_fields` and by the suite:

    choices        the accepted values (or a function returning them)
    check          a test the value must pass, worded as `expected` in the error ("in (0, 1]")
    identity       False: the field cannot change a result, so it is not part of a tracked run's
                   identity (its config hash)
    added_later    the field joined after runs were tracked; at this value it does what the method
                   did before, and it is left out of a run's identity while it holds that value
    read_by        only runs of this method read the field (or a whole config section): other runs
                   leave it out of their identity, or, with `others_at`, hash it at that value
                   (the field existed when their runs were tracked, at that value)
    read_with      only runs whose config has this (dotted) field true read it, e.g.
                   "model.gate_blocks", or that value, or any other ("train.execution=auto",
                   "train.execution!=masked"): other runs leave it out of their identity

Defaults marked [ours] are this suite's choices where the paper's value is unknown
(docs/METHOD.md); [ancestor] is Continuous Sparsification (Savarese et al. 2020).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

SAMPLING_MODES = ("bernoulli", "straight_through", "deterministic", "hard")
SEED_BLOCKS = ("one_per_stage", "all", "<n>_per_stage")   # e.g. 2_per_stage
SEED_SELECTIONS = ("first", "random")
SCHEDULES = ("global", "separate", "separate_decayed")
BUDGET_METRICS = ("macs", "params", "none")
USAGES = ("hard", "expected")
COSTS = ("macs", "params", "uniform")
NORMALIZATIONS = ("mean", "total")
GROWTH_PUSHES = ("uniform", "cost")
# execution.py: same mathematics, different speed; auto = restructured where the model and the
# sampling allow it, else masked
EXECUTION_MODES = ("auto", "masked", "restructured")


class OptionError(ValueError):
    """An unknown or out-of-range method option; the message names it and what is accepted."""


# -- field metadata: what a field accepts (any other key, e.g. identity=False, is passed on) ----

def choice(*options: str, **meta) -> dict:
    return {"choices": options, **meta}


def rule(check, expected: str, **meta) -> dict:
    """The value must pass `check`; errors say it must be `expected`."""
    return {"check": check, "expected": expected, **meta}


def at_least(bound: float, **meta) -> dict:
    return rule(lambda v: v >= bound, f">= {bound}", **meta)


def positive(**meta) -> dict:
    return rule(lambda v: v > 0, "positive", **meta)


def fraction(**meta) -> dict:
    return rule(lambda v: 0.0 < v <= 1.0, "in (0, 1]", **meta)


def choices_of(metadata) -> tuple[str, ...]:
    """A field's accepted values: its "choices" metadata, a tuple, or a function returning them
    (read when a value is checked, e.g. from a registry filled after the field is declared)."""
    options = metadata.get("choices") or ()
    return tuple(options() if callable(options) else options)


def check_fields(obj, group: str) -> None:
    """Check every field of the dataclass `obj` against its metadata; errors name `group.field`,
    the value and what is accepted."""
    for f in fields(obj):
        name, value = f"{group}.{f.name}" if group else f.name, getattr(obj, f.name)
        options = choices_of(f.metadata)
        if options and value not in options:
            raise OptionError(f"{name}: unknown value {value!r}; choose one of "
                              f"{', '.join(options)}")
        check = f.metadata.get("check")
        if check is not None and not check(value):
            raise OptionError(f"{name} = {value!r}: must be {f.metadata['expected']}")


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
    # gates.py explains each mode; hard: fixed masks
    sampling: str = field(default="bernoulli", metadata=choice(*SAMPLING_MODES))
    # Seed architecture [ours]: a fraction of each channel group and one block per stage start
    # on. 1.0 with seed_blocks=all is "prune from the full network"
    seed_fraction: float = field(default=0.25, metadata=fraction())
    # SEED_BLOCKS: one_per_stage (layer growing's seed), <n>_per_stage (e.g. 2_per_stage) or all
    seed_blocks: str = "one_per_stage"
    seed_selection: str = field(default="first", metadata=choice(*SEED_SELECTIONS))
    # initial logit of seed structures [ours]: with β_0 = 5 the seed starts at p = σ(2.5) = 0.92,
    # reliably on yet not saturated. s_on = 3 (p ≈ 1 - 3e-7) left no gradient to move the seed:
    # pruning from the full network (seed_fraction 1) never pruned (Figure 4 smoke run)
    s_on: float = 0.5
    s_off: float = -0.1                 # initial logit of the rest; near 0 lets sampling explore
    # non-seed logits start at s_off − spread·U(0,1): with 0 they cross 0 together and the usage
    # jumps by whole gates; a spread makes channels grow one after another [ours]
    s_off_spread: float = field(default=0.5, metadata=at_least(0))
    # seed logits start at s_on + spread·U(0,1) [ours]. Pruning from the full network
    # (seed_fraction 1) needs it: with 0 every channel of a gate shares one logit, the
    # cost-weighted pruning push closes a whole stage's stream in one step within the first
    # epoch, and ResNet-20 at a 0.3 MACs budget ended at chance (docs/METHOD.md). 0 for growing:
    # its seed is not what the push moves first
    s_on_spread: float = field(default=0.0, metadata=at_least(0, added_later=0.0))
    # block gates start spread as channel gates do (s_off − spread·u): with one shared logit every
    # block crossed 0 in the same epoch (Basic3ResNet-6-6-6: seed to 10 of 15 blocks in epoch 1).
    # False: at s_off exactly, as runs tracked before it. Only layer growing reads it [ours]
    spread_blocks: bool = field(default=True, metadata=choice(True, False, read_by="grow",
                                                                read_with="model.gate_blocks"))
    # channels every channel gate keeps on (0 allows zero-width layers)
    min_channels: int = field(default=1, metadata=at_least(0))
    # bernoulli sampling: q is drawn at iterations 0, k, 2k, ... of the run and the same sampled
    # sub-network trains in between (the paper's "periodically restructured"; its period is not
    # known [ours]); 1 = a new sub-network every iteration. With restructured execution a
    # period keeps the computed shapes, so the kernels prepared for them are reused
    resample_every: int = field(default=1, metadata=rule(
        lambda v: isinstance(v, int) and v >= 1, "an integer >= 1", added_later=1))

    def __post_init__(self):
        check_fields(self, "gates")
        seed_blocks_per_stage(self.seed_blocks)
        _check("gates", "resample_every", self.resample_every == 1
               or self.sampling in ("bernoulli", "straight_through"),
               f"1 with gates.sampling = {self.sampling!r} (only bernoulli and straight_through "
               f"draw samples)", self.resample_every)


@dataclass(frozen=True)
class TemperatureOptions:
    """How β rises so that σ(β·s) hardens into a binary mask (temperature.py)."""
    schedule: str = field(default="global", metadata=choice(*SCHEDULES))
    # [ancestor: 1] β_0 = 5 [ours]: non-seed channels start at p = σ(5·s_off) ≈ 0.1-0.4 instead of
    # ≈ 0.4-0.5, so fewer random channels are sampled in; the separate schedules need it most
    beta_0: float = field(default=5.0, metadata=positive())
    beta_final: float = 200.0           # [ancestor] β reaches 200 ...
    # separate_decayed: β_i ← max(β_0, δ·β_i) while inactive [ours]
    decay: float = field(default=0.9, metadata=fraction())
    # ... after this fraction of the epochs, and stays (1 = in the last epoch) [ours] 0.5: short
    # schedules otherwise spend most epochs training noisy sub-networks (p far from 0/1); the
    # grown architecture then trains hard for the second half
    ramp_fraction: float = field(default=0.5, metadata=fraction())

    def __post_init__(self):
        check_fields(self, "temperature")
        _check("temperature", "beta_final", self.beta_final >= self.beta_0,
               ">= temperature.beta_0", self.beta_final)


@dataclass(frozen=True)
class BudgetOptions:
    """The resource target and the sparsity penalty that steers towards it (budget.py)."""
    # none keeps λ = λ_base fixed (the "w/o budget" ablation)
    metric: str = field(default="macs", metadata=choice(*BUDGET_METRICS))
    # τ: fraction of the dense model's MACs (or params)
    target: float = field(default=0.5, metadata=fraction())
    # [ours] effective range 0.03-0.1 with mean-normalised costs
    lambda_base: float = field(default=0.05, metadata=at_least(0))
    # the hard architecture's cost, or the expected one under the gate probabilities
    usage: str = field(default="hard", metadata=choice(*USAGES))
    cost: str = field(default="macs", metadata=choice(*COSTS))      # what a structure costs
    # structure costs over their mean or over the dense total
    normalize: str = field(default="mean", metadata=choice(*NORMALIZATIONS))
    # Under budget (λ < 0) a cost-weighted push grows the most expensive channels first (the
    # objective's own gradient, λ·c_i·∂p_i); `uniform` pushes every structure alike and lets the
    # task loss decide what grows. Over budget pruning is always cost-weighted. [ours: cost]
    # `uniform` left the shared high-resolution streams narrow (ResNet-56 at 0.5 MACs: 97.83 %
    # against 98.56 % with `cost`, five seeds; docs/METHOD.md). Only growing reads it: the
    # baselines' runs were tracked with `uniform`
    growth_push: str = field(default="cost", metadata=choice(*GROWTH_PUSHES, read_by="grow",
                                                              others_at="uniform"))

    # Layer growing [ours]: where blocks are gated, `current` weighs every structure by what it
    # costs in the current hard architecture (the gradient of the usage the controller measures)
    # over the dense network's cost per channel, so a block is pushed as the channels it holds,
    # whatever other gates the model has. `dense`: the dense costs over the mean structure cost
    # (what channel-only models use, and layer growing before): a block-only model pushed a block
    # as one channel (the task loss closed it against the push), and next to channel gates a
    # block of the 25 % seed weighed 16× what it costs (every block opened in epoch 1).
    # docs/METHOD.md, "Layer growing". Models without block gates never read it
    block_costs: str = field(default="current", metadata=choice(
        "current", "dense", read_by="grow", read_with="model.gate_blocks"))
    # [ours] The fraction of the training epochs over which the target rises linearly from the
    # seed's usage to τ (0: τ from the start). Layer growing (Figure 5) uses 0.5: at τ from the
    # start every block opened in the first one or two epochs; docs/METHOD.md, "Layer growing"
    target_ramp: float = field(default=0.0, metadata=rule(
        lambda v: 0.0 <= v <= 1.0, "in [0, 1]", added_later=0.0, read_by="grow"))

    def __post_init__(self):
        check_fields(self, "budget")
