"""Table: VGG-16, ResNet-20 and ResNet-56 on CIFAR-10 — the method against measured baselines.

Rows per model: the dense network; the method (channel growing) at two budgets; and baselines
trained by this suite under the same tracking and cost accounting at the same MACs: uniform width
scaling (a narrower dense net), L1-norm filter pruning with fine-tuning (Li et al. 2017) and
network slimming (Liu et al. 2017). Columns: top-1 (mean ± std over seeds), params, inference
MACs, inference savings and training savings against the dense row (counted in MACs, and realised
in CPU time or wall clock on the device named beside it), the paper's values from
analysis/reference.csv (blank where unknown) and the MLflow runs behind each row.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import tables

EXPERIMENTS = ["table-cifar-vgg16", "table-cifar-resnet20", "table-cifar-resnet56"]
TABLE = "cifar"
MODEL_ORDER = ["vgg16", "resnet20", "resnet56"]
TITLE = "Table: CIFAR-10 — growing against dense, uniform width, L1-norm pruning, network slimming"


def rows(runs: pd.DataFrame, reference_path=None) -> pd.DataFrame:
    """One row per (model, variant): seeds aggregated, paper values attached, in table order."""
    return tables.comparison_rows(tables.per_run(runs), TABLE, model_order=MODEL_ORDER,
                                  reference_path=reference_path)


def draw(runs, stem: Path, profile: str, store=None, reference_path=None) -> list[Path]:
    r = rows(runs, reference_path)
    labels = tables.row_labels(r)
    display = pd.DataFrame({**labels, **tables.metric_columns(r, realised=True),
                            "seeds": list(r["n_seeds"])})
    csv = tables.csv_frame(r.assign(method=labels["method"], budget=labels["budget"]),
                           ["model", "method", "budget"])
    notes = ["Budget: the method's MACs target τ (fraction of dense MACs); pruning baselines keep "
             "that fraction of dense MACs (per-layer ratio or global threshold found by bisection); "
             "uniform width scales every layer's width so its MACs match the nearest target.",
             "Realised training savings: 1 − the run's training time / the dense run's of the "
             "same model timed alike (in brackets: the device, its threads and how many runs "
             "trained at once), as CPU time where the runs tracked it (CPU runs), else wall "
             "clock (GPU: synchronised); counted savings use MACs. Blank without a dense run "
             "timed alike."]
    if (r["train_reference"] != "dense run").any():
        notes.append("Rows without a dense run of their model measure training savings against "
                     "the dense model over the run's own schedule.")
    return tables.write_rows(stem, r, display, csv, title=TITLE, profile=profile, n_left=3,
                             notes=notes, table=TABLE, reference_path=reference_path,
                             comparisons=[tables.growing_comparison(r)])
