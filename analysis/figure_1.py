"""Figure 1(c): total training cost against final accuracy - growing, pruning from full, dense.

Figures 1(a, b) and 2 of the paper are diagrams (the growing concept, the framework) and are not
drawn. Panel (c) from tracked runs: x = the run's cumulative training MACs (3 × forward, every
iteration of the schedule) relative to the dense ResNet-20 over the same schedule; y = final
validation accuracy. ResNet-20 grown from a 25% seed and pruned from the full network at each MACs
budget τ (points joined in budget order), and the dense model. Mean over seeds, error bars ±1 std.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from . import style
from .variants import COLORS, family, target

EXPERIMENTS = ["figure-4", "figure-14"]


def points(runs):
    """Mean and std over seeds of (training MACs / dense, final accuracy) per family and budget."""
    d = runs.assign(family=family(runs), target=target(runs).fillna(1.0),
                    cost=runs["cost/train_macs_total"] / runs["cost/dense_train_macs_total"])
    return d.groupby(["family", "target"]).agg(
        cost=("cost", "mean"), cost_std=("cost", "std"),
        acc=("val/acc", "mean"), acc_std=("val/acc", "std")).fillna(0).reset_index()


def draw(runs, stem: Path, profile: str, store=None) -> list[Path]:
    style.setup()
    p = points(runs)
    fig, ax = plt.subplots(figsize=(6.8, 4.4), layout="constrained")
    for fam, marker in (("growing", "o"), ("pruning from full", "s"), ("dense", "*")):
        d = p[p["family"] == fam].sort_values("target")
        if d.empty:
            continue
        ax.errorbar(d["cost"], d["acc"], xerr=d["cost_std"], yerr=d["acc_std"], marker=marker,
                    ms=11 if fam == "dense" else 7, color=COLORS[fam], lw=1.2, capsize=3, label=fam)
        for r in d.itertuples() if fam != "dense" else []:       # growing above, pruning below
            ax.annotate(f"τ={r.target:g}", (r.cost, r.acc), textcoords="offset points",
                        xytext=(0, 7 if fam == "growing" else -13), ha="center", fontsize=7,
                        color=COLORS[fam])
    ax.set_xlabel("total training MACs / dense (3 × forward, whole schedule)")
    ax.set_ylabel("final validation accuracy (%)")
    ax.set_xlim(0, 1.1)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Figure 1(c) - total training cost against final accuracy "
                 "(panels a, b: diagrams, not drawn)\n" + style.subtitle(runs), fontsize=10)
    return style.save(fig, stem)
