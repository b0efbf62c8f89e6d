"""What every table shares: tracked runs -> per-run numbers -> rows over seeds -> MD, CSV, LaTeX.

Numbers, all read from the tracking store (the last value of each metric):
  top-1        val/acc of the final hard architecture (percent)
  params, MACs cost/params and cost/macs of the final hard architecture (conv + linear layers)
  inference savings  1 - MACs / MACs of the dense model of the same model name at full width
                     (the dense run's, or a gated run's cost/dense_macs when no dense run is there)
  training savings   1 - cost/train_macs_total / the same total of the dense run of that model,
                     i.e. against the dense model trained for the *dense row's* schedule. Pruning
                     baselines count their pre-training and fine-tuning; without a dense run the
                     run's own cost/dense_train_macs_total (dense over the run's schedule) is used
                     and the row says so.
  realised training savings  1 - training time / the mean of the dense runs of that model with
                     the same `device` tag (the device, its threads, how many runs trained at
                     once): CPU time where tracked, else wall clock; blank without such a dense
                     run. Labelled with the tag.
Rows aggregate seeds: mean ± sample std (ddof = 1; one seed: its value), with the run ids and
each metric's value per seed (`by_seed`). Comparisons (analysis/significance.py): a row against
its reference (growing against dense, a baseline against growing at its budget), paired by seed,
a 95 % confidence interval, beyond seed noise or not; `write` appends them to every output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from reproduce import contract

from .costs import realised_savings
from .reference import paper_columns, unmatched
from . import significance, variants

CONVENTION = ("MACs of conv+linear layers; FLOPs = 2×MACs; training MACs = 3× forward MACs of "
              "the sampled architecture per example")
METRICS = ["top1", "params", "macs", "inference_savings", "train_savings"]
HEADERS = {"top1": "top-1 (%)", "params": "params (M)", "macs": "MACs (M)",
           "inference_savings": "inference savings (%)", "train_savings": "training savings (%)"}
KIND_LABELS = {"dense": "dense", "uniform": "uniform width", "grow": "growing (Yuan et al. 2021)",
               "l1_norm": "L1-norm pruning (Li et al. 2017)",
               "slimming": "network slimming (Liu et al. 2017)"}
KIND_ORDER = ["dense", "grow", "uniform", "l1_norm", "slimming"]
# main metrics written like top-1 (two decimals): top-5, mIoU, pixel accuracy, perplexity
PERCENT_SCORES = ("top1", "top5", "miou", "pixel_acc", "ppl")


# -- per run -------------------------------------------------------------------------------------

def metric(runs: pd.DataFrame, key: str) -> pd.Series:
    """The final value of a tracked metric per run (NaN where the frame lacks it)."""
    return pd.to_numeric(runs[key], errors="coerce") if key in runs \
        else pd.Series(np.nan, index=runs.index)


def per_run(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per tracked run with its kind, budget and the table's metrics."""
    out = pd.DataFrame({
        "run_id": runs["run_id"], "model": runs["model"], "dataset": runs["dataset"],
        "variant": runs["variant"], "seed": runs["seed"].astype(int),
        "method": variants.param(runs, "method", "grow").astype(str),
        "width_multiplier": pd.to_numeric(variants.param(runs, "model.width_multiplier", 1.0)),
        "criterion": variants.param(runs, "baseline.criterion"),
        "budget_target": pd.to_numeric(variants.param(runs, "budget.target"), errors="coerce"),
        "prune_target": pd.to_numeric(variants.param(runs, "baseline.prune_target"), errors="coerce"),
        "top1": metric(runs, contract.VAL_ACC),
        "params": metric(runs, contract.PARAMS) / 1e6,
        "macs": metric(runs, contract.MACS) / 1e6,
        "dense_macs": metric(runs, contract.DENSE_MACS) / 1e6,
        "train_macs_total": metric(runs, contract.TRAIN_MACS_TOTAL),
        "own_dense_train_macs_total": metric(runs, contract.DENSE_TRAIN_MACS_TOTAL),
        "wall_time_s": metric(runs, contract.TRAIN_TIME_TOTAL),
        "cpu_time_s": metric(runs, contract.TRAIN_CPU_TIME_TOTAL),
        "device": (runs["device"] if "device" in runs else pd.Series(None, index=runs.index))
        .fillna("").astype(str),
    })
    out["kind"] = variants.kind(runs)
    out["target"] = np.where(out["kind"] == "grow", out["budget_target"],
                             np.where(out["method"] == "prune", out["prune_target"], np.nan))
    ref_macs, ref_train = {}, {}
    for model, group in out.groupby("model"):
        dense = group[group["kind"] == "dense"]
        full = group[np.isclose(group["width_multiplier"], 1.0)]
        ref_macs[model] = dense["macs"].mean() if len(dense) else full["dense_macs"].median()
        ref_train[model] = dense["train_macs_total"].mean() if len(dense) else np.nan
    out["dense_reference_macs"] = out["model"].map(ref_macs)
    out["inference_savings"] = 100.0 * (1.0 - out["macs"] / out["dense_reference_macs"])
    has_dense = out["model"].map(ref_train).notna()
    denominator = np.where(has_dense, out["model"].map(ref_train), out["own_dense_train_macs_total"])
    out["train_savings"] = 100.0 * (1.0 - out["train_macs_total"] / denominator)
    out["train_reference"] = np.where(has_dense, "dense run", "dense over the run's own schedule")
    out["macs_ratio"] = out["macs"] / out["dense_reference_macs"]
    out["realised_savings"] = realised_savings(out)
    return out


