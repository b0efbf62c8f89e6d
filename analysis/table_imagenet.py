"""Table: ResNet-50 and MobileNetV1 on ImageNet — the method against dense and uniform width.

Rows per model: the dense network; the method (channel growing) at a MACs budget of 0.5 of
dense; a uniform-width baseline (a narrower dense net trained by this suite) at the same MACs.
Columns: top-1 and top-5 (mean ± std over seeds), params, MACs per image at the runs' input
size, inference and training savings against the dense row (counted in MACs, and realised in
wall-clock time on the device named beside it), the paper's values from analysis/reference.csv
(its ResNet-50 result sits beside the reproduced grow-50 row; blank where unknown) and the
MLflow runs behind each row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reproduce import contract

from . import tables
from .reference import paper_columns

EXPERIMENTS = ["table-imagenet-resnet50", "table-imagenet-mobilenet"]
TABLE = "imagenet"
MODEL_ORDER = ["resnet50", "mobilenet_v1"]
TITLE = "Table: ImageNet — ResNet-50 and MobileNetV1 grown against dense and uniform width"
METRICS = ["top1", "top5", "params", "macs", "inference_savings", "train_savings"]
HEADERS = {**tables.HEADERS, "top5": "top-5 (%)"}
FORMAT = {"top5": "top1"}           # formatted like top-1


def rows(runs: pd.DataFrame, reference_path=None) -> pd.DataFrame:
    """One row per (model, variant): seeds aggregated, paper values attached, in table order."""
    per = tables.per_run(runs)
    per["top5"] = pd.to_numeric(runs[contract.VAL_TOP5], errors="coerce") \
        if contract.VAL_TOP5 in runs else np.nan
    per["image_size"] = pd.to_numeric(runs.get("param.data.image_size", np.nan), errors="coerce")
    out = tables.aggregate(per, metrics=[*METRICS, "macs_ratio", "train_macs_total",
                                         "realised_savings"])
    out["level"] = tables.nominal_levels(out)
    out = out.merge(paper_columns(TABLE, METRICS, reference_path), on=["model", "variant"],
                    how="left").fillna({"paper_source": ""})
    order = {m: i for i, m in enumerate(MODEL_ORDER)}
    kinds = {k: i for i, k in enumerate(tables.KIND_ORDER)}
    out["_model"] = out["model"].map(lambda m: order.get(m, len(order)))
    out["_kind"] = out["kind"].map(lambda k: kinds.get(k, len(kinds)))
    out = out.sort_values(["_model", "model", "level", "_kind", "variant"],
                          ascending=[True, True, False, True, True])
    return out.drop(columns=["_model", "_kind"]).reset_index(drop=True)


def _size_note(r: pd.DataFrame) -> str:
    sizes = {m: sorted({int(s) for s in g["image_size"].dropna()}) for m, g in r.groupby("model")}
    text = "; ".join(f"{m} {', '.join(f'{s} px' for s in s_)}" for m, s_ in sizes.items() if s_)
    return (f"MACs and params per image at the runs' input size ({text or 'not recorded'}); "
            "the paper's numbers are at 224 px.")


def draw(runs, stem: Path, profile: str, uri=None, reference_path=None) -> list[Path]:
    r = rows(runs, reference_path)
    labels = tables.row_labels(r)
    metrics = {}
    for m in METRICS:
        metrics[HEADERS[m]] = [tables.mean_std(a, b, FORMAT.get(m, m))
                               for a, b in zip(r[f"{m}_mean"], r[f"{m}_std"])]
        if m == "train_savings":          # the wall clock beside the count
            metrics["realised training savings (%)"] = tables.realised_column(r)
    for m in METRICS:
        metrics[f"paper {HEADERS[m]}"] = [tables.plain(v) for v in r[f"paper_{m}"]]
    display = pd.DataFrame({**labels, **metrics, "seeds": list(r["n_seeds"])})
    csv = tables.csv_frame(r.assign(method=labels["method"], budget=labels["budget"]),
                           ["model", "method", "budget", "image_size"], METRICS)
    notes = [_size_note(r),
             "Budget: the method's MACs target τ (fraction of dense MACs); uniform width scales "
             "every layer's width by one multiplier chosen so its MACs match the target.",
             "Top-5 is over the dataset's classes (with 10 classes, chance is 50 %).",
             "Realised training savings: 1 − the run's wall-clock training time / the dense "
             "run's of the same model on the same device (in brackets); counted savings use "
             "MACs (the paper's FLOPs savings are the same ratio). Blank without a dense run on "
             "that device."]
    known = r[r["paper_source"] != ""]
    for _, row in known.iterrows():
        notes.append(f"Paper values beside {row['model']} / {row['variant']}: "
                     f"{row['paper_source']} (analysis/reference.csv), against the paper's own "
                     f"dense baseline.")
    return tables.write(stem, display, csv, title=TITLE, profile=profile,
                        datasets=sorted(r["dataset"].unique()),
                        run_ids=[ids.split(";") for ids in r["run_ids"]],
                        row_names=[f"{m} / {v}" for m, v in zip(r["model"], r["variant"])],
                        n_left=3, notes=notes, groups=list(r["model"]),
                        extra_md=tables.unmatched_paper_rows(TABLE, r, reference_path))
