"""Figure 8: VGG-16's retained channel ratio of every layer per epoch (channel growing).

One panel per stage (the convs between two poolings: 2, 2, 3, 3, 3 layers for VGG-16), one line
per conv layer, darker = deeper. Every conv has its own gate. Epoch 0 is the seed architecture
before training. Mean over seeds, min-max bands. Figure 10 aggregates the same runs per stage.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from reproduce import contract

from . import style

EXPERIMENTS = ["figure-8"]


def draw(runs, stem: Path, profile: str, store) -> list[Path]:
    style.setup()
    runs = runs[runs["variant"] == runs["variant"].iloc[0]]      # one variant: the method
    layers = store.layers(runs["run_id"].iloc[0]).set_index("layer")   # stage of each conv
    h = store.histories(runs, r"channels/(?!stage).*")
    h["layer"] = h["key"].str.removeprefix(contract.CHANNELS)
    h = h[h["layer"].isin(layers.index)]
    h["stage"] = h["layer"].map(layers["stage"])
    stats = h.groupby(["stage", "layer", "epoch"])["value"].agg(["mean", "min", "max"])
    stats = stats.reset_index()
    stages = sorted(stats["stage"].unique())
    fig, axes = plt.subplots(1, len(stages), figsize=(3.3 * len(stages), 3.6), sharey=True,
                             squeeze=False, layout="constrained")
    for ax, stage in zip(axes[0], stages):
        d_stage = stats[stats["stage"] == stage]
        names = sorted(d_stage["layer"].unique(), key=layers["order"].get)
        for layer, color in zip(names, style.stage_colors(stage, len(names))):
            d = d_stage[d_stage["layer"] == layer]
            ax.plot(d["epoch"], d["mean"], color=color, lw=1.6, label=layer)
            if runs["seed"].nunique() > 1:
                ax.fill_between(d["epoch"], d["min"], d["max"], color=color, alpha=0.15, lw=0)
        ax.set_title(f"stage {stage}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7, loc="best")
    axes[0][0].set_ylabel("retained channel ratio")
    width = float(runs["param.model.width_multiplier"].iloc[0])
    note = f", width × {width:g}" if width != 1 else ""
    fig.suptitle("Figure 8 - VGG-16 retained channels per layer during growth (epoch 0 = seed)\n"
                 + style.subtitle(runs) + note, fontsize=11)
    return style.save(fig, stem)
