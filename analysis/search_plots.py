"""Figures of an Optuna search: accuracy against MACs of every trial with the Pareto front, and
hyper-parameter importances.

Reads the Optuna storage only (each trial's final metrics, constraint values and MLflow run id are
stored as trial user attributes by `reproduce.search.objective`), so it works for a copied storage
file and for any spec, single- or multi-objective. Feasibility, the best trial and Pareto dominance
come from `reproduce.study_results`, the same rules the search and search-best use.

Called by `python -m reproduce pareto SPEC` (`make figure-pareto SEARCH=name`). Not named
figure_*.py: it is not a figure of the paper and is not drawn by `make figures`.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import optuna
import pandas as pd
from optuna.trial import TrialState

from reproduce.contract import MACS_RATIO as MACS, USAGE, VAL_ACC as ACC
from reproduce.study_results import best_trial, is_feasible, pareto_mask

from . import figures_dir, style
from .index import write_index


def trials_frame(study, spec=None) -> pd.DataFrame:
    """One row per trial: number, state, accuracy, MACs ratio, feasibility, params, MLflow run."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        m = t.user_attrs.get("metrics") or {}
        rows.append({"number": t.number, "state": t.state.name,
                     "acc": m.get(ACC, math.nan), "macs": m.get(MACS, math.nan),
                     "feasible": is_feasible(t),
                     "values": list(t.values) if t.values else None,
                     "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
                     "reason": t.user_attrs.get("fail_reason") or t.user_attrs.get("stop_reason") or "",
                     **{f"param.{k}": v for k, v in t.params.items()}})
    return pd.DataFrame(rows)


def front_of(points: pd.DataFrame) -> pd.DataFrame:
    """The rows no other row beats on both accuracy (higher) and MACs (lower)."""
    mask = pareto_mask(list(zip(points["acc"], points["macs"])), ("maximize", "minimize"))
    return points[mask]


def _best(feasible: pd.DataFrame, study):
    """Single-objective studies: the best feasible complete trial (the one search-best writes)."""
    if len(study.directions) != 1 or feasible.empty:
        return None
    best = best_trial(study)
    match = feasible[feasible["number"] == best.number] if best is not None else feasible.iloc[:0]
    return match.iloc[0] if len(match) else None


def _subtitle(study, spec) -> str:
    attrs = study.user_attrs
    base = attrs.get("base", "")
    base = Path(base).stem if base else "?"
    objectives = "; ".join(attrs.get("objectives", [])) or "?"
    constraints = "; ".join(attrs.get("constraints", []))
    return (f"study {study.study_name} (base {base}, {attrs.get('profile', '?')} profile): "
            f"{objectives}" + (f"; s.t. {constraints}" if constraints else ""))