def realised_column(rows: pd.DataFrame) -> list[str]:
    """Realised training savings (mean ± std over seeds) with the device they were measured on."""
    measure = rows["time_measure"] if "time_measure" in rows else ["wall clock"] * len(rows)
    return [f"{mean_std(a, b, 'train_savings')} ({d}{', CPU time' if m == 'CPU time' else ''})"
            if not pd.isna(a) else ""
            for a, b, d, m in zip(rows["realised_savings_mean"], rows["realised_savings_std"],
                                  rows["device"], measure)]


# -- over seeds ----------------------------------------------------------------------------------

def aggregate(frame: pd.DataFrame, keys: list[str] = ("model", "variant"),
              metrics: list[str] = (*METRICS, "macs_ratio", "train_macs_total",
                                    "realised_savings")) -> pd.DataFrame:
    """Mean and sample std over seeds of each metric, per key; run ids sorted by seed."""
    rows = []
    for key, group in frame.groupby(list(keys), sort=False):
        group = group.sort_values("seed")
        first = group.iloc[0]
        row = {c: first[c] for c in frame.columns if c not in metrics and c not in ("run_id", "seed")}
        for m in metrics:
            values = group[m].astype(float)
            row[f"{m}_mean"] = values.mean()
            row[f"{m}_std"] = values.std(ddof=1) if len(values) > 1 else np.nan
        row["by_seed"] = {m: dict(zip(group["seed"].astype(int), group[m].astype(float)))
                          for m in metrics}
        row["n_seeds"] = len(group)
        row["seeds"] = ";".join(str(s) for s in group["seed"])
        row["run_ids"] = ";".join(group["run_id"])
        rows.append(row)
    return pd.DataFrame(rows)


def nominal_levels(rows: pd.DataFrame) -> pd.Series:
    """The budget a row is compared at: its target, or for uniform width the nearest target of
    the same model (by measured MACs ratio); dense = 1."""
    levels = []
    for _, r in rows.iterrows():
        if r["kind"] == "dense":
            levels.append(1.0)
        elif not pd.isna(r.get("target", np.nan)):
            levels.append(float(r["target"]))
        else:
            targets = rows.loc[(rows["model"] == r["model"]) & rows["target"].notna(), "target"]
            ratio = r["macs_ratio_mean"]
            levels.append(float(min(targets, key=lambda t: abs(t - ratio))) if len(targets)
                          else float(ratio))
    return pd.Series(levels, index=rows.index)


# -- which differences are real ------------------------------------------------------------------

