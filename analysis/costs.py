"""Training cost per epoch, read from each run's tracked history: shared by Figures 4 and 14."""

from __future__ import annotations

from .variants import family


def training_cost(runs, store):
    """One row per run and epoch ≥ 1: the epoch's training MACs, cumulative ratio to dense."""
    h = store.histories(runs, r"cost/(train_macs|train_macs_total|dense_train_macs_total)|"
                              r"time/train_s_total")
    wide = h.pivot_table(index=["run_id", "epoch"], columns="key", values="value").reset_index()
    wide = wide[wide["epoch"] >= 1]
    wide["cumulative_ratio"] = wide["cost/train_macs_total"] / wide["cost/dense_train_macs_total"]
    device = runs["device"] if "device" in runs else None
    meta = runs.assign(family=family(runs), device=device)[["run_id", "family", "seed", "device"]]
    wide = wide.merge(meta, on="run_id")
    wide["device"] = wide["device"].fillna("")
    wide["time_ratio"] = float("nan")
    if "time/train_s_total" in wide:       # realised: wall clock / the dense runs' on that device
        dense = wide[(wide["family"] == "dense") & (wide["device"] != "")]
        ref = dense.groupby(["device", "epoch"])["time/train_s_total"].mean()
        wide["time_ratio"] = [t / ref.get((d, e), float("nan")) for t, d, e in
                              zip(wide["time/train_s_total"], wide["device"], wide["epoch"])]
    return wide


def plot_band(ax, d, column, scale=1.0, **kw):
    """Mean over seeds of `column` per epoch, with a min-max band when there are several seeds."""
    s = d.groupby("epoch")[column].agg(["mean", "min", "max"]).reset_index()
    ax.plot(s["epoch"], s["mean"] / scale, **kw)
    if d["run_id"].nunique() > 1:
        ax.fill_between(s["epoch"], s["min"] / scale, s["max"] / scale, color=kw.get("color"),
                        alpha=0.15, lw=0)
