"""Readable names for runs, read from their tracked config (never parsed from variant strings)."""

from __future__ import annotations

import pandas as pd

# How a budget metric is written in titles and labels.
METRIC_NAMES = {"macs": "MACs", "params": "params", "none": "no"}

# Fixed colours so a variant looks the same in every figure.
COLORS = {"growing": "C0", "pruning from full": "C3", "dense": "0.15",
          "ours": "C0", "w/o sampling": "C1", "separate β": "C2", "separate_decayed β": "C4",
          "w/o budget (fixed λ)": "C7"}


def family(runs: pd.DataFrame) -> pd.Series:
    """growing (from a small seed), pruning from full (the method with every channel on at the
    start), dense, or a pruning baseline (method: prune: train dense, prune once, fine-tune)."""
    def one(r) -> str:
        if r["param.method"] in ("dense", "prune"):
            return "dense" if r["param.method"] == "dense" else "pruning baseline"
        return "pruning from full" if float(r["param.gates.seed_fraction"]) >= 1.0 else "growing"
    return runs.apply(one, axis=1) if len(runs) else pd.Series(dtype=str)


def ablation(runs: pd.DataFrame) -> pd.Series:
    """Which part of the method a run changes: ours, w/o sampling, w/o budget, or a β schedule."""
    def one(r) -> str:
        if r["param.budget.metric"] == "none":
            return "w/o budget (fixed λ)"
        if r["param.gates.sampling"] == "deterministic":
            return "w/o sampling"
        if r["param.temperature.schedule"] != "global":
            return f"{r['param.temperature.schedule']} β"
        return "ours"
    return runs.apply(one, axis=1) if len(runs) else pd.Series(dtype=str)


def target(runs: pd.DataFrame) -> pd.Series:
    """Budget target τ (NaN for runs without budget control or without gates)."""
    t = runs["param.budget.target"].astype(float)
    return t.where((runs["param.budget.metric"] != "none") & (runs["param.method"] != "dense"))


def si_scale(values) -> tuple[float, str]:
    """A power of 10^3 that puts the largest value between 1 and 1000, and its prefix."""
    import math
    top = max((abs(v) for v in values if v == v), default=1.0) or 1.0
    k = max(0, min(5, int(math.floor(math.log10(top) / 3))))
    return 10.0 ** (3 * k), ["", "K", "M", "G", "T", "P"][k]
