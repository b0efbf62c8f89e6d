"""Figure 7: ResNet-20's retained channel ratio of every layer per epoch (channel growing).

One panel per stage. Solid lines: the inner convs of each block (their own gates). Dashed: the
stage's residual stream, which the stem / every block's second conv / the projection shortcut
write through one shared gate, so those layers always have the same ratio and are drawn once.
Epoch 0 is the seed architecture before training.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt

from . import style
from .runs import histories

EXPERIMENTS = ["figure-7"]


def layer_stage(layer: str) -> int:
    m = re.match(r"layer(\d+)\.", layer)
    return int(m.group(1)) if m else 1


def writes_stream(layer: str) -> bool:
    return layer == "conv1" or layer.endswith((".conv2", ".shortcut.0"))


def draw(runs, stem: Path, profile: str, uri=None) -> list[Path]:
    style.setup()
    runs = runs[runs["variant"] == runs["variant"].iloc[0]]      # one variant: the method
    h = histories(runs, r"channels/(?!stage).*", uri)
    h["layer"] = h["key"].str.removeprefix("channels/")
    h["stage"] = h["layer"].map(layer_stage)
    h.loc[h["layer"].map(writes_stream), "layer"] = "stream"
    h = h.drop_duplicates(["run_id", "layer", "stage", "epoch"])
    stats = h.groupby(["stage", "layer", "epoch"])["value"].agg(["mean", "min", "max"]).reset_index()
    stages = sorted(stats["stage"].unique())
    fig, axes = plt.subplots(1, len(stages), figsize=(4.2 * len(stages), 3.8), sharey=True,
                             squeeze=False, layout="constrained")
    for ax, stage in zip(axes[0], stages):
        d_stage = stats[stats["stage"] == stage]
        inner = sorted((la for la in d_stage["layer"].unique() if la != "stream"), key=_order)
        colors = style.stage_colors(stage, len(inner) + 1)
        for layer, color in zip(inner + ["stream"], colors):
            d = d_stage[d_stage["layer"] == layer]
            label = f"stage {stage} stream" if layer == "stream" else layer.removesuffix(".conv1")
            ax.plot(d["epoch"], d["mean"], color=color, lw=2.2 if layer == "stream" else 1.5,
                    ls="--" if layer == "stream" else "-", label=label)
            if runs["seed"].nunique() > 1:
                ax.fill_between(d["epoch"], d["min"], d["max"], color=color, alpha=0.15, lw=0)
        ax.set_title(f"stage {stage}")
        ax.set_xlabel("epoch")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7, loc="lower right", title="block inner / stream", title_fontsize=7)
    axes[0][0].set_ylabel("retained channel ratio")
    fig.suptitle("Figure 7 - retained channels per layer during growth (epoch 0 = seed)\n"
                 + style.subtitle(runs), fontsize=11)
    return style.save(fig, stem)


def _order(layer: str):
    return [int(n) for n in re.findall(r"\d+", layer)]
