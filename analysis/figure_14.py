"""Figure 14 (appendix): ResNet-20 training FLOPs per epoch, across budgets and β schedules.

Training FLOPs of each epoch (2 × training MACs: 3 × the sampled architecture's forward MACs per
sample). Left: channel growing (solid) and pruning from the full network (dashed) at each MACs
budget, against the flat dense line. Right: channel growing at the 50% budget with the three
temperature schedules (global, separate, separate_decayed). Mean over seeds, min-max bands.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import seaborn as sns

from . import style
from .costs import plot_band, training_cost
from .variants import COLORS, ablation, family, si_scale, target

EXPERIMENTS = ["figure-4", "figure-14", "figure-12", "figure-13"]


def draw(runs, stem: Path, profile: str, store) -> list[Path]:
    style.setup()
    runs = runs.assign(family=family(runs), ablation=ablation(runs), target=target(runs))
    data = training_cost(runs, store).merge(runs[["run_id", "ablation", "target"]], on="run_id")
    data["flops"] = 2 * data["cost/train_macs"]
    scale, prefix = si_scale(data["flops"])
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.8), sharey=True, layout="constrained")
    dense = data[data["family"] == "dense"]
    ours = data[data["ablation"] == "ours"]
    targets = sorted(ours.loc[ours["family"] != "dense", "target"].dropna().unique())
    palette = dict(zip(targets, sns.color_palette("viridis", len(targets))))
    for tau in targets:
        for fam, ls in (("growing", "-"), ("pruning from full", "--")):
            d = ours[(ours["family"] == fam) & (ours["target"] == tau)]
            if len(d):
                plot_band(ax, d, "flops", scale, color=palette[tau], ls=ls, lw=1.8,
                          label=f"{'grow' if fam == 'growing' else 'prune'} τ={tau:g}")
    others = data.loc[data["ablation"].isin(["separate β", "separate_decayed β"]), "target"]
    tau_s = others.iloc[0] if len(others) else 0.5          # the budget the schedules ran at
    schedules = data[(data["family"] == "growing") & (data["target"] == tau_s)
                     & data["ablation"].isin(["ours", "separate β", "separate_decayed β"])]
    for name, d in schedules.groupby("ablation"):
        label = "global β" if name == "ours" else name
        plot_band(ax2, d, "flops", scale, color=COLORS[name], lw=1.8, label=f"grow, {label}")
    for a in (ax, ax2):
        if len(dense):
            plot_band(a, dense, "flops", scale, color=COLORS["dense"], ls=":", lw=2, label="dense")
        a.set(xlabel="epoch", ylim=(0, None))
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=4)
    ax.set_ylabel(f"training FLOPs per epoch ({prefix}FLOPs)")
    ax.set_title("MACs budgets τ: growing (solid) vs pruning from full (dashed)", fontsize=10)
    ax2.set_title(f"temperature schedules (growing, τ = {tau_s:g})", fontsize=10)
    fig.suptitle("Figure 14 - training FLOPs per epoch of channel growing (FLOPs = 2 × MACs)\n"
                 + style.subtitle(runs), fontsize=11)
    return style.save(fig, stem)
