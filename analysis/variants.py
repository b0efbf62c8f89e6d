"""The one taxonomy of tracked runs, read from their tracked config (never from variant strings).

Every figure and table names its runs through these axes:

  kind      what trained the run: dense (full width), uniform (a narrower dense net), grow (the
            method), l1_norm or slimming (the pruning baselines, by criterion), autogrow
  start     where the method started: seed (growing) or full (pruning from the full network);
            blank for every other kind
  gates     what the run gates: channels, blocks or blocks+channels (layer growing with or
            without channel growing); blank without gates
  ablation  which part of the method a run changes: ours, w/o sampling, w/o budget (fixed λ),
            or a β schedule (`separate β`, ...)
  target    the budget target τ (NaN for runs without budget control or without gates)
  network   the model without its depth: a model named by its maximum depth per stage
            (basic3resnet-16-16-16) belongs to the network basic3resnet, max_depth 16-16-16

`family` is the figures' name for kind and start together.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

# How a budget metric is written in titles and labels.
METRIC_NAMES = {"macs": "MACs", "params": "params", "none": "no"}

# Fixed colours so a variant looks the same in every figure.
COLORS = {"growing": "C0", "pruning from full": "C3", "dense": "0.15",
          "ours": "C0", "w/o sampling": "C1", "separate β": "C2", "separate_decayed β": "C4",
          "w/o budget (fixed λ)": "C7"}

PRUNING_BASELINES = ("l1_norm", "slimming")
FAMILIES = {("grow", "seed"): "growing", ("grow", "full"): "pruning from full",
            ("dense", ""): "dense", ("uniform", ""): "dense",
            **{(c, ""): "pruning baseline" for c in PRUNING_BASELINES}, ("autogrow", ""): "growing"}


def param(runs: pd.DataFrame, key: str, default=None) -> pd.Series:
    """A config value of every run (`param.<key>`), or `default` where the frame lacks it."""
    col = f"param.{key}"
    if col in runs:
        return runs[col]
    return pd.Series([default] * len(runs), index=runs.index, dtype=object)


def _kind(method: str, width: float, criterion) -> str:
    if method == "prune":
        return str(criterion)
    if method == "dense":
        return "dense" if math.isclose(width, 1.0) else "uniform"
    return method


def kind(runs: pd.DataFrame) -> pd.Series:
    method = param(runs, "method", "grow").astype(str)
    width = pd.to_numeric(param(runs, "model.width_multiplier", 1.0))
    criterion = param(runs, "baseline.criterion")
    return pd.Series([_kind(m, w, c) for m, w, c in zip(method, width, criterion)],
                     index=runs.index, dtype=object)


def start(runs: pd.DataFrame) -> pd.Series:
    """Full: every channel on at the start and, where blocks are gated, every block too."""
    every_block = (param(runs, "gates.seed_blocks", "one_per_stage") == "all") \
        | (param(runs, "model.gate_blocks", "False").astype(str) != "True")
    full = (pd.to_numeric(param(runs, "gates.seed_fraction", 0.25)) >= 1.0) & every_block
    return pd.Series(np.where(kind(runs) == "grow", np.where(full, "full", "seed"), ""),
                     index=runs.index, dtype=object)


def gates(runs: pd.DataFrame) -> pd.Series:
    blocks = param(runs, "model.gate_blocks", "False").astype(str) == "True"
    channels = param(runs, "model.gate_channels", "True").astype(str) == "True"
    gated = ~kind(runs).isin(["dense", "uniform"])
    names = [("+".join(n for n, on in (("blocks", b), ("channels", c)) if on) if g else "")
             for b, c, g in zip(blocks, channels, gated)]
    return pd.Series(names, index=runs.index, dtype=object)


def family(runs: pd.DataFrame) -> pd.Series:
    """growing, pruning from full, dense (any width) or pruning baseline."""
    if not len(runs):
        return pd.Series(dtype=str)
    return pd.Series([FAMILIES.get((k, s), k) for k, s in zip(kind(runs), start(runs))],
                     index=runs.index, dtype=object)


def ablation(runs: pd.DataFrame) -> pd.Series:
    """Which part of the method a run changes: ours, w/o sampling, w/o budget, or a β schedule."""
    def one(metric, sampling, schedule) -> str:
        if metric == "none":
            return "w/o budget (fixed λ)"
        if sampling == "deterministic":
            return "w/o sampling"
        if schedule != "global":
            return f"{schedule} β"
        return "ours"
    if not len(runs):
        return pd.Series(dtype=str)
    return pd.Series([one(*v) for v in zip(param(runs, "budget.metric", "macs"),
                                           param(runs, "gates.sampling", "bernoulli"),
                                           param(runs, "temperature.schedule", "global"))],
                     index=runs.index, dtype=object)


def target(runs: pd.DataFrame) -> pd.Series:
    """Budget target τ (NaN for runs without budget control or without gates)."""
    t = pd.to_numeric(param(runs, "budget.target"), errors="coerce").astype(float)
    return t.where((param(runs, "budget.metric", "macs") != "none")
                   & (param(runs, "method", "grow") != "dense"))


def network(runs: pd.DataFrame) -> pd.Series:
    return runs["model"].astype(str).str.partition("-")[0]


def max_depth(runs: pd.DataFrame) -> pd.Series:
    return runs["model"].astype(str).str.partition("-")[2]


def si_scale(values) -> tuple[float, str]:
    """A power of 10^3 that puts the largest value between 1 and 1000, and its prefix."""
    top = max((abs(v) for v in values if v == v), default=1.0) or 1.0
    k = max(0, min(5, int(math.floor(math.log10(top) / 3))))
    return 10.0 ** (3 * k), ["", "K", "M", "G", "T", "P"][k]