@dataclass
class Comparison:
    """Each row of a table against a reference (paired over seeds, analysis/significance.py).
    `frame` has, per row: reference (its name, "" where the row has none), delta_mean, ci_low,
    ci_high, n_paired, verdict. `label` names the metric in headers and notes ("top-1"), `kind`
    formats its numbers (a METRICS / PERCENT_SCORES key), `suffix` tells several comparisons of
    one table apart in headers (" (growing − uniform)"), `prefix` in CSV columns ("uniform_");
    `show_reference` / `show_delta` drop those display columns where the table already shows
    them; `references` says in the table's note which row each row is compared with."""
    frame: pd.DataFrame
    label: str = "top-1"
    kind: str = "top1"
    metric: str = "top1"
    suffix: str = ""
    prefix: str = ""
    show_reference: bool = True
    show_delta: bool = True
    references: str = ("this row minus the row named under `reference` (growing against the "
                       "dense row of its model, every other row against growing at its budget)")


def compare_values(this: list, reference: list, names: list[str], **kw) -> Comparison:
    """Comparison of `this[i]` against `reference[i]`, each a {seed: value} dict (or None where
    the row has no reference); `names[i]` names the reference."""
    out = []
    for a, b, name in zip(this, reference, names):
        if not isinstance(b, dict):
            out.append({"reference": "", "delta_mean": np.nan, "ci_low": np.nan,
                        "ci_high": np.nan, "n_paired": 0, "verdict": ""})
            continue
        p = significance.paired(a if isinstance(a, dict) else {}, b)
        out.append({"reference": name, "delta_mean": p.mean, "ci_low": p.low, "ci_high": p.high,
                    "n_paired": p.n, "verdict": p.verdict})
    frame = pd.DataFrame(out, columns=["reference", "delta_mean", "ci_low", "ci_high", "n_paired",
                                       "verdict"])
    return Comparison(frame, **kw)


def compare(rows: pd.DataFrame, refs: list, metric: str = "top1",
            names: list[str] | None = None, **kw) -> Comparison:
    """Each row's `metric` against the row at position `refs[i]` (None: no reference),
    paired by seed from the rows' `by_seed`. `names`: how each row is named as a reference
    (default its variant)."""
    names = list(rows["variant"]) if names is None else list(names)
    values = [b.get(metric, {}) if isinstance(b, dict) else {} for b in rows["by_seed"]]
    ref_values = [None if j is None else values[j] for j in refs]
    ref_names = ["" if j is None else names[j] for j in refs]
    return compare_values(values, ref_values, ref_names, metric=metric,
                          kind=kw.pop("kind", metric), **kw)


def growing_references(rows: pd.DataFrame) -> list:
    """The reference of each comparison-table row: growing rows against the dense row of their
    model; every other row (uniform width, pruning) against the growing row of its model at its
    budget level (the first by variant name where there are several); dense rows none."""
    refs = []
    for _, r in rows.iterrows():
        same = rows["model"] == r["model"]
        if r["kind"] == "dense":
            candidates = rows.index[:0]
        elif r["kind"] == "grow":
            candidates = rows.index[same & (rows["kind"] == "dense")]
        else:
            candidates = rows.index[same & (rows["kind"] == "grow")
                                    & np.isclose(rows["level"].astype(float), float(r["level"]))]
        candidates = sorted(candidates, key=lambda i: rows.at[i, "variant"])
        refs.append(rows.index.get_loc(candidates[0]) if candidates else None)
    return refs


def reference_names(rows: pd.DataFrame) -> list[str]:
    """How a comparison-table row is named as a reference: "dense", "growing MACs ≤ 0.50"."""
    short = {"grow": "growing", "uniform": "uniform"}
    return [short.get(r["kind"], KIND_LABELS.get(r["kind"], r["kind"])) +
            ("" if r["kind"] == "dense" else f" {budget_text(r)}") for _, r in rows.iterrows()]


def growing_comparison(rows: pd.DataFrame, metric: str = "top1", label: str = "top-1",
                       **kw) -> Comparison:
    """The comparison tables' default: `growing_references` on `metric`."""
    return compare(rows, growing_references(rows), metric, reference_names(rows), label=label,
                   **kw)


def signed(v: float, kind: str) -> str:
    if v is None or pd.isna(v):
        return ""
    return ("+" if v >= 0 else "") + num(v, kind)


