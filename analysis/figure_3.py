"""Figure 3: MobileNetV1 top-1 against inference MACs — growing against uniform width multipliers.

x = inference MACs per image of the run's final (hard) architecture at the runs' input size;
y = final validation top-1. Drawn: the method (channel growing from a 25 % seed) at each MACs
budget τ, points labelled τ and joined in MACs order; the uniform width multipliers α (dense
networks without gates; α = 1 is the dense network), joined and labelled α; and the paper's
points from analysis/reference.csv (table `figure-3`), drawn only where both their top-1 and
MACs are known and the runs are on the paper's dataset (none are known here). Mean over seeds,
error bars ±1 std. The sidecar figure-3.runs.json names the runs.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from . import style
from .reference import reference
from .variants import COLORS, family

EXPERIMENTS = ["figure-3"]
REFERENCE_TABLE = "figure-3"
UNIFORM = "uniform width"
UNIFORM_COLOR = "C1"
PAPER_COLOR = "C3"


def points(runs: pd.DataFrame) -> pd.DataFrame:
    """One point per variant: family, width α, budget τ, MACs (M) and top-1, mean and std over
    seeds, and the MLflow run ids."""
    d = pd.DataFrame({
        "variant": runs["variant"], "run_id": runs["run_id"],
        "family": family(runs).replace({"dense": UNIFORM}),
        "width": pd.to_numeric(runs["param.model.width_multiplier"]),
        "target": pd.to_numeric(runs["param.budget.target"]),
        "macs": pd.to_numeric(runs["cost/macs"]) / 1e6,
        "top1": pd.to_numeric(runs["val/acc"])})
    d.loc[d["family"] == UNIFORM, "target"] = float("nan")
    return d.groupby(["family", "variant"]).agg(
        width=("width", "first"), target=("target", "first"),
        macs=("macs", "mean"), macs_std=("macs", "std"),
        top1=("top1", "mean"), top1_std=("top1", "std"),
        seeds=("run_id", "size"), run_ids=("run_id", ";".join)).fillna(
        {"macs_std": 0.0, "top1_std": 0.0}).reset_index()


def paper_points(datasets, reference_path=None) -> tuple[pd.DataFrame, int]:
    """The paper's points on these datasets with both top-1 and MACs known, and how many known
    points are on other datasets (not drawn: their MACs are at another input size)."""
    ref = reference(REFERENCE_TABLE, reference_path)
    ref = ref[ref["value"].notna()]
    wide = ref.pivot_table(index=["model", "dataset", "method", "variant", "source"],
                           columns="metric", values="value").reset_index()
    if not {"top1", "macs"} <= set(wide.columns):
        return pd.DataFrame(columns=["method", "variant", "macs", "top1", "source"]), 0
    wide = wide.dropna(subset=["top1", "macs"])
    here = wide["dataset"].isin(set(datasets))
    return wide[here].reset_index(drop=True), int((~here).sum())


def draw(runs, stem: Path, profile: str, store=None, reference_path=None) -> list[Path]:
    style.setup()
    p = points(runs)
    fig, ax = plt.subplots(figsize=(7.2, 4.8), layout="constrained")
    for fam, marker, color, key, sym in ((UNIFORM, "s", UNIFORM_COLOR, "width", "α"),
                                         ("growing", "o", COLORS["growing"], "target", "τ")):
        d = p[p["family"] == fam].sort_values("macs")
        if d.empty:
            continue
        label = "uniform width multiplier α (dense)" if fam == UNIFORM else \
            "growing (Yuan et al. 2021) at MACs budget τ"
        ax.errorbar(d["macs"], d["top1"], xerr=d["macs_std"], yerr=d["top1_std"], marker=marker,
                    ms=7, color=color, lw=1.2, capsize=3, label=label)
        for r in d.itertuples():
            ax.annotate(f"{sym}={getattr(r, key):g}", (r.macs, r.top1), textcoords="offset points",
                        xytext=(0, 7 if fam == "growing" else -13), ha="center", fontsize=7,
                        color=color)
    datasets = sorted(runs["dataset"].unique())
    paper, elsewhere = paper_points(datasets, reference_path)
    for method, d in paper.groupby("method"):
        name = "growing" if method == "grow" else method
        ax.plot(d["macs"], d["top1"], "*", ms=12, color=PAPER_COLOR, ls="none",
                label=f"{name} (paper: {'; '.join(sorted(set(d['source'])))})")
    if paper.empty:
        note = ("paper points: none known (analysis/reference.csv, table figure-3, is blank)"
                if not elsewhere else
                f"paper points: {elsewhere} known on another dataset, not drawn beside "
                f"{', '.join(datasets)} runs")
        ax.text(0.99, 0.02, note, transform=ax.transAxes, ha="right", va="bottom", fontsize=7,
                color="0.35")
    sizes = sorted({int(float(s)) for s in runs.get("param.data.image_size", pd.Series(dtype=str))
                    .dropna()})
    at = f" at {', '.join(f'{s} px' for s in sizes)}" if sizes else ""
    ax.set_xlabel(f"inference MACs per image (M){at}, final architecture")
    ax.set_ylabel("final validation top-1 (%)")
    ax.set_xlim(0, None)
    ax.legend(fontsize=8, loc="upper left")
    devices = ", ".join(sorted(set(runs["device"].dropna()))) if "device" in runs else ""
    ax.set_title("Figure 3 - MobileNetV1: top-1 against inference MACs, growing vs uniform "
                 "width\n" + style.subtitle(runs) + (f"; trained on {devices}" if devices else ""),
                 fontsize=10)
    return style.save(fig, stem)
