"""The one helper every analysis module shares: tracked runs into pandas.

Analysis reads the tracking store only, never training code or its memory, so figures can be
redrawn on any machine from a copied store.
"""

from __future__ import annotations

import json
import os
import re

import pandas as pd

from reproduce import contract, tracking

# Figures read a few small artifacts per run: no per-file download progress bars.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def load_runs(profile: str, hashes: set[str] | None = None, figure: str | None = None,
              uri: str | None = None) -> pd.DataFrame:
    """Finished runs of a profile, one row per config hash (the newest), as a DataFrame.

    Select by config hashes (what a figure's experiment files resolve to) and/or by a figure id
    in the `figures` tag. Columns: run_id, the contract's tags, `param.<config key>`, and the
    last value of every metric.
    """
    c = tracking.client(uri)
    exp_id = tracking.experiment_id(c, profile, create=False)
    if exp_id is None:
        return pd.DataFrame()
    rows = []
    for r in c.search_runs([exp_id], "attributes.status = 'FINISHED'",
                           order_by=["attributes.start_time DESC"], max_results=50000):
        tags = r.data.tags
        if hashes is not None and tags.get("config_hash") not in hashes:
            continue
        if figure is not None and figure not in tags.get("figures", "").split(","):
            continue
        rows.append({"run_id": r.info.run_id, "start_time": r.info.start_time,
                     **{t: tags.get(t) for t in contract.TAGS},
                     **{f"param.{k}": v for k, v in r.data.params.items()},
                     **r.data.metrics})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["seed"] = frame["seed"].astype(int)
    frame = frame.drop_duplicates("config_hash", keep="first")
    return frame.sort_values(["experiment", "variant", "seed"]).reset_index(drop=True)


def history(run_id: str, pattern: str, uri: str | None = None) -> pd.DataFrame:
    """Per-epoch values of every metric of a run whose key matches `pattern` (a regex).

    Long format: columns run_id, key, epoch, value.
    """
    c = tracking.client(uri)
    keys = [k for k in c.get_run(run_id).data.metrics if re.fullmatch(pattern, k)]
    rows = []
    for key in keys:
        for m in c.get_metric_history(run_id, key):
            rows.append({"run_id": run_id, "key": key, "epoch": m.step, "value": m.value})
    return pd.DataFrame(rows, columns=["run_id", "key", "epoch", "value"])


def histories(runs: pd.DataFrame, pattern: str, uri: str | None = None) -> pd.DataFrame:
    frames = [history(r, pattern, uri) for r in runs["run_id"]]
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return out.merge(runs[["run_id", "variant", "seed", "model"]], on="run_id") if len(out) else out


def artifact_json(run_id: str, path: str, uri: str | None = None) -> dict:
    c = tracking.client(uri)
    with open(c.download_artifacts(run_id, path)) as f:
        return json.load(f)


def architecture(run_id: str, uri: str | None = None) -> dict:
    """A run's architecture.json; stops clearly for runs tracked before it named stage and role."""
    arch = artifact_json(run_id, contract.ARTIFACT_ARCH, uri)
    if "layers" not in arch or "gates" not in arch:
        raise ValueError(f"run {run_id} was tracked before architecture.json recorded each "
                         f"layer's stage and role; retrain it (FORCE=1) to draw this figure")
    return arch


def layer_info(run_id: str, uri: str | None = None) -> pd.DataFrame:
    """Per gated layer of a run, in network order: layer, order, stage, role, dense_width."""
    layers = architecture(run_id, uri)["layers"]
    return pd.DataFrame([{"layer": name, "order": i, "stage": v["stage"], "role": v["role"],
                          "dense_width": v["dense_width"]} for i, (name, v) in enumerate(layers.items())],
                        columns=["layer", "order", "stage", "role", "dense_width"])


def gate_info(run_id: str, uri: str | None = None) -> dict[str, dict]:
    """Per gate of a run: kind (channel or block), stage, role and the layers writing it."""
    return architecture(run_id, uri)["gates"]


def structure_traces(run_id: str, uri: str | None = None) -> pd.DataFrame:
    """Per-structure β, logit and hard state per epoch (columns epoch, gate, index, kind, ...)."""
    c = tracking.client(uri)
    return pd.read_csv(c.download_artifacts(run_id, contract.ARTIFACT_TRACES))


def architectures(runs: pd.DataFrame, uri: str | None = None) -> pd.DataFrame:
    """Final per-layer channel counts of each run (its architecture.json), long format.

    Columns: run_id, variant, seed, layer, order (position in the network), width, ratio (the
    final `channels/<layer>` metric) and dense_width. The dense width is width / ratio, taken from
    whichever run of the frame keeps any channel of that layer (a dense run has no gates).
    """
    rows = []
    for r in runs.to_dict("records"):
        widths = artifact_json(r["run_id"], contract.ARTIFACT_ARCH, uri).get("widths", {})
        for order, (layer, width) in enumerate(widths.items()):
            rows.append({"run_id": r["run_id"], "variant": r["variant"], "seed": r["seed"],
                         "layer": layer, "order": order, "width": width,
                         "ratio": r.get(f"channels/{layer}", float("nan"))})
    out = pd.DataFrame(rows, columns=["run_id", "variant", "seed", "layer", "order", "width",
                                      "ratio"])
    dense = (out["width"] / out["ratio"].where(out["ratio"] > 0)).round()
    out["dense_width"] = dense.groupby(out["layer"]).transform("max")
    return out