def comparison_columns(c: Comparison) -> tuple[dict[str, list], dict[str, list]]:
    """The display and CSV columns of a comparison."""
    f = c.frame
    display = {}
    if c.show_reference:
        display[f"reference{c.suffix}"] = list(f["reference"])
    if c.show_delta:
        display[f"Δ {c.label} vs reference{c.suffix}"] = [signed(v, c.kind) for v in f["delta_mean"]]
    display[f"95% CI{c.suffix}"] = ["" if pd.isna(lo) else
                                    f"[{signed(lo, c.kind)}, {signed(hi, c.kind)}]"
                                    for lo, hi in zip(f["ci_low"], f["ci_high"])]
    display[f"beyond noise{c.suffix}"] = list(f["verdict"])
    p, m = c.prefix, c.metric
    csv = {f"{p}reference": list(f["reference"]), f"{p}delta_{m}_mean": list(f["delta_mean"]),
           f"{p}delta_{m}_ci95_low": list(f["ci_low"]),
           f"{p}delta_{m}_ci95_high": list(f["ci_high"]),
           f"{p}n_paired_seeds": list(f["n_paired"]), f"{p}beyond_noise": list(f["verdict"])}
    return display, csv


# -- formatting ----------------------------------------------------------------------------------

def num(v: float, kind: str) -> str:
    if v is None or pd.isna(v):
        return ""
    if kind in PERCENT_SCORES:
        return f"{v:.2f}"
    if kind in ("inference_savings", "train_savings", "realised_savings"):
        return f"{v:.1f}"
    a = abs(v)
    return f"{v:.3f}" if a < 1 else f"{v:.2f}" if a < 100 else f"{v:.1f}"


def mean_std(mean: float, std: float, kind: str) -> str:
    if pd.isna(mean):
        return ""
    text = num(mean, kind)
    return text if pd.isna(std) else f"{text} ± {num(std, kind)}"


def plain(v) -> str:
    """A paper value as given (no padding), blank where unknown."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:g}" if isinstance(v, (int, float)) else str(v)


def budget_text(r) -> str:
    if r["kind"] == "dense":
        return "–"
    if r["kind"] == "uniform":
        return f"width ×{r['width_multiplier']:g}"
    if r["kind"] == "grow":
        return f"MACs ≤ {r['target']:.2f}"
    return f"keep {r['target']:.2f} MACs"


def row_labels(rows: pd.DataFrame) -> dict[str, list[str]]:
    """The left columns every comparison table starts with: model, method, budget."""
    return {"model": list(rows["model"]),
            "method": [KIND_LABELS.get(k, k) for k in rows["kind"]],
            "budget": [budget_text(x) for _, x in rows.iterrows()]}


def metric_columns(rows: pd.DataFrame, metrics: list[str] = METRICS,
                   headers: dict[str, str] = HEADERS, realised: bool = False) -> dict[str, list]:
    """The reproduced metrics (mean ± std) then the paper's, as display columns; with
    `realised`, the realised training savings follow the counted ones."""
    cols = {}
    for m in metrics:
        cols[headers[m]] = [mean_std(a, b, m) for a, b in zip(rows[f"{m}_mean"], rows[f"{m}_std"])]
        if realised and m == "train_savings":
            cols["realised training savings (%)"] = realised_column(rows)
    for m in metrics:
        paper = rows.get(f"paper_{m}", [np.nan] * len(rows))
        cols[f"paper {headers[m]}"] = [plain(v) for v in paper]
    return cols


def attach_paper(rows: pd.DataFrame, table: str, metrics: list[str] = METRICS,
                 reference_path=None) -> pd.DataFrame:
    """The paper's value of each metric beside each (model, variant) row: `paper_<metric>`."""
    paper = paper_columns(table, metrics, reference_path)
    return rows.merge(paper, on=["model", "variant"], how="left").fillna({"paper_source": ""})


def order(rows: pd.DataFrame, model_order: list[str] = ()) -> pd.DataFrame:
    """Table order: models as listed (others after, by name), then per model the budget level
    from the largest down, the kinds in KIND_ORDER, and the variant name."""
    models = {m: i for i, m in enumerate(model_order)}
    kinds = {k: i for i, k in enumerate(KIND_ORDER)}
    out = rows.assign(_model=rows["model"].map(lambda m: models.get(m, len(models))),
                      _kind=rows["kind"].map(lambda k: kinds.get(k, len(kinds))))
    out = out.sort_values(["_model", "model", "level", "_kind", "variant"],
                          ascending=[True, True, False, True, True])
    return out.drop(columns=["_model", "_kind"]).reset_index(drop=True)


