"""Table: ResNet-50 and MobileNetV1 on ImageNet — the method against dense and uniform width.

Rows per model: the dense network; the method (channel growing) at a MACs budget of 0.5 of
dense; a uniform-width baseline (a narrower dense net trained by this suite) at the same MACs.
Columns: top-1 and top-5 (mean ± std over seeds), params, MACs per image at the runs' input
size, inference and training savings against the dense row (counted in MACs, and realised in
CPU time or wall clock on the device named beside it), the paper's values from analysis/reference.csv
(its ResNet-50 result sits beside the reproduced grow-50 row; blank where unknown) and the
MLflow runs behind each row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reproduce import contract

from . import tables

EXPERIMENTS = ["table-imagenet-resnet50", "table-imagenet-mobilenet"]
TABLE = "imagenet"
MODEL_ORDER = ["resnet50", "mobilenet_v1"]
TITLE = "Table: ImageNet — ResNet-50 and MobileNetV1 grown against dense and uniform width"
METRICS = ["top1", "top5", "params", "macs", "inference_savings", "train_savings"]
HEADERS = {**tables.HEADERS, "top5": "top-5 (%)"}


def rows(runs: pd.DataFrame, reference_path=None) -> pd.DataFrame:
    """One row per (model, variant): seeds aggregated, paper values attached, in table order."""
    per = tables.per_run(runs)
    per["top5"] = tables.metric(runs, contract.VAL_TOP5)
    per["image_size"] = pd.to_numeric(runs.get("param.data.image_size", np.nan), errors="coerce")
    return tables.comparison_rows(per, TABLE, METRICS, MODEL_ORDER, reference_path)


def _size_note(r: pd.DataFrame) -> str:
    sizes = {m: sorted({int(s) for s in g["image_size"].dropna()}) for m, g in r.groupby("model")}
    text = "; ".join(f"{m} {', '.join(f'{s} px' for s in s_)}" for m, s_ in sizes.items() if s_)
    return (f"MACs and params per image at the runs' input size ({text or 'not recorded'}); "
            "the paper's numbers are at 224 px.")


def draw(runs, stem: Path, profile: str, store=None, reference_path=None) -> list[Path]:
    r = rows(runs, reference_path)
    labels = tables.row_labels(r)
    display = pd.DataFrame({**labels, **tables.metric_columns(r, METRICS, HEADERS, realised=True),
                            "seeds": list(r["n_seeds"])})
    csv = tables.csv_frame(r.assign(method=labels["method"], budget=labels["budget"]),
                           ["model", "method", "budget", "image_size"], METRICS)
    notes = [_size_note(r),
             "Budget: the method's MACs target τ (fraction of dense MACs); uniform width scales "
             "every layer's width by one multiplier chosen so its MACs match the target.",
             "Top-5 is over the dataset's classes (with 10 classes, chance is 50 %).",
             "Realised training savings: 1 − the run's training time / the dense run's of the "
             "same model timed alike (in brackets: the device, its threads and how many runs "
             "trained at once), as CPU time where the runs tracked it (CPU runs), else wall "
             "clock (GPU: synchronised); counted savings use MACs (the paper's FLOPs savings are "
             "the same ratio). Blank without a dense run timed alike."]
    known = r[r["paper_source"] != ""]
    for _, row in known.iterrows():
        notes.append(f"Paper values beside {row['model']} / {row['variant']}: "
                     f"{row['paper_source']} (analysis/reference.csv), against the paper's own "
                     f"dense baseline.")
    return tables.write_rows(stem, r, display, csv, title=TITLE, profile=profile, n_left=3,
                             notes=notes, table=TABLE, reference_path=reference_path,
                             comparisons=[tables.growing_comparison(r)])
