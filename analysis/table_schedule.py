"""Table: what growing costs on short schedules (experiments/study-schedule.yaml).

Per model and schedule length: dense, uniform width at the same MACs and channel growing at a
MACs budget of 0.5, and the differences that matter — growing against uniform width and against
dense — with the epoch at which growing first reached 90 % of its budget (the end of its
exploration phase), also as a share of the schedule. The full-schedule rows are table-cifar's
runs; the half-schedule rows show how the comparison moves when the exploration phase is a
larger share of training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import tables

EXPERIMENTS = ["study-schedule"]
TITLE = "Table: growing against uniform width and dense as the schedule shortens (MACs ≤ 0.5)"
KINDS = ["dense", "uniform", "grow"]


def rows(runs: pd.DataFrame, store) -> pd.DataFrame:
    """One row per (model, epochs): each kind's top-1 mean/std, the gaps, growth dynamics."""
    epochs = pd.to_numeric(runs["param.train.epochs"]).astype(int)
    # savings against the dense run of the same schedule: one per_run frame per length
    measured = pd.concat([tables.per_run(runs[epochs == e]).assign(epochs=e)
                          for e in sorted(epochs.unique())], ignore_index=True)
    measured = measured.merge(tables.dynamics(runs, store), on="run_id", how="left")
    agg = tables.aggregate(measured, keys=["model", "epochs", "kind"],
                           metrics=["top1", "train_savings", "macs_ratio", "epoch_at_budget"])
    out = []
    for (model, epochs), g in agg.groupby(["model", "epochs"], sort=False):
        by = {r["kind"]: r for _, r in g.iterrows()}
        row = {"model": model, "epochs": int(epochs), "dataset": g["dataset"].iloc[0]}
        for k in KINDS:
            r = by.get(k)
            row[f"{k}_top1_mean"] = r["top1_mean"] if r is not None else np.nan
            row[f"{k}_top1_std"] = r["top1_std"] if r is not None else np.nan
            row[f"{k}_seeds"] = int(r["n_seeds"]) if r is not None else 0
            row[f"{k}_run_ids"] = r["run_ids"] if r is not None else ""
            row[f"{k}_top1_by_seed"] = r["by_seed"]["top1"] if r is not None else None
        grow = by.get("grow")
        row["grow_macs_ratio"] = grow["macs_ratio_mean"] if grow is not None else np.nan
        row["grow_train_savings"] = grow["train_savings_mean"] if grow is not None else np.nan
        row["epoch_at_budget"] = grow["epoch_at_budget_mean"] if grow is not None else np.nan
        row["grow_minus_uniform"] = row["grow_top1_mean"] - row["uniform_top1_mean"]
        row["grow_minus_dense"] = row["grow_top1_mean"] - row["dense_top1_mean"]
        out.append(row)
    frame = pd.DataFrame(out)
    if frame.empty:
        return frame
    return frame.sort_values(["model", "epochs"], ascending=[True, False]).reset_index(drop=True)


def _signed(v: float) -> str:
    return "" if pd.isna(v) else f"{v:+.2f}"


def draw(runs, stem: Path, profile: str, store) -> list[Path]:
    r = rows(runs, store)
    fmt = tables.mean_std
    display = pd.DataFrame({
        "model": list(r["model"]),
        "epochs": list(r["epochs"]),
        **{label: [fmt(a, b, "top1") for a, b in zip(r[f"{k}_top1_mean"], r[f"{k}_top1_std"])]
           for k, label in (("dense", "dense (%)"), ("uniform", "uniform width (%)"),
                            ("grow", "growing (%)"))},
        "growing − uniform": [_signed(v) for v in r["grow_minus_uniform"]],
        "growing − dense": [_signed(v) for v in r["grow_minus_dense"]],
        "growing MACs / dense": ["" if pd.isna(v) else f"{v:.3f}" for v in r["grow_macs_ratio"]],
        "training savings (%)": [tables.num(v, "train_savings") for v in r["grow_train_savings"]],
        "epoch at 90 % of budget": ["" if pd.isna(v) else f"{v:.1f} ({100 * v / e:.0f} %)"
                                    for v, e in zip(r["epoch_at_budget"], r["epochs"])],
        "seeds": [f"{a}/{b}/{c}" for a, b, c in
                  zip(r["dense_seeds"], r["uniform_seeds"], r["grow_seeds"])],
    })
    csv = r.drop(columns=[c for c in r.columns if c.endswith(("_run_ids", "_by_seed"))]).assign(
        run_ids=[";".join(filter(None, (a, b, c))) for a, b, c in
                 zip(r["dense_run_ids"], r["uniform_run_ids"], r["grow_run_ids"])])
    notes = ["Rows: each model at the CIFAR table's smoke schedule and at half of it. Growing "
             "targets 0.5 of dense MACs; uniform width scales every layer to the same MACs. "
             "Gaps are differences of the means, in points; on 360 validation images one image "
             "is 0.28 points.",
             "Epoch at 90 % of budget: the first epoch whose hard architecture reached 90 % of the "
             "target (mean over seeds) and its share of the schedule: the exploration phase."]
    run_ids = [list(filter(None, ";".join((a, b, c)).split(";"))) for a, b, c in
               zip(r["dense_run_ids"], r["uniform_run_ids"], r["grow_run_ids"])]
    comparisons = [tables.compare_values(
        list(r["grow_top1_by_seed"]), list(r[f"{k}_top1_by_seed"]), [name] * len(r),
        suffix=f" (growing − {name})", prefix=f"{k}_", show_reference=False, show_delta=False,
        references="growing minus uniform width and growing minus dense, of the same model "
                   "and schedule, as the headers say (the gap columns give the difference)")
        for k, name in (("uniform", "uniform"), ("dense", "dense"))]
    return tables.write_rows(stem, r, display, csv, title=TITLE, profile=profile, n_left=2,
                             notes=notes, run_ids=run_ids, groups=None, comparisons=comparisons,
                             names="{model} {epochs} epochs (dense, uniform, growing)",
                             columns_note="Top-1: mean ± sample std over seeds. Training savings: "
                             "growing's training MACs against the dense run of the same schedule.")
