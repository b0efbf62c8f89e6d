"""The analysis layer's shared parts: the store reader, the run taxonomy and the tables' shared
tail (ordering, paper values for any metric, the derived arguments of the writer)."""

from __future__ import annotations

import gzip
import json
import random

import numpy as np
import pandas as pd
import pytest

from analysis import reference, tables, variants
from reproduce import contract, tracking
from reproduce.store import Store


@pytest.fixture
def rng():
    seed = random.SystemRandom().randrange(2**31)
    print(f"numpy seed {seed}")
    return np.random.default_rng(seed)


# -- the store reader -----------------------------------------------------------------------------

def _track(c, exp_id, rng, tmp_path, *, config_hash, start, status="FINISHED", arch=None):
    run = c.create_run(exp_id, start_time=start, tags={
        "model": "m", "dataset": "d", "profile": "tiny", "variant": f"v-{config_hash}",
        "seed": "0", "experiment": "e", "config_hash": config_hash})
    run_id = run.info.run_id
    c.log_param(run_id, "budget.target", str(round(float(rng.uniform(0.2, 0.8)), 3)))
    epochs = int(rng.integers(2, 6))
    values = rng.uniform(0, 100, size=epochs).round(3)
    for step, v in enumerate(values):
        c.log_metric(run_id, contract.VAL_ACC, float(v), step=step)
        c.log_metric(run_id, contract.channels("conv1"), float(v) / 100, step=step)
    if arch is not None:
        path = tmp_path / run_id / contract.ARTIFACT_ARCH
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(arch))
        c.log_artifact(run_id, str(path))
    c.set_terminated(run_id, status)
    return run_id, values


def test_store_reads_the_newest_finished_run_of_each_config(tmp_path, rng):
    c = tracking.client()
    exp_id = tracking.experiment_id(c, "tiny")
    old, _ = _track(c, exp_id, rng, tmp_path, config_hash="a", start=1000)
    new, acc = _track(c, exp_id, rng, tmp_path, config_hash="a", start=2000)
    failed, _ = _track(c, exp_id, rng, tmp_path, config_hash="b", start=3000, status="FAILED")
    other, _ = _track(c, exp_id, rng, tmp_path, config_hash="c", start=4000)
    store = Store()
    runs = store.runs("tiny").set_index("config_hash")
    assert list(runs.index) == ["a", "c"]                 # newest of "a"; the FAILED one left out
    assert runs.loc["a", "run_id"] == new and runs.loc["c", "run_id"] == other
    assert runs.loc["a", contract.VAL_ACC] == pytest.approx(acc[-1])     # the last value
    assert set(contract.TAGS) <= {*runs.columns, "config_hash"} and "param.budget.target" in runs
    assert list(store.runs("tiny", {"c"})["run_id"]) == [other]
    assert store.runs("no-such-profile").empty

    h = store.history(new, r"val/.*")
    assert set(h["key"]) == {contract.VAL_ACC}
    np.testing.assert_allclose(h.sort_values("epoch")["value"], acc)
    both = store.histories(store.runs("tiny"), r"channels/.*")
    assert set(both["run_id"]) == {new, other} and {"variant", "seed", "model"} <= set(both.columns)
    assert old not in set(both["run_id"]) and failed not in set(both["run_id"])


def test_store_reads_architectures_and_traces(tmp_path, rng):
    c = tracking.client()
    exp_id = tracking.experiment_id(c, "tiny")
    dense = [int(w) for w in rng.integers(8, 64, size=3)]
    kept = [int(rng.integers(1, w)) for w in dense]
    layers = {f"l{i}": {"stage": i + 1, "role": "plain", "dense_width": w}
              for i, w in enumerate(dense)}
    arch = {"layers": layers, "gates": {"g": {"kind": "channel", "stage": 1, "role": "plain",
                                              "layers": ["l0"]}},
            "widths": {f"l{i}": k for i, k in enumerate(kept)}}
    run_id, _ = _track(c, exp_id, rng, tmp_path, config_hash="x", start=1, arch=arch)
    old_id, _ = _track(c, exp_id, rng, tmp_path, config_hash="y", start=2,
                       arch={"widths": arch["widths"]})
    traces = pd.DataFrame({"epoch": np.repeat([0, 1], 4), "gate": "g", "index": [0, 1, 2, 3] * 2,
                           "beta": rng.uniform(1, 5, 8).round(4)})
    path = tmp_path / contract.ARTIFACT_TRACES
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        traces.to_csv(f, index=False)
    c.log_artifact(run_id, str(path), "traces")

    store = Store()
    pd.testing.assert_frame_equal(store.traces(run_id), traces)
    assert store.gates(run_id) == arch["gates"]
    info = store.layers(run_id)
    assert list(info["layer"]) == ["l0", "l1", "l2"] and list(info["dense_width"]) == dense
    with pytest.raises(ValueError, match="retrain it"):
        store.architecture(old_id)
    runs = pd.DataFrame([{"run_id": run_id, "variant": "v", "seed": 0,
                          **{contract.channels(f"l{i}"): k / w
                             for i, (k, w) in enumerate(zip(kept, dense))}}])
    widths = store.architectures(runs)
    assert list(widths["width"]) == kept and list(widths["dense_width"]) == dense


