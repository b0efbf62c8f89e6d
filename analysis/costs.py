"""Training cost, counted and realised: per epoch for Figures 4 and 14, per run for the tables.

Realised cost is measured the way that is comparable across runs on their device: the process's
CPU time on a CPU (`time/train_cpu_s_total`: it does not count the time other processes held
the cores, though it is not immune to them: bench/README.md), else the wall clock
(`time/train_s_total`; on a GPU read with the device synchronised). Stores tracked before CPU
time was logged have the wall clock only. A run is compared with the dense runs of its model
with the same `device` tag (the device, its threads, and how many runs its command trained at
once) in the same measure.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from reproduce import contract

from .variants import family

CPU, WALL = "CPU time", "wall clock"


def realised_savings(out: pd.DataFrame) -> pd.Series:
    """Per run (columns model, kind, device, wall_time_s, cpu_time_s): sets train_time_s and
    time_measure, and returns 100 × (1 − its time / the mean of the dense runs' in that measure
    with that device tag); NaN without such a dense run."""
    cpu = out["cpu_time_s"].notna()
    out["train_time_s"] = np.where(cpu, out["cpu_time_s"], out["wall_time_s"])
    out["time_measure"] = np.where(cpu, CPU, WALL)
    dense = out[(out["kind"] == "dense") & (out["device"] != "")]
    ref = dense.groupby(["model", "device", "time_measure"])["train_time_s"].mean()
    keys = zip(out["model"], out["device"], out["time_measure"])
    return 100.0 * (1.0 - out["train_time_s"] / pd.Series([ref.get(k, np.nan) for k in keys],
                                                          index=out.index, dtype=float))


def training_cost(runs, store):
    """One row per run and epoch ≥ 1: the epoch's training MACs, cumulative ratio to dense."""
    h = store.histories(runs, r"cost/(train_macs|train_macs_total|dense_train_macs_total)|"
                              r"time/train_(cpu_)?s_total")
    wide = h.pivot_table(index=["run_id", "epoch"], columns="key", values="value").reset_index()
    wide = wide[wide["epoch"] >= 1]
    wide["cumulative_ratio"] = wide["cost/train_macs_total"] / wide["cost/dense_train_macs_total"]
    device = runs["device"] if "device" in runs else None
    meta = runs.assign(family=family(runs), device=device)[["run_id", "family", "seed", "device"]]
    wide = wide.merge(meta, on="run_id")
    wide["device"] = wide["device"].fillna("")
    wide["time_ratio"] = float("nan")
    wall = wide.get(contract.TRAIN_TIME_TOTAL, pd.Series(np.nan, index=wide.index))
    cpu = wide.get(contract.TRAIN_CPU_TIME_TOTAL, pd.Series(np.nan, index=wide.index))
    has_cpu = cpu.notna().groupby(wide["run_id"]).transform("all")
    wide["time"] = np.where(has_cpu, cpu, wall)
    wide["time_measure"] = np.where(has_cpu, CPU, WALL)
    dense = wide[(wide["family"] == "dense") & (wide["device"] != "")]
    ref = dense.groupby(["device", "time_measure", "epoch"])["time"].mean()
    wide["time_ratio"] = [t / ref.get(k, np.nan) for t, k in
                          zip(wide["time"], zip(wide["device"], wide["time_measure"], wide["epoch"]))]
    return wide


def plot_band(ax, d, column, scale=1.0, **kw):
    """Mean over seeds of `column` per epoch, with a min-max band when there are several seeds."""
    s = d.groupby("epoch")[column].agg(["mean", "min", "max"]).reset_index()
    ax.plot(s["epoch"], s["mean"] / scale, **kw)
    if d["run_id"].nunique() > 1:
        ax.fill_between(s["epoch"], s["min"] / scale, s["max"] / scale, color=kw.get("color"),
                        alpha=0.15, lw=0)
