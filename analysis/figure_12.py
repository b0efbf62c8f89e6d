"""Figure 12: per-structure temperature β during channel growing, `separate` schedule.

Under `separate`, a structure's β_i is multiplied by γ only in epochs where it is active, so
structures that were on longer are harder (closer to binary). From the run's per-structure trace
(β of every channel after every epoch; epoch 0 = seed): one panel per gate (a block's inner convs,
or a stage's residual stream), with the 10-90% and 25-75% quantile bands and the median of β over
the gate's channels, the global schedule β_0·γ^t for reference, and three random channels drawn
thin (green: on at the end, red: off). Figure 13 is the same plot for `separate_decayed`.
"""

from __future__ import annotations

from pathlib import Path

from .traces import draw_traces

EXPERIMENTS = ["figure-12"]


def draw(runs, stem: Path, profile: str, store) -> list[Path]:
    return draw_traces(runs, stem, "Figure 12", store)