# -- the run taxonomy -----------------------------------------------------------------------------

def test_one_taxonomy_names_every_kind_of_run(rng):
    narrow = round(float(rng.uniform(0.3, 0.9)), 3)
    seed = round(float(rng.uniform(0.05, 0.95)), 3)
    tau = round(float(rng.uniform(0.2, 0.8)), 3)
    cases = [  # config, then kind, start, family, gates
        ({"method": "dense"}, "dense", "", "dense", ""),
        ({"method": "dense", "model.width_multiplier": narrow}, "uniform", "", "dense", ""),
        ({"method": "grow", "gates.seed_fraction": seed}, "grow", "seed", "growing", "channels"),
        ({"method": "grow", "gates.seed_fraction": 1.0}, "grow", "full", "pruning from full",
         "channels"),
        ({"method": "grow", "gates.seed_fraction": 1.0, "model.gate_blocks": True},
         "grow", "seed", "growing", "blocks+channels"),       # blocks still grow from the seed
        ({"method": "grow", "gates.seed_fraction": 1.0, "model.gate_blocks": True,
          "gates.seed_blocks": "all"}, "grow", "full", "pruning from full", "blocks+channels"),
        ({"method": "grow", "model.gate_blocks": True, "model.gate_channels": False},
         "grow", "seed", "growing", "blocks"),
        ({"method": "prune", "baseline.criterion": "l1_norm"}, "l1_norm", "", "pruning baseline",
         "channels"),
        ({"method": "prune", "baseline.criterion": "slimming"}, "slimming", "", "pruning baseline",
         "channels"),
        ({"method": "autogrow"}, "autogrow", "", "growing", "channels"),
    ]
    defaults = {"method": "grow", "model.width_multiplier": 1.0, "gates.seed_fraction": 0.25,
                "gates.seed_blocks": "one_per_stage", "model.gate_blocks": False,
                "model.gate_channels": True, "baseline.criterion": "l1_norm",
                "budget.metric": "macs", "budget.target": tau}
    order = rng.permutation(len(cases))
    runs = pd.DataFrame([{f"param.{k}": str(v) for k, v in {**defaults, **cases[i][0]}.items()}
                         for i in order], index=rng.permutation(100)[:len(cases)])
    expected = pd.DataFrame([cases[i][1:] for i in order], index=runs.index,
                            columns=["kind", "start", "family", "gates"])
    for axis in expected.columns:
        assert list(getattr(variants, axis)(runs)) == list(expected[axis]), axis
    target = variants.target(runs)
    dense = expected["kind"].isin(["dense", "uniform"])
    assert target[dense].isna().all() and (target[~dense] == tau).all()


def test_ablation_names_the_part_of_the_method_a_run_changes():
    runs = pd.DataFrame({"param.budget.metric": ["macs", "none", "macs", "macs", "none"],
                         "param.gates.sampling": ["bernoulli", "bernoulli", "deterministic",
                                                  "bernoulli", "deterministic"],
                         "param.temperature.schedule": ["global", "global", "global",
                                                        "separate_decayed", "separate"]})
    assert list(variants.ablation(runs)) == ["ours", "w/o budget (fixed λ)", "w/o sampling",
                                             "separate_decayed β", "w/o budget (fixed λ)"]


# -- the tables' shared tail ----------------------------------------------------------------------

