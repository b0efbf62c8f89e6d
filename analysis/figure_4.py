"""Figure 4: ResNet-20 training MACs per epoch - channel growing, pruning from full, dense.

Left: training MACs of each epoch (3 × the sampled architecture's forward MACs per sample, summed
over the epoch's iterations). The dense ResNet-20 is a flat line; growing starts from a 25% seed,
pruning from the full network; both are driven to the same MACs budget. Right: cumulative training
MACs relative to the dense model over the same schedule (1 − the run's training savings), and,
dotted, the realised ratio: cumulative wall-clock training time relative to the dense run's on the
same device (the device is named in the legend; absent without a dense run on it). Lines are the
mean over seeds, shaded bands min-max.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from . import style
from .costs import plot_band, training_cost
from .variants import COLORS, METRIC_NAMES, si_scale

EXPERIMENTS = ["figure-4"]


def draw(runs, stem: Path, profile: str, store) -> list[Path]:
    style.setup()
    data = training_cost(runs, store)
    scale, prefix = si_scale(data["cost/train_macs"])
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10.5, 3.9), layout="constrained")
    for fam in ("growing", "pruning from full", "dense"):
        d = data[data["family"] == fam]
        if d.empty:
            continue
        total = d.groupby("run_id")["cumulative_ratio"].last().mean()
        kw = {"color": COLORS[fam], "ls": "--" if fam == "dense" else "-", "lw": 2}
        plot_band(ax, d, "cost/train_macs", scale, label=f"{fam} ({total:.2f}× dense in total)",
                  **kw)
        plot_band(ax2, d, "cumulative_ratio", label=f"{fam} (MACs)", **kw)
        timed = d.dropna(subset=["time_ratio"])
        if fam != "dense" and not timed.empty:
            devices = ", ".join(sorted(set(timed["device"])))
            plot_band(ax2, timed, "time_ratio", label=f"{fam} (wall clock, {devices})",
                      **{**kw, "ls": ":"})
    ax.set(xlabel="epoch", ylabel=f"training MACs per epoch ({prefix}MACs)", ylim=(0, None))
    ax.set_title("training MACs of each epoch (3 × forward MACs × samples)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    top = max(1.1, 1.05 * float(data["time_ratio"].max())) if data["time_ratio"].notna().any() \
        else 1.1
    ax2.set(xlabel="epoch", ylabel="cumulative training cost / dense", ylim=(0, top))
    ax2.set_title("cumulative training cost relative to dense: counted and realised", fontsize=10)
    ax2.legend(fontsize=8, loc="lower right")
    for a in (ax, ax2):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    gated = runs[runs["param.method"] != "dense"].iloc[0]
    budget = (f"{METRIC_NAMES[gated['param.budget.metric']]} budget "
              f"{float(gated['param.budget.target']):g}")
    fig.suptitle(f"Figure 4 - training cost: channel growing vs pruning from full vs dense "
                 f"({budget} of dense)\n" + style.subtitle(runs), fontsize=11)
    return style.save(fig, stem)
