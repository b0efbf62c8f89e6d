"""Per-structure temperature β during channel growing: shared by Figures 12 (`separate`
schedule) and 13 (`separate_decayed`).

From the run's per-structure trace (β of every channel after every epoch; epoch 0 = seed): one
panel per gate (a block's inner convs, or a stage's residual stream), with the 10-90% and 25-75%
quantile bands and the median of β over the gate's channels, the global schedule β_0·γ^t for
reference, and three random channels drawn thin (green: on at the end, red: off).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np

from . import style


def gate_label(info: dict) -> str:
    """A gate by what it gates (from architecture.json): a stage's stream, or its writing layer."""
    if info["role"] == "stream":
        return f"stage {info['stage']} stream"
    writer = info["layers"][0]
    return f"{writer} (inner)" if info["role"] == "inner" else writer


def quantiles(traces):
    """Per gate and epoch: β quantiles over the gate's structures."""
    q = traces.groupby(["gate", "epoch"])["beta"].quantile([0.1, 0.25, 0.5, 0.75, 0.9])
    return q.unstack().reset_index()


def draw_traces(runs, stem: Path, figure: str, store, examples: int = 3) -> list[Path]:
    """The shared drawing of figures 12 and 13 (one run: the lowest seed)."""
    style.setup()
    run = runs.sort_values("seed").iloc[[0]]
    r = run.iloc[0]
    traces = store.traces(r["run_id"])
    info = store.gates(r["run_id"])
    gates = list(dict.fromkeys(traces["gate"]))                    # network order
    q = quantiles(traces)
    last = traces[traces["epoch"] == traces["epoch"].max()].set_index(["gate", "index"])["active"]
    epochs = int(r["param.train.epochs"])
    b0, bT = float(r["param.temperature.beta_0"]), float(r["param.temperature.beta_final"])
    ramp = float(r.get("param.temperature.ramp_fraction", 1.0))
    ramp_epochs = max(1, min(epochs, round(ramp * epochs)))
    t = np.arange(traces["epoch"].max() + 1)
    # global schedule: β_0 in epoch 1 (step 1), β_T after `ramp_epochs` epochs, then flat
    reference = np.minimum(bT, b0 * (bT / b0) ** (np.clip(t - 1, 0, None) / max(1, ramp_epochs - 1)))
    ncols = 4
    nrows = -(-len(gates) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.35 * nrows + 0.9), sharex=True,
                             sharey=True, squeeze=False, layout="constrained")
    rng = np.random.default_rng(0)
    for ax, gate in zip(axes.flat, gates):
        d = q[q["gate"] == gate]
        ax.fill_between(d["epoch"], d[0.1], d[0.9], color="C0", alpha=0.18, lw=0, label="10-90%")
        ax.fill_between(d["epoch"], d[0.25], d[0.75], color="C0", alpha=0.35, lw=0, label="25-75%")
        ax.plot(d["epoch"], d[0.5], color="C0", lw=1.8, label="median", zorder=4)
        ax.plot(t, reference, color="0.4", ls="--", lw=0.9, label="global β schedule", zorder=5)
        g = traces[traces["gate"] == gate]
        picked = rng.choice(g["index"].unique(), min(examples, g["index"].nunique()), replace=False)
        for i in picked:
            s = g[g["index"] == i]
            on = bool(last.get((gate, i), False))
            ax.plot(s["epoch"], s["beta"], color="C2" if on else "C3", lw=0.8, alpha=0.9,
                    label="one channel, on at end" if on else "one channel, off at end")
        n_on, n = int(last.loc[gate].sum()), int(last.loc[gate].size)
        ax.set_title(f"{gate_label(info[gate])} ({n_on}/{n} on)", fontsize=9)
        ax.set_yscale("log")
    for ax in axes.flat[len(gates):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("β (log)")
    for ax in axes.flat[max(0, len(gates) - ncols):len(gates)]:    # the lowest panel of each column
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelbottom=True)
    handles = {}
    for ax in axes.flat[:len(gates)]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=6, fontsize=8)
    schedule = r["param.temperature.schedule"]
    fig.suptitle(f"{figure} - per-structure temperature β, `{schedule}` schedule, "
                 f"channel growing\n" + style.subtitle(run), fontsize=11)
    return style.save(fig, stem)
