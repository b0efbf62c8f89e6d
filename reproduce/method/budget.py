"""Budget-driven sparsity: the penalty strength follows the distance to a resource target.

    λ_t = λ_base · (u_t − τ) / τ

u_t is the current usage (hard architecture's MACs or params over the dense model's, or the
expected usage under the gate probabilities) and τ the target fraction. Over budget λ > 0 and the
penalty prunes; under budget λ < 0 and it grows. `metric = none` keeps λ = λ_base fixed
(the "w/o budget" ablation: plain Continuous Sparsification).

With `target_ramp` = r > 0 the target of epoch e (1, 2, ... of T) is
u_0 + (τ − u_0)·min(1, e/(r·T)), u_0 the seed's usage: the network may grow (or, from above τ,
must shrink) only as fast as the target moves, and τ holds from epoch r·T on.
"""

from __future__ import annotations

from .options import BudgetOptions


class BudgetController:
    """λ from the usage, for the metric, target τ and λ_base of `options` (checked there)."""

    def __init__(self, options: BudgetOptions = BudgetOptions()):
        self.metric, self.target = options.metric, options.target
        self.final_target, self.ramp = options.target, options.target_ramp
        self.ramp_from: float | None = None       # the seed's usage u_0 (`start_ramp`)
        self.lambda_base = options.lambda_base
        self.lam = self.lambda_base if self.metric == "none" else 0.0
        self.usage = float("nan")

    def start_ramp(self, seed_usage: float) -> None:
        """Remember the seed's usage u_0, where a ramped target starts."""
        self.ramp_from = seed_usage

    def set_epoch(self, epoch: int, epochs: int) -> None:
        """The target of epoch `epoch` (1-based) of `epochs` (τ unless the target ramps)."""
        if self.ramp > 0 and self.ramp_from is not None:
            share = min(1.0, epoch / max(1e-9, self.ramp * epochs))
            self.target = self.ramp_from + (self.final_target - self.ramp_from) * share

    def update(self, usage: float) -> float:
        """Record the current usage (fraction of dense) and return the new λ."""
        self.usage = usage
        if self.metric != "none":
            self.lam = self.lambda_base * (usage - self.target) / self.target
        return self.lam