def draw_pareto(study, spec, stem: Path) -> list[Path]:
    style.setup()
    df = trials_frame(study, spec)
    fig, ax = plt.subplots(figsize=(6.4, 4.6), layout="constrained")
    done = df[(df["state"] == "COMPLETE") & df["acc"].notna() & df["macs"].notna()]
    feas = done[done["feasible"]]
    infeas = done[~done["feasible"]]
    pruned = df[(df["state"] == "PRUNED") & df["acc"].notna() & df["macs"].notna()]
    failed = df[df["state"] == "FAIL"]
    if len(pruned):
        ax.scatter(pruned["macs"], pruned["acc"], marker="x", s=28, color="0.6", alpha=0.6,
                   label=f"pruned ({len(pruned)}; values when stopped)", zorder=2)
    if len(infeas):
        ax.scatter(infeas["macs"], infeas["acc"], s=40, facecolors="none", edgecolors="tab:red",
                   label=f"complete, violates constraint ({len(infeas)})", zorder=3)
    off_front = done.drop(front_of(feas).index) if len(feas) else done
    for r in off_front.itertuples():                   # small grey numbers off the front
        ax.annotate(f"#{r.number}", (r.macs, r.acc), textcoords="offset points", xytext=(4, 3),
                    fontsize=6, color="0.45")
    if len(feas):
        front = front_of(feas).sort_values("macs")
        rest = feas.drop(front.index)
        if len(rest):
            ax.scatter(rest["macs"], rest["acc"], s=36, color="tab:blue", alpha=0.55,
                       label=f"complete ({len(rest)})", zorder=3)
        ax.step(front["macs"], front["acc"], where="post", color="tab:orange", lw=1.8, zorder=4)
        ax.scatter(front["macs"], front["acc"], s=70, color="tab:orange", edgecolors="black",
                   lw=0.6, label=f"Pareto front ({len(front)})", zorder=5)
        for (x, y), group in front.groupby(["macs", "acc"]):      # identical points share a label
            ax.annotate(",".join(f"#{n}" for n in group["number"]), (x, y),
                        textcoords="offset points", xytext=(5, 4), fontsize=7)
        best = _best(feas, study)
        if best is not None:
            ax.scatter([best.macs], [best.acc], marker="*", s=260, color="gold", edgecolors="black",
                       lw=0.8, label=f"best trial #{best.number} ({study.metric_names[0]})"
                       if study.metric_names else f"best trial #{best.number}", zorder=6)
    for cn in getattr(spec, "constraints", []) or []:
        if cn.metric in (USAGE, MACS):
            for bound in (cn.max, cn.min):
                if bound is not None:
                    ax.axvline(bound, color="tab:red", ls="--", lw=1,
                               label=f"constraint {cn.describe()}")
    if not (len(done) or len(pruned)):
        ax.text(0.5, 0.5, "no finished trials yet", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel("inference MACs / dense MACs (final architecture)")
    ax.set_ylabel("validation top-1 accuracy (%)")
    n = {s: int((df["state"] == s).sum()) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")}
    ax.set_title("Accuracy vs inference cost of every trial\n" + _subtitle(study, spec), fontsize=9)
    note = (f"{n['COMPLETE']} complete, {n['PRUNED']} pruned, {n['FAIL']} failed"
            + (f" (trials {', '.join(map(str, failed['number']))})" if len(failed) else "")
            + (f", {n['RUNNING']} running" if n["RUNNING"] else "")
            + ". MACs of conv and linear layers; FLOPs = 2 x MACs.")
    fig.text(0.01, -0.02, note, fontsize=7, ha="left", va="top")
    ax.legend(fontsize=7, loc="best", framealpha=0.85)
    return style.save(fig, stem)


def importances(study, spec) -> tuple[dict[str, dict[str, float]], str | None]:
    """{objective: {param: importance}}, or ({}, why not)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < 2:
        return {}, (f"parameter importances need at least 2 complete trials; the study has "
                    f"{len(done)}. Run more trials (make search SEARCH={getattr(spec, 'name', '?')} "
                    f"TRIALS=n) and redraw.")
    names = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
    out = {}
    for i, name in enumerate(names):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[name] = optuna.importance.get_param_importances(
                    study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                    target=(lambda t, i=i: t.values[i]))
        except (ValueError, RuntimeError) as e:
            return {}, f"parameter importances could not be computed: {e}"
    if not any(out.values()):
        return {}, ("parameter importances: no parameter was sampled in every complete trial "
                    "(conditional parameters are left out)")
    return out, None


def draw_importance(study, spec, stem: Path) -> tuple[list[Path], str | None]:
    imps, why = importances(study, spec)
    if not imps:
        return [], why
    style.setup()
    fig, axes = plt.subplots(1, len(imps), figsize=(4.6 * len(imps), 0.45 * max(
        len(v) for v in imps.values()) + 1.6), squeeze=False, layout="constrained")
    for ax, (name, vals) in zip(axes[0], imps.items()):
        items = sorted(vals.items(), key=lambda kv: kv[1])
        ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
        for y, (_, v) in enumerate(items):
            ax.text(v, y, f" {v:.2f}", va="center", fontsize=7)
        ax.set_xlabel("importance (fANOVA, normalised)")
        ax.set_title(name, fontsize=9)
        ax.set_xlim(0, max(1e-9, max(vals.values())) * 1.2)
    n = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    fig.suptitle(f"Hyper-parameter importance ({n} complete trials)\n" + _subtitle(study, spec),
                 fontsize=9)
    return style.save(fig, stem), None


def draw_search(spec, study, out_dir: Path | None = None) -> list[Path]:
    """figures/<spec>-pareto.{png,pdf}, figures/<spec>-importance.{png,pdf}, and a sidecar."""
    out_dir = Path(out_dir or figures_dir())
    out_dir.mkdir(parents=True, exist_ok=True)
    name = spec.name
    outputs = draw_pareto(study, spec, out_dir / f"{name}-pareto")
    imp, why = draw_importance(study, spec, out_dir / f"{name}-importance")
    if why:
        print(why)
    outputs += imp
    df = trials_frame(study, spec)
    sidecar = out_dir / f"{name}-pareto.runs.json"
    sidecar.write_text(json.dumps({
        "output": f"{name}-pareto", "study": study.study_name, "spec": name,
        "trials": [{"number": int(r.number), "state": r.state, "mlflow_run_id": r.mlflow_run_id,
                    "val/acc": None if pd.isna(r.acc) else r.acc,
                    "cost/macs_ratio": None if pd.isna(r.macs) else r.macs}
                   for r in df.itertuples()],
        "drawn_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }, indent=2))
    write_index(out_dir)
    return [*outputs, sidecar]
