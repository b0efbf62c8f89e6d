"""Table: layer growing against AutoGrow — Basic3ResNet and Plain3Net.

Rows per network family and dataset, all read from the tracking store except the last kind:
  growing layers            the method with block gates (Figure 5's `grow-layers` runs)
  growing layers + channels the method with block and channel gates (`grow-joint`)
  AutoGrow-style, measured  reproduce/autogrow.py: periodic growth until validation accuracy
                            stops improving, under the same tracking and cost accounting
  found net from scratch    the dense network of the depth the method found, trained from a
                            random init (its depth is declared in experiments/table-autogrow.yaml;
                            a note flags it when it differs from the depth found in this store)
  AutoGrow, published       Wen et al. 2020's found nets and accuracy (analysis/reference.csv)
Columns: found depth per stage (active blocks at the end, `blocks/stage<k>`), params, inference
MACs, top-1, total training MACs (3 × forward MACs of the architecture trained in each iteration,
summed over the run), and the paper's values for the method's row (reference.csv, blank where not
known here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reproduce import contract

from . import tables, variants
from .reference import reference
from .variants import si_scale

EXPERIMENTS = ["figure-5", "table-autogrow"]
TABLE = "autogrow"
TITLE = "Table: layer growing against AutoGrow — Basic3ResNet and Plain3Net"
FAMILIES = {"basic3resnet": "Basic3ResNet", "plain3net": "Plain3Net"}
KINDS = {"grow-layers": "growing layers (Yuan et al. 2021)",
         "grow-joint": "growing layers + channels (Yuan et al. 2021)",
         "autogrow": "AutoGrow-style, measured",
         "scratch": "found net from scratch",
         "published": "AutoGrow, published"}
KIND_ORDER = list(KINDS)
METRICS = ["top1", "params", "macs", "train_macs_total"]
PAPER_METRICS = ["found_net", "top1", "params"]


def depth_of(row: pd.Series) -> str:
    keys = sorted((k for k in row.index if str(k).startswith(contract.BLOCKS)
                   and not pd.isna(row[k])),
                  key=lambda k: int(str(k).removeprefix(f"{contract.BLOCKS}stage")))
    return "-".join(str(int(round(float(row[k])))) for k in keys)


def kinds(runs: pd.DataFrame) -> pd.Series:
    """The table's kinds from the run taxonomy: what grew, AutoGrow, or a net from scratch."""
    joint = variants.gates(runs).str.contains("channels")
    return pd.Series([("grow-joint" if j else "grow-layers") if k == "grow"
                      else "scratch" if k in ("dense", "uniform") else k
                      for k, j in zip(variants.kind(runs), joint)], index=runs.index, dtype=object)


