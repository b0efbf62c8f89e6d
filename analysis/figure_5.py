"""Figure 5: Basic3ResNet layer growing - accuracy, complexity and depth over training.

One column per variant (layer growing alone; channel and layer growing together). Top: validation
accuracy of the hard architecture after each epoch. Middle: its params and MACs relative to the
maximum-depth dense network, with the MACs budget. Bottom: active blocks per stage (step 0 = the
seed, one block per stage). With several seeds, lines are means and bands span min to max.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from reproduce import contract

from . import style
from .variants import gates

EXPERIMENTS = ["figure-5"]
KEYS = r"val/acc|cost/(params|macs)|blocks/stage\d+|budget/target"
DENSE = [contract.DENSE_PARAMS, contract.DENSE_MACS]     # constants: one value per run


def curves(runs, store):
    """One row per run and epoch: accuracy, params/MACs ratios to dense, blocks per stage."""
    h = store.histories(runs, KEYS)
    wide = h.pivot_table(index=["run_id", "variant", "seed", "epoch"], columns="key",
                         values="value").reset_index()
    dense = runs.set_index("run_id")[DENSE]
    wide["params_ratio"] = wide[contract.PARAMS] / wide["run_id"].map(dense[contract.DENSE_PARAMS])
    wide["macs_ratio"] = wide[contract.MACS] / wide["run_id"].map(dense[contract.DENSE_MACS])
    return wide


def stage_keys(frame) -> list[str]:
    keys = [k for k in frame.columns if str(k).startswith(contract.BLOCKS)]
    return sorted(keys, key=lambda k: int(k.removeprefix(f"{contract.BLOCKS}stage")))


def band(ax, d, column, **kw):
    s = d.groupby("epoch")[column].agg(["mean", "min", "max"]).reset_index()
    line, = ax.plot(s["epoch"], s["mean"], **kw)
    if d["run_id"].nunique() > 1:
        ax.fill_between(s["epoch"], s["min"], s["max"], color=line.get_color(), alpha=0.15, lw=0)
    return s


def draw(runs, stem: Path, profile: str, store) -> list[Path]:
    style.setup()
    data = curves(runs, store)
    # layer growing alone first, then with channel growing
    joint = gates(runs).str.contains("channels")
    variants = list(dict.fromkeys(runs.assign(_joint=joint).sort_values(["_joint", "variant"])
                                  ["variant"]))
    fig, axes = plt.subplots(3, len(variants), figsize=(4.6 * len(variants), 8.2), sharex="col",
                             squeeze=False, layout="constrained")
    for col, variant in enumerate(variants):
        d = data[data["variant"] == variant]
        r = runs[runs["variant"] == variant].iloc[0]
        ax_acc, ax_cost, ax_depth = axes[:, col]
        acc = d[d["epoch"] >= 1]
        s = band(ax_acc, acc, contract.VAL_ACC, color="C0", lw=2)
        ax_acc.set_title(f"{variant}: {r['model']} (max depth)\nfinal top-1 "
                         f"{s['mean'].iloc[-1]:.1f}%", fontsize=10)
        ax_acc.set(ylabel="validation top-1 (%)")
        band(ax_cost, d, "macs_ratio", color="C3", lw=2, label="MACs / max-depth dense")
        band(ax_cost, d, "params_ratio", color="C2", lw=2, ls="--",
             label="params / max-depth dense")
        if r.get("param.budget.metric") not in (None, "none"):
            target = float(r["param.budget.target"])
            ax_cost.axhline(target, color="0.5", lw=0.8, ls=":",
                            label=f"{r['param.budget.metric']} budget {target:g}")
            if contract.TARGET in d and d[contract.TARGET].notna().any():   # a ramped target
                ramp = d.dropna(subset=[contract.TARGET])
                band(ax_cost, ramp, contract.TARGET, color="0.4", lw=1, drawstyle="steps-pre",
                     label="target of the epoch (budget.target_ramp)")
        final = d[d["epoch"] == d["epoch"].max()]
        ax_cost.set(ylabel="complexity relative to max depth", ylim=(0, 1.05))
        ax_cost.legend(fontsize=7, loc="lower right", title=(
            f"final: {final[contract.PARAMS].mean() / 1e6:.3g}M params, "
            f"{final[contract.MACS].mean() / 1e6:.3g}M MACs"), title_fontsize=7)
        keys = stage_keys(d)
        for key in keys:
            stage = int(key.removeprefix(f"{contract.BLOCKS}stage"))
            band(ax_depth, d, key, color=style.stage_colors(stage, 3)[-1], lw=2,
                 drawstyle="steps-post", label=f"stage {stage}")
        depth = "-".join(f"{final[k].mean():g}" for k in keys)
        ax_depth.set(xlabel="epoch (0 = seed)", ylabel="active blocks per stage",
                     ylim=(0, None))
        ax_depth.set_title(f"found depth {depth}", fontsize=9)
        ax_depth.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax_depth.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_depth.legend(fontsize=8, loc="lower right")
    fig.suptitle("Figure 5 - Basic3ResNet layer growing: accuracy, complexity and depth over "
                 f"training\n{style.subtitle(runs)}", fontsize=11)
    return style.save(fig, stem)
