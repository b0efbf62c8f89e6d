"""Table: word-level LSTM language model on Penn Treebank — perplexity against hidden units and MACs.

Rows: the dense LSTM; the method (growing hidden units) at several MACs budgets; and a measured
uniform-width baseline (a dense LSTM with fewer hidden units per layer, trained by this suite).
Columns: validation perplexity (the task's main metric, `val/ppl`, mean ± std over seeds), hidden
units per layer of the final architecture (from architecture.json), params, MACs per token,
inference and training savings against the dense row, the paper's values from
analysis/reference.csv (blank where unknown) and the MLflow runs behind each row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reproduce import contract

from . import runs as store
from . import tables

EXPERIMENTS = ["table-ptb"]
TABLE = "ptb"
MAIN = contract.VAL_PPL
TITLE = "Table: Penn Treebank LSTM — perplexity against hidden units and MACs per token"
METRICS = ["ppl", "params", "macs", "inference_savings", "train_savings"]
HEADERS = {"ppl": "val perplexity", "params": "params (M)", "macs": "MACs/token (M)",
           "inference_savings": "inference savings (%)", "train_savings": "training savings (%)"}


def hidden_units(run_id: str, uri=None) -> str:
    """Hidden units per LSTM layer of a run's final architecture, e.g. `412-377`."""
    sites = store.architecture(run_id, uri).get("sites", {})
    widths = [v["width"] for _, v in sorted(sites.items(), key=lambda kv: kv[1]["stage"])
              if v["role"] == contract.ROLE_RECURRENT]
    return "-".join(str(w) for w in widths)


def rows(runs: pd.DataFrame, reference_path=None, uri=None) -> pd.DataFrame:
    per = tables.per_run(runs)
    per["ppl"] = pd.to_numeric(runs[MAIN], errors="coerce") if MAIN in runs else np.nan
    per["hidden"] = [hidden_units(r, uri) for r in per["run_id"]]
    out = tables.aggregate(per, metrics=[*METRICS, "macs_ratio", "train_macs_total"])
    out["level"] = tables.nominal_levels(out)
    from .reference import paper_columns
    out = out.merge(paper_columns(TABLE, METRICS, reference_path), on=["model", "variant"],
                    how="left").fillna({"paper_source": ""})
    kinds = {k: i for i, k in enumerate(tables.KIND_ORDER)}
    out["_kind"] = out["kind"].map(lambda k: kinds.get(k, len(kinds)))
    out = out.sort_values(["model", "level", "_kind", "variant"], ascending=[True, False, True, True])
    return out.drop(columns=["_kind"]).reset_index(drop=True)


def _cell(mean, std, metric: str) -> str:
    return tables.mean_std(mean, std, "top1" if metric == "ppl" else metric)


def draw(runs, stem: Path, profile: str, uri=None, reference_path=None) -> list[Path]:
    r = rows(runs, reference_path, uri)
    labels = {**tables.row_labels(r), "hidden units": list(r["hidden"])}
    cols = {HEADERS[m]: [_cell(a, b, m) for a, b in zip(r[f"{m}_mean"], r[f"{m}_std"])]
            for m in METRICS}
    for m in METRICS:
        cols[f"paper {HEADERS[m]}"] = [tables.plain(v) for v in r.get(f"paper_{m}", [np.nan] * len(r))]
    display = pd.DataFrame({**labels, **cols, "seeds": list(r["n_seeds"])})
    csv = tables.csv_frame(r.assign(method=labels["method"], budget=labels["budget"]),
                           ["model", "method", "budget", "hidden"], METRICS)
    notes = ["Perplexity: exp of the mean next-token cross-entropy over the whole validation "
             "stream, hidden state carried across BPTT windows (lower is better). MACs per token: "
             "the LSTM layers' input and recurrent matrices (4 gate blocks each) and the decoder; "
             "the embedding is a look-up and is not counted. Hidden units: per layer, first to last.",
             "Budget: the method's MACs target τ (fraction of dense MACs per token); uniform width "
             "scales every layer's hidden units (the embedding keeps its size) so its MACs match "
             "the nearest target."]
    return tables.write(stem, display, csv, title=TITLE, profile=profile,
                        datasets=sorted(r["dataset"].unique()),
                        run_ids=[ids.split(";") for ids in r["run_ids"]],
                        row_names=[f"{m} / {v}" for m, v in zip(r["model"], r["variant"])],
                        n_left=4, notes=notes, groups=list(r["model"]),
                        extra_md=tables.unmatched_paper_rows(TABLE, r, reference_path))
