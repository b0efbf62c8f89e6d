"""Shared look of every figure, and saving as PNG + PDF."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

STAGE_PALETTES = ["Blues", "Oranges", "Greens", "Purples", "Reds"]


def setup() -> None:
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)


def stage_colors(stage: int, n: int) -> list:
    """n shades of the stage's colour family (darker = deeper in the stage)."""
    return sns.color_palette(STAGE_PALETTES[(stage - 1) % len(STAGE_PALETTES)], n + 2)[2:]


def subtitle(runs) -> str:
    r = runs.iloc[0]
    seeds = sorted(runs["seed"].unique())
    seed_txt = f"seed {seeds[0]}" if len(seeds) == 1 else f"mean over seeds {', '.join(map(str, seeds))}"
    sizes = pd.to_numeric(runs.get("param.data.image_size", pd.Series(dtype=float)),
                          errors="coerce").dropna().unique()
    data = r["dataset"] + (f" at {int(sizes[0])} px" if len(sizes) == 1 and sizes[0] > 0 else "")
    return f"{r['model']} on {data} ({r['profile']} profile, {seed_txt})"


def save(fig, stem: Path, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Write `fig` as `stem`.png (160 dpi) and .pdf, or only the `formats` asked for."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(f".{f}") for f in formats]
    for path in paths:
        fig.savefig(path, bbox_inches="tight", **({"dpi": 160} if path.suffix == ".png" else {}))
    plt.close(fig)
    return paths
