"""Figure 9: ResNet-20's retained channel ratio per stage per epoch (same runs as Figure 7)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from . import style
from .runs import histories

EXPERIMENTS = ["figure-7"]


def draw(runs, stem: Path, profile: str, uri=None) -> list[Path]:
    style.setup()
    runs = runs[runs["variant"] == runs["variant"].iloc[0]]
    h = histories(runs, r"channels/stage\d+|budget/usage", uri)
    stats = h.groupby(["key", "epoch"])["value"].agg(["mean", "min", "max"]).reset_index()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    stage_keys = sorted(k for k in stats["key"].unique() if k.startswith("channels/"))
    for key in stage_keys:
        stage = int(key.removeprefix("channels/stage"))
        d = stats[stats["key"] == key]
        color = style.stage_colors(stage, 3)[-1]
        ax.plot(d["epoch"], d["mean"], color=color, lw=2, label=f"stage {stage}")
        if runs["seed"].nunique() > 1:
            ax.fill_between(d["epoch"], d["min"], d["max"], color=color, alpha=0.2, lw=0)
    usage = stats[stats["key"] == "budget/usage"]
    ax.plot(usage["epoch"], usage["mean"], color="0.3", ls=":", lw=1.5, label="MACs / dense")
    target = runs["param.budget.target"].astype(float).iloc[0]
    ax.axhline(target, color="0.5", lw=0.8, ls="--", label=f"MACs target {target:g}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("retained channel ratio")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Figure 9 - retained channels per stage\n" + style.subtitle(runs), fontsize=11)
    return style.save(fig, stem)
