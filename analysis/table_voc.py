"""Table: semantic segmentation on PASCAL VOC 2012 — mIoU against params and MACs.

Rows: the dense FCN on a gated ResNet backbone; the method (growing channels of the backbone and
the head) at several MACs budgets; a measured uniform-width baseline (every width scaled).
Columns: validation mIoU (the task's main metric, `val/miou`) and pixel accuracy (mean ± std over
seeds), params, MACs at the evaluation resolution, inference and training savings against the
dense row, the paper's values from analysis/reference.csv (blank where unknown) and the MLflow runs.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from reproduce import contract

from . import tables

EXPERIMENTS = ["table-voc"]
TABLE = "voc"
MAIN = contract.VAL_MIOU
TITLE = "Table: PASCAL VOC 2012 segmentation — mIoU against params and MACs"
METRICS = ["miou", "pixel_acc", "params", "macs", "inference_savings", "train_savings"]
HEADERS = {"miou": "mIoU (%)", "pixel_acc": "pixel acc. (%)", "params": "params (M)",
           "macs": "MACs (M)", "inference_savings": "inference savings (%)",
           "train_savings": "training savings (%)"}


def rows(runs: pd.DataFrame, reference_path=None) -> pd.DataFrame:
    per = tables.per_run(runs)
    per["miou"] = tables.metric(runs, MAIN)
    per["pixel_acc"] = tables.metric(runs, contract.VAL_PIXEL_ACC)
    return tables.comparison_rows(per, TABLE, METRICS, reference_path=reference_path)


def draw(runs, stem: Path, profile: str, store=None, reference_path=None) -> list[Path]:
    r = rows(runs, reference_path)
    labels = tables.row_labels(r)
    display = pd.DataFrame({**labels, **tables.metric_columns(r, METRICS, HEADERS),
                            "seeds": list(r["n_seeds"])})
    csv = tables.csv_frame(r.assign(method=labels["method"], budget=labels["budget"]),
                           ["model", "method", "budget"], METRICS)
    notes = ["mIoU: intersection over union per class from one confusion matrix over every "
             "labelled pixel of the validation set (void = 255 left out), averaged over the "
             "classes present in labels or predictions; pixel accuracy from the same matrix. "
             "MACs per image at the evaluation resolution.",
             "Budget: the method's MACs target τ; uniform width scales every width of backbone "
             "and head so its MACs match the nearest target."]
    return tables.write_rows(stem, r, display, csv, title=TITLE, profile=profile, n_left=3,
                             notes=notes, table=TABLE, reference_path=reference_path,
                             comparisons=[tables.growing_comparison(r, "miou", "mIoU")])
