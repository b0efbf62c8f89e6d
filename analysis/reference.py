"""The paper's (and related work's) published numbers, from one data file: analysis/reference.csv.

One row per number: table, model, dataset, method, variant, metric, value, unit, source, note.
`value` is blank where the number is not known here (the paper's full text was not available when
the suite was written): a user with the PDF fills it in, with the source, and every table shows
it in its "paper" columns beside the reproduced values, never mixed into them.

`variant` ties a paper number to the reproduced row it should sit beside (the experiment file's
variant name, e.g. `grow-50`); blank means it belongs to no reproduced row (tables list such rows
separately when they hold a value). Metrics used by the tables: top1 (%), params (M), macs (M),
inference_savings (%), train_savings (%); others (e.g. found_net) are free text.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

REFERENCE_FILE = Path(__file__).with_name("reference.csv")
COLUMNS = ["table", "model", "dataset", "method", "variant", "metric", "value", "unit", "source",
           "note"]


def load(path: str | Path | None = None) -> pd.DataFrame:
    """Every row of the reference file. `value` is a float where numeric (NaN where blank),
    `value_text` the raw text (e.g. a found architecture "42-42-42")."""
    path = Path(path or REFERENCE_FILE)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, comment=None)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
    frame = frame.apply(lambda col: col.str.strip())
    frame["value_text"] = frame["value"]
    frame["value"] = pd.to_numeric(frame["value"].where(frame["value"] != ""), errors="coerce")
    return frame


def reference(table: str, path: str | Path | None = None) -> pd.DataFrame:
    """The rows of one table ("cifar", "ablation", "imagenet", "autogrow", ...)."""
    frame = load(path)
    return frame[frame["table"] == table].reset_index(drop=True)


def paper_columns(table: str, metrics: list[str], path: str | Path | None = None) -> pd.DataFrame:
    """One row per (model, variant) with a `paper_<metric>` column per metric (NaN where blank)
    and `paper_source` (the sources of the values present, or of the blank rows)."""
    ref = reference(table, path)
    ref = ref[ref["variant"] != ""]
    rows = []
    for (model, variant), group in ref.groupby(["model", "variant"], sort=False):
        row = {"model": model, "variant": variant}
        for metric in metrics:
            values = group.loc[group["metric"] == metric, "value"].dropna()
            row[f"paper_{metric}"] = float(values.iloc[0]) if len(values) else float("nan")
        known = group[group["value_text"] != ""]
        row["paper_source"] = "; ".join(dict.fromkeys(known["source"])) if len(known) else ""
        rows.append(row)
    columns = ["model", "variant", *(f"paper_{m}" for m in metrics), "paper_source"]
    return pd.DataFrame(rows, columns=columns)


def unmatched(table: str, keys: set[tuple[str, str]], path: str | Path | None = None) -> pd.DataFrame:
    """Rows holding a value whose (model, variant) is not among `keys` (e.g. the paper's other
    methods): tables list them below the reproduced rows."""
    ref = reference(table, path)
    ref = ref[ref["value_text"] != ""]
    mask = [(m, v) not in keys for m, v in zip(ref["model"], ref["variant"])]
    return ref[mask].reset_index(drop=True)
