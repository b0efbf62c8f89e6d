"""Final per-layer channel counts of the method and its ablations: shared by Figures 6 (params
targets) and 11 (MACs targets).

One panel per target τ. Grey bars: the dense widths; lines: the final hard architecture
(architecture.json) of the method and each ablation (the run without budget control has no
target: the same run in every panel). The legend gives the cost each run ended with, relative to
dense. Layers sharing a residual stream share one gate per stage.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt

from . import style
from .variants import COLORS, METRIC_NAMES, ablation, target

ORDER = ["ours", "w/o sampling", "separate β", "separate_decayed β", "w/o budget (fixed λ)"]


def short(layer: str) -> str:
    """layer2.0.shortcut.0 -> 2.0.sc, layer1.1.conv2 -> 1.1.c2, conv1 -> conv1."""
    if not layer.startswith("layer"):
        return layer
    return re.sub(r"\.conv(\d)", r".c\1", layer.removeprefix("layer")).replace(".shortcut.0", ".sc")


def counts(runs, store):
    """Final channel count per variant, target and layer (mean over seeds), with dense widths."""
    arch = store.architectures(runs).merge(
        runs.assign(ablation=ablation(runs), target=target(runs))[["run_id", "ablation", "target"]],
        on="run_id")
    return arch.groupby(["ablation", "target", "order", "layer"], dropna=False).agg(
        width=("width", "mean"), dense_width=("dense_width", "first")).reset_index()


def draw_counts(runs, stem: Path, figure: str, metric: str, store) -> list[Path]:
    """The shared drawing of figures 6 (metric = params) and 11 (metric = macs)."""
    style.setup()
    data = counts(runs, store)
    usage = (runs[f"cost/{metric}"] / runs[f"cost/dense_{metric}"]).groupby(
        [ablation(runs), target(runs).fillna(-1)]).mean()
    targets = sorted(data["target"].dropna().unique())
    layers = data.drop_duplicates("order").sort_values("order")
    fig, axes = plt.subplots(len(targets), 1, figsize=(11, 2.6 * len(targets) + 0.8), sharex=True,
                             squeeze=False, layout="constrained")
    for ax, tau in zip(axes[:, 0], targets):
        ax.bar(layers["order"], layers["dense_width"], color="0.88", width=0.8, label="dense width")
        panel = data[(data["target"] == tau) | data["target"].isna()]
        names = [n for n in ORDER if n in set(panel["ablation"])]
        for k, name in enumerate(names):
            d = panel[panel["ablation"] == name].sort_values("order")
            used = usage.get((name, tau if d["target"].notna().any() else -1), float("nan"))
            dodge = 0.5 * (k / max(1, len(names) - 1) - 0.5)     # equal counts stay visible
            ax.plot(d["order"] + dodge, d["width"], marker="o", ms=3.5, lw=1.2, color=COLORS[name],
                    ls=":" if name.startswith("w/o budget") else "-",
                    label=f"{name}: {METRIC_NAMES[metric]} {used:.2f}× dense")
        ax.set_title(f"{METRIC_NAMES[metric]} target τ = {tau:g} of dense", fontsize=10,
                     loc="left")
        ax.set_ylabel("channels")
        ax.legend(fontsize=7, loc="upper left", ncol=3, framealpha=0.9)
        ax.set_ylim(-0.04 * layers["dense_width"].max(), layers["dense_width"].max() * 1.45)
    axes[-1, 0].set_xticks(layers["order"], [short(la) for la in layers["layer"]], rotation=60,
                           fontsize=8)
    axes[-1, 0].set_xlabel("layer (c1/c2: a block's first/second conv, sc: projection shortcut)")
    fig.suptitle(f"{figure} - final channels per layer of the method and its ablations at "
                 f"several {METRIC_NAMES[metric]} targets\n" + style.subtitle(runs),
                 fontsize=11)
    return style.save(fig, stem)
