"""The read side of the tracking store: finished runs, their per-epoch histories and artifacts.

    store = Store(uri)                 # one MLflow client on one store
    runs = store.runs("smoke", hashes)  # one row per config hash: tags, params, final metrics
    h = store.histories(runs, r"channels/stage\\d+")

Every figure and table receives a Store and reads nothing else, so any output can be redrawn on
another machine from a copied store. Writing runs is `tracking.py`'s job; the names read here
are `contract.py`'s.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import pandas as pd

from . import contract, tracking

# Figures read a few small artifacts per run: no per-file download progress bars.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

HISTORY_COLUMNS = ["run_id", "key", "epoch", "value"]


class Store:
    """Tracked runs as pandas frames, read through one MLflow client."""

    def __init__(self, uri: str | None = None):
        self.client = tracking.client(uri)

    def runs(self, profile: str, hashes: set[str] | None = None) -> pd.DataFrame:
        """Finished runs of a profile, one row per config hash (the newest), optionally only
        those with the given hashes (what an output's experiment files resolve to).

        Columns: run_id, start_time, the contract's tags, `param.<config key>` and the last
        value of every metric (constants logged once as params included,
        `contract.final_metrics`); sorted by experiment, variant and seed.
        """
        exp_id = tracking.experiment_id(self.client, profile, create=False)
        if exp_id is None:
            return pd.DataFrame()
        rows = []
        for r in self.client.search_runs([exp_id], "attributes.status = 'FINISHED'",
                                         order_by=["attributes.start_time DESC"],
                                         max_results=50000):
            tags = r.data.tags
            if hashes is not None and tags.get("config_hash") not in hashes:
                continue
            rows.append({"run_id": r.info.run_id, "start_time": r.info.start_time,
                         **{t: tags.get(t) for t in contract.TAGS},
                         **{f"param.{k}": v for k, v in r.data.params.items()},
                         **contract.final_metrics(r.data.metrics, r.data.params)})
        frame = pd.DataFrame(rows)
        if frame.empty:
            return frame
        frame["seed"] = frame["seed"].astype(int)
        frame = frame.drop_duplicates("config_hash", keep="first")
        return frame.sort_values(["experiment", "variant", "seed"]).reset_index(drop=True)

    def history(self, run_id: str, pattern: str) -> pd.DataFrame:
        """Per-epoch values of every metric of a run whose key matches `pattern` (a regex).

        Long format: run_id, key, epoch, value.
        """
        keys = [k for k in self.client.get_run(run_id).data.metrics if re.fullmatch(pattern, k)]
        rows = [{"run_id": run_id, "key": key, "epoch": m.step, "value": m.value}
                for key in keys for m in self.client.get_metric_history(run_id, key)]
        return pd.DataFrame(rows, columns=HISTORY_COLUMNS)

    def histories(self, runs: pd.DataFrame, pattern: str) -> pd.DataFrame:
        """`history` of every run of the frame, with its variant, seed and model."""
        frames = [self.history(r, pattern) for r in runs["run_id"]]
        out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return out.merge(runs[["run_id", "variant", "seed", "model"]], on="run_id") \
            if len(out) else out

    def _read(self, run_id: str, path: str, read):
        with tempfile.TemporaryDirectory() as tmp:
            return read(Path(self.client.download_artifacts(run_id, path, tmp)))

    def artifact_json(self, run_id: str, path: str) -> dict:
        return self._read(run_id, path, lambda p: json.loads(p.read_text()))

    def architecture(self, run_id: str) -> dict:
        """A run's architecture.json; stops clearly for runs tracked before it named stage and
        role."""
        arch = self.artifact_json(run_id, contract.ARTIFACT_ARCH)
        if "layers" not in arch or "gates" not in arch:
            raise ValueError(f"run {run_id} was tracked before architecture.json recorded each "
                             f"layer's stage and role; retrain it (FORCE=1) to draw this figure")
        return arch

    def layers(self, run_id: str) -> pd.DataFrame:
        """Per gated layer of a run, in network order: layer, order, stage, role, dense_width."""
        columns = ["layer", "order", "stage", "role", "dense_width"]
        layers = self.architecture(run_id)["layers"]
        return pd.DataFrame([{"layer": name, "order": i, "stage": v["stage"], "role": v["role"],
                              "dense_width": v["dense_width"]}
                             for i, (name, v) in enumerate(layers.items())], columns=columns)

    def gates(self, run_id: str) -> dict[str, dict]:
        """Per gate of a run: kind (channel or block), stage, role and the layers writing it."""
        return self.architecture(run_id)["gates"]

    def traces(self, run_id: str) -> pd.DataFrame:
        """Per-structure β, logit and hard state per epoch (epoch, gate, index, kind, ...)."""
        return self._read(run_id, contract.ARTIFACT_TRACES, pd.read_csv)

    def architectures(self, runs: pd.DataFrame) -> pd.DataFrame:
        """Final per-layer channel counts of each run (its architecture.json), long format.

        Columns: run_id, variant, seed, layer, order (position in the network), width, ratio
        (the final `channels/<layer>` metric) and dense_width. The dense width is width / ratio,
        taken from whichever run of the frame keeps any channel of that layer (a dense run has
        no gates).
        """
        rows = []
        for r in runs.to_dict("records"):
            widths = self.artifact_json(r["run_id"], contract.ARTIFACT_ARCH).get("widths", {})
            for order, (layer, width) in enumerate(widths.items()):
                rows.append({"run_id": r["run_id"], "variant": r["variant"], "seed": r["seed"],
                             "layer": layer, "order": order, "width": width,
                             "ratio": r.get(contract.channels(layer), float("nan"))})
        out = pd.DataFrame(rows, columns=["run_id", "variant", "seed", "layer", "order", "width",
                                          "ratio"])
        dense = (out["width"] / out["ratio"].where(out["ratio"] > 0)).round()
        out["dense_width"] = dense.groupby(out["layer"]).transform("max")
        return out
