"""Figure 6: final per-layer channel counts of the method and its ablations, per parameter budget.

One panel per parameter-sparsity target τ (fraction of the dense model's params). Grey bars: the
dense ResNet-20's widths; lines: the final hard architecture (architecture.json) of the method
(Bernoulli sampling, budget control, global β), without sampling, with the separate and
separate_decayed β schedules, and without budget control (fixed λ, no target: the same run in
every panel). The legend gives the params each run ended with, relative to dense. Layers sharing
a residual stream (stem, every block's second conv, projection shortcuts) share one gate per stage.
Figure 11 is the same plot for MACs targets.
"""

from __future__ import annotations

from pathlib import Path

from .widths import draw_counts

EXPERIMENTS = ["figure-6"]


def draw(runs, stem: Path, profile: str, store) -> list[Path]:
    return draw_counts(runs, stem, "Figure 6", "params", store)