def _rows(rng, n_models: int = 3) -> pd.DataFrame:
    rows = []
    for m in rng.permutation([f"model{i}" for i in range(n_models)]):
        for kind in rng.permutation(tables.KIND_ORDER):
            for level in rng.choice([0.3, 0.5, 0.7], size=2, replace=False):
                level = 1.0 if kind == "dense" else float(level)
                ids = [f"{m}-{kind}-{level}-{s}" for s in range(int(rng.integers(1, 4)))]
                rows.append({"model": str(m), "kind": str(kind), "level": level,
                             "variant": f"{kind}-{int(100 * level)}", "dataset": "d",
                             "run_ids": ";".join(ids), "ppl_mean": float(rng.uniform(50, 150)),
                             "ppl_std": float(rng.uniform(0, 3))})
    return pd.DataFrame(rows).drop_duplicates(["model", "variant"]).sample(
        frac=1, random_state=int(rng.integers(2**31))).reset_index(drop=True)


def test_order_puts_models_levels_and_kinds_in_table_order(rng):
    rows = _rows(rng)
    model_order = [f"model{i}" for i in rng.permutation(3)[:2]]     # the third follows by name
    out = tables.order(rows, model_order)
    assert sorted(map(tuple, out.values.tolist())) == sorted(map(tuple, rows.values.tolist()))
    rest = sorted(set(rows["model"]) - set(model_order))
    assert list(dict.fromkeys(out["model"])) == model_order + rest
    for _, g in out.groupby("model", sort=False):
        keys = [(-lv, tables.KIND_ORDER.index(k), v) for lv, k, v in
                zip(g["level"], g["kind"], g["variant"])]
        assert keys == sorted(keys)


def test_paper_values_sit_beside_any_metric(tmp_path, rng):
    rows = _rows(rng, n_models=2)
    known = rows.sample(2, random_state=int(rng.integers(2**31)))
    values = rng.uniform(60, 120, size=2).round(1)
    path = tmp_path / "ref.csv"
    pd.DataFrame([["ptb", m, "d", "grow", v, "ppl", str(x), "", "src", ""]
                  for (m, v), x in zip(zip(known["model"], known["variant"]), values)],
                 columns=reference.COLUMNS).to_csv(path, index=False)
    out = tables.attach_paper(rows, "ptb", ["ppl"], path).set_index(["model", "variant"])
    for (m, v), x in zip(zip(known["model"], known["variant"]), values):
        assert out.loc[(m, v), "paper_ppl"] == x and out.loc[(m, v), "paper_source"] == "src"
    assert out["paper_ppl"].notna().sum() == 2 and len(out) == len(rows)
    cols = tables.metric_columns(out.reset_index(), ["ppl"], {"ppl": "val perplexity"})
    assert sorted(c for c in cols["paper val perplexity"] if c) == sorted(f"{x:g}" for x in values)


def test_write_rows_derives_what_write_needs_from_the_rows(tmp_path, rng):
    rows = tables.order(_rows(rng))
    display = pd.DataFrame({"model": rows["model"], "variant": rows["variant"],
                            "ppl": [tables.mean_std(a, b, "ppl")
                                    for a, b in zip(rows["ppl_mean"], rows["ppl_std"])]})
    csv = rows[["model", "variant", "ppl_mean", "run_ids"]]
    common = {"title": "T", "profile": "tiny", "n_left": 2, "notes": ["a note"]}
    derived = tables.write_rows(tmp_path / "derived", rows, display, csv, **common)
    by_hand = tables.write(tmp_path / "by_hand", display, csv, **common,
                           datasets=["d"], run_ids=[i.split(";") for i in rows["run_ids"]],
                           row_names=[f"{m} / {v}" for m, v in zip(rows["model"], rows["variant"])],
                           groups=list(rows["model"]))
    for a, b in zip(derived, by_hand):
        assert a.read_text().replace("derived", "by_hand") == b.read_text()
    md = derived[0].read_text()
    for k, r in enumerate(rows.itertuples(), start=1):
        assert f"- [{k}] {r.model} / {r.variant}: {', '.join(r.run_ids.split(';'))}" in md
    tex = derived[2].read_text()
    assert tex.count(r"\midrule") == 1 + rows["model"].nunique() - 1       # header + between models