def comparison_rows(per: pd.DataFrame, table: str, metrics: list[str] = METRICS,
                    model_order: list[str] = (), reference_path=None) -> pd.DataFrame:
    """A comparison table's rows from per-run numbers: seeds aggregated, the budget level each
    row is compared at, the paper's values beside, in table order."""
    out = aggregate(per, metrics=[*metrics, "macs_ratio", "train_macs_total", "realised_savings"])
    out["level"] = nominal_levels(out)
    return order(attach_paper(out, table, metrics, reference_path), model_order)


def unmatched_paper_rows(table: str, rows: pd.DataFrame, reference_path=None) -> str:
    """Markdown listing the reference values of this table that sit beside no reproduced row."""
    extra = unmatched(table, set(zip(rows["model"], rows["variant"])), reference_path)
    if extra.empty:
        return ""
    cols = ["model", "dataset", "method", "variant", "metric", "value_text", "unit", "source"]
    return ("Paper values without a reproduced row (analysis/reference.csv):\n\n"
            + markdown(extra[cols].rename(columns={"value_text": "value"})))


def csv_frame(rows: pd.DataFrame, label_columns: list[str],
              metrics: list[str] = METRICS) -> pd.DataFrame:
    """The CSV columns of a table: labels, row identity, mean and std of each metric, paper
    values, run ids. `metrics` are the task's (classification's by default)."""
    keep = [*label_columns, "dataset", "variant", "kind", "width_multiplier", "target", "n_seeds",
            "seeds"]
    for m in (*metrics, "macs_ratio", "train_macs_total"):
        keep += [f"{m}_mean", f"{m}_std"]
    keep += ["train_reference", *(f"paper_{m}" for m in metrics), "paper_source", "run_ids"]
    seen = list(dict.fromkeys(c for c in keep if c in rows.columns))
    out = rows[seen].rename(columns={"params_mean": "params_m_mean", "params_std": "params_m_std",
                                     "macs_mean": "macs_m_mean", "macs_std": "macs_m_std"})
    return out


# -- writers -------------------------------------------------------------------------------------

def _md_cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown(display: pd.DataFrame) -> str:
    header = "| " + " | ".join(_md_cell(c) for c in display.columns) + " |"
    rule = "|" + "|".join("---" for _ in display.columns) + "|"
    body = ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in display.itertuples(index=False)]
    return "\n".join([header, rule, *body])


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
        "±": r"$\pm$", "×": r"$\times$", "≤": r"$\leq$", "–": "--", "τ": r"$\tau$", "β": r"$\beta$",
        "ρ": r"$\rho$", "λ": r"$\lambda$", "Δ": r"$\Delta$"}


def tex_escape(text) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(text))


