"""Figure 9: ResNet-20's retained channel ratio per stage per epoch (same runs as Figure 7)."""

from __future__ import annotations

from pathlib import Path

from .stages import draw_stage_ratios

EXPERIMENTS = ["figure-7"]


def draw(runs, stem: Path, profile: str, store) -> list[Path]:
    return draw_stage_ratios(runs, stem, "Figure 9 - ResNet-20 retained channels per stage", store)
