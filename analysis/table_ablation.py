"""Table: ablations of the method on ResNet-20 — sampling, budget, temperature, seed, start.

Every row changes one setting of the reference run (Bernoulli sampling, MACs budget, global
temperature, 25 % channel seed, growing from the seed): sampling mode (straight-through,
deterministic = no sampling), budget off (a fixed λ), temperature schedule (separate,
separate-decayed), seed fraction, and pruning from the full network instead of growing. Columns as
in the CIFAR table: top-1 (mean ± std over seeds), params, MACs, inference and training savings
against the dense ResNet-20 row (the same run as table-cifar's dense ResNet-20: same variant and
config, so the same hash), paper values from analysis/reference.csv, and the MLflow runs behind
each row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import tables, variants

EXPERIMENTS = ["table-ablation"]
TABLE = "ablation"
TITLE = "Table: ablations of growing on ResNet-20"
# the table's groups, in order: the setting a row changes against the reference run
AXES = ["sampling", "budget", "temperature", "seed", "start"]
METRIC_LABELS = {"macs": "MACs", "params": "params"}
REFERENCE_VARIANT = "grow-50"     # experiments/table-ablation.yaml: the run every row changes


def settings(runs: pd.DataFrame) -> pd.DataFrame:
    """Per run: the four display settings, from its params ("–" for the dense network)."""
    def p(key):
        return runs.get(f"param.{key}", pd.Series("–", index=runs.index)).astype(str)
    seed_fraction = pd.to_numeric(p("gates.seed_fraction"), errors="coerce")
    full = variants.start(runs) == "full"
    metric, target = p("budget.metric"), pd.to_numeric(p("budget.target"), errors="coerce")
    out = pd.DataFrame({
        "run_id": runs["run_id"],
        "sampling": p("gates.sampling").str.replace("_", "-"),
        "budget": [("off (fixed λ)" if m == "none" else f"{METRIC_LABELS.get(m, m)} ≤ {t:.2f}")
                   for m, t in zip(metric, target)],
        "temperature": p("temperature.schedule").str.replace("_", "-"),
        "start": np.where(full, "full network (prune)",
                          [f"seed {100 * f:g} % (grow)" for f in seed_fraction]),
    })
    dense = variants.kind(runs).isin(["dense", "uniform"]).to_numpy()
    out.loc[dense, ["sampling", "budget", "temperature"]] = "–"
    out.loc[dense, "start"] = "dense network"
    return out


def group_of(row: pd.Series, reference: pd.Series) -> int:
    """1 + index in AXES of the setting a row changes against the reference (0 = none)."""
    for i, axis in enumerate(AXES[:3]):
        if row[axis] != reference[axis]:
            return i + 1
    if row["start"] != reference["start"]:
        return 5 if row["start"].startswith("full") else 4
    return 0


def rows(runs: pd.DataFrame, reference_path=None) -> pd.DataFrame:
    """One row per variant: the dense network, the reference run, then one changed setting each."""
    measured = tables.per_run(runs).merge(settings(runs), on="run_id")
    out = tables.aggregate(measured)
    out = tables.attach_paper(out, TABLE, reference_path=reference_path)
    grown = out[out["kind"] == "grow"]
    is_ref = grown["variant"] == REFERENCE_VARIANT
    reference = grown[is_ref].iloc[0] if is_ref.any() else (grown.iloc[0] if len(grown) else None)
    groups = []
    for _, r in out.iterrows():
        if r["kind"] != "grow":
            groups.append(-1)
        elif reference is None or r["variant"] == reference["variant"]:
            groups.append(0)
        else:
            groups.append(max(1, group_of(r, reference)))
    out["group"] = groups
    return out.sort_values(["group", "variant"]).reset_index(drop=True)


def references(r: pd.DataFrame) -> list:
    """Each row's reference: every row against the reference run, the reference run against the
    dense network, the dense network none."""
    position = {v: i for i, v in enumerate(r["variant"])}
    reference = r.loc[r["group"] == 0, "variant"]
    ref = position[reference.iloc[0]] if len(reference) else None
    dense = [position[v] for v in r.loc[r["kind"] == "dense", "variant"]]
    return [None if k == "dense" else (dense[0] if dense else None) if i == ref else ref
            for i, k in enumerate(r["kind"])]


def draw(runs, stem: Path, profile: str, store=None, reference_path=None) -> list[Path]:
    r = rows(runs, reference_path)
    labels = {"variant": list(r["variant"]), "sampling": list(r["sampling"]),
              "budget": list(r["budget"]), "temperature": list(r["temperature"]),
              "start": list(r["start"])}
    display = pd.DataFrame({**labels, **tables.metric_columns(r), "seeds": list(r["n_seeds"])})
    csv = tables.csv_frame(r, ["variant", "sampling", "budget", "temperature", "start", "group"])
    notes = ["Rows: the dense ResNet-20 (savings reference), the reference run, then one changed "
             f"setting per row, grouped by {', '.join(AXES)}."]
    if (r["train_reference"] != "dense run").any():
        notes.append("No dense ResNet-20 run is tracked for this profile: training savings are "
                     "against the dense model over each run's own schedule.")
    comparison = tables.compare(r, references(r), references="this row minus the row "
                                "named under `reference` (every changed setting against the "
                                "reference run, the reference run against the dense ResNet-20)")
    return tables.write_rows(stem, r, display, csv, title=TITLE, profile=profile, n_left=5,
                             notes=notes, names="{variant}", groups="group", table=TABLE,
                             reference_path=reference_path, comparisons=[comparison])
