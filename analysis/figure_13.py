"""Figure 13: per-structure temperature β during channel growing, `separate_decayed` schedule.

As Figure 12, but β_i also decays (β_i ← max(β_0, δ·β_i), δ = temperature.decay) in epochs
where structure i is inactive, so a channel switched off softens again and can be regrown.
"""

from __future__ import annotations

from pathlib import Path

from .traces import draw_traces

EXPERIMENTS = ["figure-13"]


def draw(runs, stem: Path, profile: str, store) -> list[Path]:
    return draw_traces(runs, stem, "Figure 13", store)
