"""Budget-driven sparsity: the penalty strength follows the distance to a resource target.

    λ_t = λ_base · (u_t − τ) / τ

u_t is the current usage (hard architecture's MACs or params over the dense model's, or the
expected usage under the gate probabilities) and τ the target fraction. Over budget λ > 0 and the
penalty prunes; under budget λ < 0 and it grows. `metric = none` keeps λ = λ_base fixed
(the "w/o budget" ablation: plain Continuous Sparsification).
"""

from __future__ import annotations

from .options import BudgetOptions


class BudgetController:
    """λ from the usage, for the metric, target τ and λ_base of `options` (checked there)."""

    def __init__(self, options: BudgetOptions = BudgetOptions()):
        self.metric, self.target = options.metric, options.target
        self.lambda_base = options.lambda_base
        self.lam = self.lambda_base if self.metric == "none" else 0.0
        self.usage = float("nan")

    def update(self, usage: float) -> float:
        """Record the current usage (fraction of dense) and return the new λ."""
        self.usage = usage
        if self.metric != "none":
            self.lam = self.lambda_base * (usage - self.target) / self.target
        return self.lam
