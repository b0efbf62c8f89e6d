"""Budget-driven sparsity: the penalty strength follows the distance to a resource target.

    λ_t = λ_base · (u_t − τ) / τ

u_t is the current usage (hard architecture's MACs or params over the dense model's, or the
expected usage under the gate probabilities) and τ the target fraction. Over budget λ > 0 and the
penalty prunes; under budget λ < 0 and it grows. `metric = none` keeps λ = λ_base fixed
(the "w/o budget" ablation: plain Continuous Sparsification).
"""

from __future__ import annotations

from .options import BUDGET_METRICS as METRICS


class BudgetController:
    def __init__(self, metric: str = "macs", target: float = 0.5, lambda_base: float = 0.05):
        if metric not in METRICS:
            raise ValueError(f"unknown budget metric {metric!r}; choose one of {', '.join(METRICS)}")
        if not 0 < target <= 1:
            raise ValueError(f"budget target must be in (0, 1], got {target}")
        self.metric, self.target, self.lambda_base = metric, target, lambda_base
        self.lam = lambda_base if metric == "none" else 0.0
        self.usage = float("nan")

    def update(self, usage: float) -> float:
        """Record the current usage (fraction of dense) and return the new λ."""
        self.usage = usage
        if self.metric != "none":
            self.lam = self.lambda_base * (usage - self.target) / self.target
        return self.lam
