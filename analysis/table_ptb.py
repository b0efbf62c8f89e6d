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

import pandas as pd

from reproduce import contract

from . import tables

EXPERIMENTS = ["table-ptb"]
TABLE = "ptb"
MAIN = contract.VAL_PPL
TITLE = "Table: Penn Treebank LSTM — perplexity against hidden units and MACs per token"
METRICS = ["ppl", "params", "macs", "inference_savings", "train_savings"]
HEADERS = {"ppl": "val perplexity", "params": "params (M)", "macs": "MACs/token (M)",
           "inference_savings": "inference savings (%)", "train_savings": "training savings (%)"}


def hidden_units(store, run_id: str) -> str:
    """Hidden units per LSTM layer of a run's final architecture, e.g. `412-377`."""
    sites = store.architecture(run_id).get("sites", {})
    widths = [v["width"] for _, v in sorted(sites.items(), key=lambda kv: kv[1]["stage"])
              if v["role"] == contract.ROLE_RECURRENT]
    return "-".join(str(w) for w in widths)


def rows(runs: pd.DataFrame, store, reference_path=None) -> pd.DataFrame:
    per = tables.per_run(runs)
    per["ppl"] = tables.metric(runs, MAIN)
    per["hidden"] = [hidden_units(store, r) for r in per["run_id"]]
    return tables.comparison_rows(per, TABLE, METRICS, reference_path=reference_path)


def draw(runs, stem: Path, profile: str, store, reference_path=None) -> list[Path]:
    r = rows(runs, store, reference_path)
    labels = {**tables.row_labels(r), "hidden units": list(r["hidden"])}
    display = pd.DataFrame({**labels, **tables.metric_columns(r, METRICS, HEADERS),
                            "seeds": list(r["n_seeds"])})
    csv = tables.csv_frame(r.assign(method=labels["method"], budget=labels["budget"]),
                           ["model", "method", "budget", "hidden"], METRICS)
    notes = ["Perplexity: exp of the mean next-token cross-entropy over the whole validation "
             "stream, hidden state carried across BPTT windows (lower is better). MACs per token: "
             "the LSTM layers' input and recurrent matrices (4 gate blocks each) and the decoder; "
             "the embedding is a look-up and is not counted. Hidden units: per layer, first to last.",
             "Budget: the method's MACs target τ (fraction of dense MACs per token); uniform width "
             "scales every layer's hidden units (the embedding keeps its size) so its MACs match "
             "the nearest target."]
    return tables.write_rows(stem, r, display, csv, title=TITLE, profile=profile, n_left=4,
                             notes=notes, table=TABLE, reference_path=reference_path,
                             comparisons=[tables.growing_comparison(r, "ppl", "perplexity")])
