"""Figure 11: as Figure 6, at several MACs (FLOPs) targets.

Final per-layer channel counts of ResNet-20 grown with the method and its ablations (no sampling,
no budget control, separate and separate_decayed β) at MACs budgets of 30%, 50% and 70% of the
dense model (FLOPs = 2 × MACs, so the FLOPs-sparsity targets are the same fractions).
"""

from __future__ import annotations

from pathlib import Path

from .widths import draw_counts

EXPERIMENTS = ["figure-11"]


def draw(runs, stem: Path, profile: str, store) -> list[Path]:
    return draw_counts(runs, stem, "Figure 11", "macs", store)
