"""Figure 7: ResNet-20's retained channel ratio of every layer per epoch (channel growing).

One panel per stage. Solid lines: the inner convs of each block (their own gates). Dashed: the
stage's residual stream, which the stem / every block's second conv / the projection shortcut
write through one shared gate, so those layers always have the same ratio and are drawn once.
Epoch 0 is the seed architecture before training. Each layer's stage and role come from the
run's architecture.json.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from reproduce import contract

from . import style

EXPERIMENTS = ["figure-7"]
STREAM_ROLES = ("stream", "shortcut")     # layers writing a stage's shared residual stream


def draw(runs, stem: Path, profile: str, store, title: str | None = None,
         formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Figure 7 of `runs`; with `title`, one run's panel under its own title (a run logs its
    own PNG, `reproduce.run_artifacts`)."""
    style.setup()
    runs = runs[runs["variant"] == runs["variant"].iloc[0]]      # one variant: the method
    layers = store.layers(runs["run_id"].iloc[0]).set_index("layer")
    h = store.histories(runs, r"channels/(?!stage).*")
    h["layer"] = h["key"].str.removeprefix(contract.CHANNELS)
    h = h[h["layer"].isin(layers.index)]
    h["stage"] = h["layer"].map(layers["stage"])
    h["order"] = h["layer"].map(layers["order"])
    h.loc[h["layer"].map(layers["role"]).isin(STREAM_ROLES), ["layer", "order"]] = ("stream", 1e9)
    h = h.drop_duplicates(["run_id", "layer", "stage", "epoch"])
    stats = h.groupby(["stage", "layer", "epoch"])["value"].agg(["mean", "min", "max"]).reset_index()
    stages = sorted(stats["stage"].unique())
    fig, axes = plt.subplots(1, len(stages), figsize=(4.2 * len(stages), 3.8), sharey=True,
                             squeeze=False, layout="constrained")
    for ax, stage in zip(axes[0], stages):
        d_stage = stats[stats["stage"] == stage]
        order = h.drop_duplicates("layer").set_index("layer")["order"]
        inner = sorted((la for la in d_stage["layer"].unique() if la != "stream"), key=order.get)
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
    fig.suptitle((title or "Figure 7 - retained channels per layer during growth (epoch 0 = seed)")
                 + "\n" + style.subtitle(runs), fontsize=11)
    return style.save(fig, stem, formats)