def per_run(runs: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({
        "run_id": runs["run_id"], "model": runs["model"], "dataset": runs["dataset"],
        "variant": runs["variant"], "seed": runs["seed"].astype(int),
        "family": variants.network(runs),
        "kind": kinds(runs),
        "depth": [depth_of(r) for _, r in runs.iterrows()],
        "top1": tables.metric(runs, contract.VAL_ACC),
        "params": tables.metric(runs, contract.PARAMS) / 1e6,
        "macs": tables.metric(runs, contract.MACS) / 1e6,
        "train_macs_total": tables.metric(runs, contract.TRAIN_MACS_TOTAL),
        "max_depth": variants.max_depth(runs),
    })
    return out


def measured_rows(runs: pd.DataFrame) -> pd.DataFrame:
    frame = per_run(runs)
    depths = frame.groupby(["model", "variant"])["depth"].agg(lambda d: " / ".join(sorted(set(d))))
    out = tables.aggregate(frame.drop(columns="depth"), keys=["family", "dataset", "model", "variant"],
                           metrics=METRICS)
    out["depth"] = [depths[(m, v)] for m, v in zip(out["model"], out["variant"])]
    return out


def published_rows(families: set[str], datasets: set[str], reference_path=None) -> pd.DataFrame:
    """AutoGrow's published rows (reference rows without a variant), one per method and dataset,
    of the families shown; of the datasets shown when the reference has any, else of all."""
    ref = reference(TABLE, reference_path)
    ref = ref[(ref["variant"] == "") & ref["model"].isin(families)]
    if ref["dataset"].isin(datasets).any():
        ref = ref[ref["dataset"].isin(datasets)]
    rows = []
    for (model, dataset, method), g in ref.groupby(["model", "dataset", "method"], sort=False):
        values = g.set_index("metric")["value_text"]
        rows.append({"family": model, "dataset": dataset, "model": model, "variant": method,
                     "kind": "published", "depth": values.get("found_net", ""),
                     "top1_mean": pd.to_numeric(values.get("top1", ""), errors="coerce"),
                     "note": "; ".join(dict.fromkeys(g["note"])), "source": g["source"].iloc[0],
                     "n_seeds": 0, "run_ids": ""})
    return pd.DataFrame(rows)


def paper_values(reference_path=None) -> pd.DataFrame:
    """The paper's own values for a reproduced (family, variant), blank where not known here."""
    ref = reference(TABLE, reference_path)
    ref = ref[ref["variant"] != ""]
    rows = []
    for (model, variant), g in ref.groupby(["model", "variant"], sort=False):
        values = g.set_index("metric")["value_text"]
        rows.append({"family": model, "variant": variant,
                     **{f"paper_{m}": values.get(m, "") for m in PAPER_METRICS}})
    return pd.DataFrame(rows, columns=["family", "variant", *(f"paper_{m}" for m in PAPER_METRICS)])


def rows(runs: pd.DataFrame, reference_path=None) -> pd.DataFrame:
    measured = measured_rows(runs)
    published = published_rows(set(measured["family"]), set(measured["dataset"]), reference_path)
    out = pd.concat([measured, published], ignore_index=True)
    out = out.merge(paper_values(reference_path), on=["family", "variant"], how="left")
    order = {f: i for i, f in enumerate(FAMILIES)}
    out["_family"] = out["family"].map(lambda f: order.get(f, len(order)))
    out["_kind"] = out["kind"].map(KIND_ORDER.index)
    out["_published"] = out["kind"] == "published"
    out = out.sort_values(["_family", "family", "_published", "dataset", "_kind", "variant"])
    return out.drop(columns=["_family", "_kind", "_published"]).reset_index(drop=True)


def scratch_notes(r: pd.DataFrame) -> list[str]:
    """Where the from-scratch row's depth is not the depth the method found in this store."""
    notes = []
    for (fam, dataset), g in r[r["kind"] != "published"].groupby(["family", "dataset"]):
        found = g.loc[g["kind"] == "grow-layers", "depth"]
        scratch = g.loc[g["kind"] == "scratch", "depth"]
        if len(found) and len(scratch) and found.iloc[0] != scratch.iloc[0]:
            notes.append(f"{FAMILIES.get(fam, fam)} on {dataset}: the from-scratch row trains "
                         f"{scratch.iloc[0]}, but growing layers found {found.iloc[0]} in this "
                         f"store; set that depth in experiments/table-autogrow.yaml and rerun.")
    return notes


def published_label(method: str) -> str:
    """`autogrow-periodic` -> "AutoGrow periodic, published"."""
    policy = method.removeprefix("autogrow").strip("-")
    return f"AutoGrow {policy}, published" if policy else KINDS["published"]


def _text(v, kind: str) -> str:
    return "" if v is None or (isinstance(v, float) and np.isnan(v)) else tables.num(v, kind)


def references(r: pd.DataFrame) -> list:
    """Each measured row's reference: growing layers of the same family and dataset (the
    method's row; itself and the published rows none)."""
    out = []
    for _, row in r.iterrows():
        hit = r.index[(r["family"] == row["family"]) & (r["dataset"] == row["dataset"])
                      & (r["kind"] == "grow-layers")]
        measured = row["kind"] not in ("grow-layers", "published")
        out.append(r.index.get_loc(hit[0]) if measured and len(hit) else None)
    return out


def draw(runs, stem: Path, profile: str, store=None, reference_path=None) -> list[Path]:
    r = rows(runs, reference_path)
    scale, prefix = si_scale(r["train_macs_total_mean"].dropna())
    display = pd.DataFrame({
        "network": [FAMILIES.get(f, f) for f in r["family"]],
        "dataset": list(r["dataset"]),
        "method": [published_label(v) if k == "published" else KINDS[k]
                   for k, v in zip(r["kind"], r["variant"])],
        "max depth": [m if k in ("grow-layers", "grow-joint", "autogrow") else "–"
                      for m, k in zip(r["max_depth"].fillna(""), r["kind"])],
        "found depth": list(r["depth"]),
        "params (M)": [tables.mean_std(a, b, "params") for a, b in
                       zip(r["params_mean"], r["params_std"])],
        "MACs (M)": [tables.mean_std(a, b, "macs") for a, b in zip(r["macs_mean"], r["macs_std"])],
        "top-1 (%)": [tables.mean_std(a, b, "top1") for a, b in zip(r["top1_mean"], r["top1_std"])],
        f"training MACs ({prefix or '×1'})": [_text(v / scale, "macs")
                                             for v in r["train_macs_total_mean"]],
        "paper depth": list(r["paper_found_net"].fillna("")),
        "paper top-1 (%)": list(r["paper_top1"].fillna("")),
        "paper params (M)": list(r["paper_params"].fillna("")),
        "seeds": [int(n) if n else "–" for n in r["n_seeds"]],
    })
    csv = r.rename(columns={"params_mean": "params_m_mean", "params_std": "params_m_std",
                            "macs_mean": "macs_m_mean", "macs_std": "macs_m_std"})
    csv = csv[[c for c in ["family", "dataset", "kind", "variant", "model", "depth",
                           "params_m_mean", "params_m_std", "macs_m_mean", "macs_m_std",
                           "top1_mean", "top1_std", "train_macs_total_mean",
                           "train_macs_total_std", "n_seeds", "seeds", "paper_found_net",
                           "paper_top1", "paper_params", "source", "note", "run_ids"]
               if c in csv.columns]]
    notes = ["Found depth: active blocks per stage at the end of training (the first block of a "
             "stage is always there). Max depth: the network the run could grow within (its "
             "model name). Training MACs: total over the run (AutoGrow-style: every growth "
             "interval plus the epochs after growth stopped).",
             "AutoGrow, published: Wen et al. 2020 on the dataset named in the row (their "
             "schedule, not this profile's); AutoGrow's nets are not bounded by a max depth.",
             *scratch_notes(r)]
    run_ids = [ids.split(";") if ids else ["none (published value, analysis/reference.csv)"]
               for ids in r["run_ids"]]
    names = [f"{FAMILIES.get(f, f)} / {d} / {v}" for f, d, v in
             zip(r["family"], r["dataset"], r["variant"])]
    return tables.write(stem, display, csv, title=TITLE, profile=profile,
                        datasets=sorted(r.loc[r["kind"] != "published", "dataset"].unique()),
                        run_ids=run_ids, row_names=names, n_left=5, notes=notes,
                        groups=[f"{f}/{d}" for f, d in zip(r["family"], r["dataset"])],
                        comparisons=[tables.compare(
                            r, references(r), names=[KINDS[k].removesuffix(" (Yuan et al. 2021)")
                                                     for k in r["kind"]],
                            references="this row minus the row named under `reference`, of the "
                                       "same network and dataset (growing layers)")],
                        columns_note="Reproduced columns: mean ± sample std over seeds (one "
                                     "seed: its value alone).")
