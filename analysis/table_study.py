"""Table: the study behind the method's defaults (experiments/study-fidelity.yaml and
experiments/study-growth-push.yaml).

Growing to 0.5 of dense MACs, smoke profile. ResNet-20 (15 epochs): the dense and uniform-width
references; "before" (the formulation as first built) and one change added to it per row;
"defaults" (the method now) and one change taken away per row. ResNet-56 (20 epochs, five
seeds): the default growth push against the uniform one, with its own references. Columns as
in the CIFAR table, plus what the changes were made for: validation accuracy after epoch 2 (is
the hard network measured correctly early?), the largest MACs usage over the run (did growth
overshoot to the full network before being pruned back?) and the first epoch at which usage
reached 90 % of the budget (how fast the network grew).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import tables

EXPERIMENTS = ["study-fidelity", "study-growth-push"]
TITLE = "Table: the study behind the method's defaults (MACs ≤ 0.5)"
ORDER = ["dense", "uniform-50", "before", "defaults", "grow-50"]


def rows(runs: pd.DataFrame, store) -> pd.DataFrame:
    measured = tables.per_run(runs).merge(tables.dynamics(runs, store), on="run_id", how="left")
    measured["epochs"] = measured["run_id"].map(
        dict(zip(runs["run_id"], runs["param.train.epochs"].astype(int))))
    extra = ["acc_epoch2", "max_usage", "epoch_at_budget"]
    out = tables.aggregate(measured, metrics=[*tables.METRICS, "macs_ratio", "train_macs_total",
                                              *extra])
    rank = {v: i for i, v in enumerate(ORDER)}
    out["order"] = [rank.get(v, len(ORDER) + (0 if v.startswith("before") else 1))
                    for v in out["variant"]]
    parts = []
    for _, model in out.groupby("model", sort=True):      # resnet20's study, then resnet56's
        grouped = model.sort_values(["order", "variant"]).reset_index(drop=True)
        # "before+..." rows right after "before", "defaults-..." rows after "defaults"
        before = grouped[grouped["variant"].str.startswith("before")]
        after = grouped[grouped["variant"].str.startswith("defaults")]
        refs = grouped[~grouped.index.isin(before.index) & ~grouped.index.isin(after.index)]
        parts += [refs, before, after]
    return pd.concat(parts, ignore_index=True)


MAIN = ("defaults", "grow-50")       # the method as it stands, per model's study


def references(r: pd.DataFrame) -> list:
    """Each row's reference, within its model: the method as it stands (`defaults`, `grow-50`)
    against dense; `before` and every other row that is not a change of `before` against the
    method as it stands (uniform width included); `before+<change>` against `before`; dense
    none."""
    out = []
    for _, row in r.iterrows():
        model = r.index[r["model"] == row["model"]]
        def at(variants):
            hit = [r.index.get_loc(i) for i in model if r.at[i, "variant"] in variants]
            return hit[0] if hit else None
        v = row["variant"]
        if row["kind"] == "dense":
            out.append(None)
        elif v in MAIN:
            out.append(at(["dense"]))
        elif v.startswith("before+"):
            out.append(at(["before"]))
        else:
            out.append(at(MAIN))
    return out


def draw(runs, stem: Path, profile: str, store) -> list[Path]:
    r = rows(runs, store)
    fmt = tables.mean_std
    display = pd.DataFrame({
        "model": list(r["model"]),
        "epochs": [int(v) for v in r["epochs"]],
        "variant": list(r["variant"]),
        "top-1 (%)": [fmt(a, b, "top1") for a, b in zip(r["top1_mean"], r["top1_std"])],
        "MACs / dense": [f"{v:.3f}" for v in r["macs_ratio_mean"]],
        "training savings (%)": [fmt(a, b, "train_savings")
                                 for a, b in zip(r["train_savings_mean"], r["train_savings_std"])],
        "top-1 after epoch 2 (%)": [fmt(a, b, "top1")
                                    for a, b in zip(r["acc_epoch2_mean"], r["acc_epoch2_std"])],
        "largest usage": ["–" if np.isnan(v) or r["kind"].iloc[i] != "grow" else f"{v:.2f}"
                          for i, v in enumerate(r["max_usage_mean"])],
        "epoch at 90 % of budget": ["–" if np.isnan(v) or r["kind"].iloc[i] != "grow"
                                    else f"{v:.1f}" for i, v in enumerate(r["epoch_at_budget_mean"])],
        "seeds": list(r["n_seeds"]),
    })
    csv = tables.csv_frame(r, ["model", "variant"]).assign(
        **{c: r[c] for c in r.columns if c.startswith(("acc_epoch2", "max_usage", "epoch_at"))})
    notes = ["before = s_on 0.5, beta_0 1, beta_final in the last epoch, no logit spread, no BN "
             "recalibration, no warm-up; defaults = the method's current defaults "
             "(docs/METHOD.md explains each); grow-50-uniform-push = the defaults with the "
             "growth push of before (budget.growth_push: uniform)."]
    comparison = tables.compare(r, references(r), references="this row minus the row "
                                "named under `reference`, of the same model (defaults / grow-50 "
                                "against dense, before+<change> against before, every other row "
                                "against defaults / grow-50)")
    return tables.write_rows(stem, r, display, csv, title=TITLE, profile=profile, n_left=3,
                             notes=notes, names="{model}/{variant}", groups=None,
                             comparisons=[comparison])
