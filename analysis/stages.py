"""Retained channel ratio per stage per epoch: shared by Figures 9 (ResNet-20) and 10 (VGG-16).

A stage's ratio is the share of its gated channels that are on. The dotted line is the hard
architecture's MACs relative to dense (budget usage), the dashed one the MACs target; with
several seeds, lines are means and bands span min to max.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from . import style


def draw_stage_ratios(runs, stem: Path, title: str, store) -> list[Path]:
    style.setup()
    runs = runs[runs["variant"] == runs["variant"].iloc[0]]      # one variant: the method
    h = store.histories(runs, r"channels/stage\d+|budget/usage")
    stats = h.groupby(["key", "epoch"])["value"].agg(["mean", "min", "max"]).reset_index()
    fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
    stage_keys = sorted((k for k in stats["key"].unique() if k.startswith("channels/")),
                        key=lambda k: int(k.removeprefix("channels/stage")))
    for key in stage_keys:
        stage = int(key.removeprefix("channels/stage"))
        d = stats[stats["key"] == key]
        color = style.stage_colors(stage, 3)[-1]
        ax.plot(d["epoch"], d["mean"], color=color, lw=2, label=f"stage {stage}")
        if runs["seed"].nunique() > 1:
            ax.fill_between(d["epoch"], d["min"], d["max"], color=color, alpha=0.2, lw=0)
    usage = stats[stats["key"] == "budget/usage"]
    ax.plot(usage["epoch"], usage["mean"], color="0.3", ls=":", lw=1.5, label="MACs / dense")
    target = float(runs["param.budget.target"].iloc[0])
    ax.axhline(target, color="0.5", lw=0.8, ls="--", label=f"MACs target {target:g}")
    ax.set(xlabel="epoch (0 = seed)", ylabel="retained channel ratio", ylim=(-0.02, 1.02))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    width = float(runs["param.model.width_multiplier"].iloc[0])
    note = f", width × {width:g}" if width != 1 else ""
    ax.set_title(f"{title}\n{style.subtitle(runs)}{note}", fontsize=11)
    return style.save(fig, stem)
