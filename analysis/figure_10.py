"""Figure 10: VGG-16's retained channel ratio per stage per epoch (same runs as Figure 8)."""

from __future__ import annotations

from pathlib import Path

from .stages import draw_stage_ratios

EXPERIMENTS = ["figure-8"]


def draw(runs, stem: Path, profile: str, store) -> list[Path]:
    return draw_stage_ratios(runs, stem, "Figure 10 - VGG-16 retained channels per stage", store)