def latex(display: pd.DataFrame, n_left: int, groups: list | None = None,
          comments: list[str] = ()) -> str:
    spec = "l" * n_left + "r" * (len(display.columns) - n_left)
    lines = [f"% {c}" for c in comments]
    lines += [r"% requires \usepackage{booktabs}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
              " & ".join(tex_escape(c) for c in display.columns) + r" \\", r"\midrule"]
    previous = None
    for i, row in enumerate(display.itertuples(index=False)):
        if groups is not None and i > 0 and groups[i] != previous:
            lines.append(r"\midrule")
        previous = groups[i] if groups is not None else None
        lines.append(" & ".join(tex_escape(v) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def write(stem: Path, display: pd.DataFrame, csv: pd.DataFrame, *, title: str, profile: str,
          datasets: list[str], run_ids: list[list[str]], row_names: list[str], n_left: int,
          notes: list[str] = (), groups: list | None = None, extra_md: str = "",
          columns_note: str | None = None, comparisons: list[Comparison] = ()) -> list[Path]:
    """Write <stem>.md, <stem>.csv and <stem>.tex. Markdown and LaTeX get a `runs` column whose
    [k] points at the list of MLflow run ids under the table; the CSV has them in `run_ids`.
    `columns_note` replaces the default note on the reproduced columns (mean ± std, savings).
    `comparisons` are appended after the table's own columns (display and CSV), with a note on
    how to read them."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    display = display.copy()
    csv = csv.copy()
    for c in comparisons:
        shown, columns = comparison_columns(c)
        for k, v in shown.items():
            display[k] = v
        for k, v in columns.items():
            csv[k] = v
    if comparisons:
        notes = [*notes, significance.NOTE.format(
            metric=" / ".join(dict.fromkeys(c.label for c in comparisons)),
            references="; ".join(dict.fromkeys(c.references for c in comparisons)))]
    display["runs"] = [f"[{i + 1}]" for i in range(len(display))]
    name = stem.name
    header = [f"Profile `{profile}`; dataset: {', '.join(datasets)}.",
              f"Cost convention: {CONVENTION}.",
              columns_note or
              "Reproduced columns: mean ± sample std over seeds (one seed: its value alone). "
              "Savings are against the dense row of the same model: inference = 1 − MACs/dense "
              "MACs; training = 1 − training MACs/the dense run's training MACs (pruning "
              "baselines pay for pre-training and fine-tuning).",
              "Paper columns: analysis/reference.csv (blank = not known here; fill them in "
              "from the paper's PDF), never mixed into the reproduced values.",
              *notes,
              f"Run ids: [k] in the `runs` column is listed below; also `run_ids` in {name}.csv "
              f"and {name}.runs.json."]
    run_lines = [f"[{i + 1}] {label}: {', '.join(ids)}"
                 for i, (label, ids) in enumerate(zip(row_names, run_ids))]
    md = [f"# {title}", "", *(f"- {h}" for h in header), "", markdown(display), ""]
    if extra_md:
        md += [extra_md, ""]
    md += ["Runs (MLflow run ids):", "", *(f"- {line}" for line in run_lines), ""]
    paths = [stem.with_suffix(".md"), stem.with_suffix(".csv"), stem.with_suffix(".tex")]
    paths[0].write_text("\n".join(md))
    csv.to_csv(paths[1], index=False)
    comments = [title, *header, *run_lines]
    paths[2].write_text(latex(display, n_left, groups, comments))
    return paths


def write_rows(stem: Path, rows: pd.DataFrame, display: pd.DataFrame, csv: pd.DataFrame, *,
               title: str, profile: str, n_left: int, table: str | None = None,
               reference_path=None, names: str = "{model} / {variant}",
               groups: str | None = "model", datasets: list[str] | None = None,
               run_ids: list[list[str]] | None = None, **kw) -> list[Path]:
    """`write` with what a table derives from its rows: the datasets, each row's run ids (its
    `run_ids`, joined by ";"), a name per row (`names`, formatted with the row's columns), the
    groups between which LaTeX draws a rule (a column, or None) and, for a `table` of the
    reference file, its paper values beside no reproduced row. `kw` goes to `write`."""
    return write(stem, display, csv, title=title, profile=profile, n_left=n_left,
                 datasets=sorted(rows["dataset"].unique()) if datasets is None else datasets,
                 run_ids=[ids.split(";") for ids in rows["run_ids"]] if run_ids is None
                 else run_ids,
                 row_names=[names.format(**r) for r in rows.to_dict("records")],
                 groups=list(rows[groups]) if groups else None,
                 extra_md=unmatched_paper_rows(table, rows, reference_path) if table else "",
                 **kw)


def dynamics(runs: pd.DataFrame, store) -> pd.DataFrame:
    """How each run grew: val/acc after epoch 2, the largest budget usage after the seed, and
    the first epoch whose usage reached 90 % of its target (from the tracked histories)."""
    h = store.histories(runs, f"{contract.VAL_ACC}|{contract.USAGE}")
    out = []
    for run_id, g in h.groupby("run_id"):
        acc = g[g["key"] == contract.VAL_ACC].set_index("epoch")["value"]
        use = g[(g["key"] == contract.USAGE) & (g["epoch"] >= 1)].set_index("epoch")["value"]
        target = float(runs.loc[runs["run_id"] == run_id, "param.budget.target"].iloc[0])
        grown = use[use >= 0.9 * target]
        out.append({"run_id": run_id, "acc_epoch2": acc.get(2, np.nan),
                    "max_usage": use.max() if len(use) else np.nan,
                    "epoch_at_budget": float(grown.index.min()) if len(grown) else np.nan})
    return pd.DataFrame(out, columns=["run_id", "acc_epoch2", "max_usage", "epoch_at_budget"])
