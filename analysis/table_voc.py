"""Table: semantic segmentation on PASCAL VOC 2012 — mIoU against params and MACs.

Rows: the dense FCN on a gated ResNet backbone; the method (growing channels of the backbone and
the head) at several MACs budgets; a measured uniform-width baseline (every width scaled).
Columns: validation mIoU (the task's main metric, `val/miou`) and pixel accuracy (mean ± std over
seeds), params, MACs at the evaluation resolution, inference and training savings against the
dense row, the paper's values from analysis/reference.csv (blank where unknown) and the MLflow runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
    for name, key in (("miou", MAIN), ("pixel_acc", contract.VAL_PIXEL_ACC)):
        per[name] = pd.to_numeric(runs[key], errors="coerce") if key in runs else np.nan
    out = tables.aggregate(per, metrics=[*METRICS, "macs_ratio", "train_macs_total"])
    out["level"] = tables.nominal_levels(out)
    from .reference import paper_columns
    out = out.merge(paper_columns(TABLE, METRICS, reference_path), on=["model", "variant"],
                    how="left").fillna({"paper_source": ""})
    kinds = {k: i for i, k in enumerate(tables.KIND_ORDER)}
    out["_kind"] = out["kind"].map(lambda k: kinds.get(k, len(kinds)))
    out = out.sort_values(["model", "level", "_kind", "variant"], ascending=[True, False, True, True])
    return out.drop(columns=["_kind"]).reset_index(drop=True)


def draw(runs, stem: Path, profile: str, uri=None, reference_path=None) -> list[Path]:
    r = rows(runs, reference_path)
    labels = tables.row_labels(r)
    kind = {"miou": "top1", "pixel_acc": "top1"}
    cols = {HEADERS[m]: [tables.mean_std(a, b, kind.get(m, m))
                         for a, b in zip(r[f"{m}_mean"], r[f"{m}_std"])] for m in METRICS}
    for m in METRICS:
        cols[f"paper {HEADERS[m]}"] = [tables.plain(v) for v in r.get(f"paper_{m}", [np.nan] * len(r))]
    display = pd.DataFrame({**labels, **cols, "seeds": list(r["n_seeds"])})
    csv = tables.csv_frame(r.assign(method=labels["method"], budget=labels["budget"]),
                           ["model", "method", "budget"], METRICS)
    notes = ["mIoU: intersection over union per class from one confusion matrix over every "
             "labelled pixel of the validation set (void = 255 left out), averaged over the "
             "classes present in labels or predictions; pixel accuracy from the same matrix. "
             "MACs per image at the evaluation resolution.",
             "Budget: the method's MACs target τ; uniform width scales every width of backbone "
             "and head so its MACs match the nearest target."]
    return tables.write(stem, display, csv, title=TITLE, profile=profile,
                        datasets=sorted(r["dataset"].unique()),
                        run_ids=[ids.split(";") for ids in r["run_ids"]],
                        row_names=[f"{m} / {v}" for m, v in zip(r["model"], r["variant"])],
                        n_left=3, notes=notes, groups=list(r["model"]),
                        extra_md=tables.unmatched_paper_rows(TABLE, r, reference_path))
