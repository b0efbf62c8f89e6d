"""Bad input and broken stores stop clearly, before anything is tracked; concurrent processes
never train the same config twice, even on a store that does not exist yet."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from reproduce import tracking
from reproduce.config import ConfigError
from reproduce.data import DatasetMissing
from reproduce.runner import run_experiment

ROOT = Path(__file__).resolve().parents[1]


def nothing_tracked() -> bool:
    c = tracking.client()
    exp = tracking.experiment_id(c, "smoke", create=False)
    return exp is None or not c.search_runs([exp])


def test_empty_file_and_duplicate_variants_stop_before_tracking(tmp_path, tiny):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty.yaml is empty"):
        run_experiment(str(empty), "smoke", overrides=tiny)
    twice = tmp_path / "twice.yaml"
    twice.write_text("runs:\n  - {variant: a}\n  - {variant: b}\n  - {variant: a, config: {seed: 3}}\n")
    with pytest.raises(ConfigError, match="variant 'a' of resnet20 is declared more than once"):
        run_experiment(str(twice), "smoke", overrides=tiny)
    assert nothing_tracked()


def test_missing_dataset_stops_before_anything_is_tracked(tmp_path, tiny):
    tiny["data"] = {"dataset": "cifar10", "root": str(tmp_path / "nowhere")}
    with pytest.raises(DatasetMissing, match="make data-cifar10"):
        run_experiment("figure-7", "smoke", overrides=tiny)
    assert nothing_tracked()


def test_experiment_file_outside_experiments_uses_the_suites_profiles(tmp_path, tiny):
    mine = tmp_path / "mine.yaml"
    mine.write_text("name: mine\nruns:\n  - {variant: grow, config: {model: {name: resnet20}}}\n")
    from reproduce.experiments import plan
    (run,) = plan(str(mine), "smoke", tiny)
    assert run.cfg.data.dataset == "synthetic" and run.profile == "smoke"
    (tmp_path / "profiles.yaml").write_text("fast:\n  config: {train: {epochs: 1}}\n")
    assert plan(str(mine), "fast")[0].cfg.train.epochs == 1           # its own profiles add on
    assert plan(str(mine), "paper")[0].cfg.data.dataset == "cifar10"  # the suite's still apply


def test_corrupted_store_stops_clearly_and_is_left_untouched(tmp_path, monkeypatch, tiny):
    store = tmp_path / "broken.db"
    store.write_bytes(b"this is not a database" * 100)
    before = store.read_bytes()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    with pytest.raises(tracking.StoreError, match="corrupted or not an SQLite database.*broken"):
        run_experiment("figure-7", "smoke", overrides=tiny)
    assert store.read_bytes() == before


READ_ONLY_ATTEMPT = """
import json, sys
from reproduce import tracking
from reproduce.runner import run_experiment
try:
    run_experiment("figure-7", "smoke", overrides=json.loads(sys.argv[1]), progress=False)
except tracking.StoreError as e:
    print("STORE ERROR", e)
"""


def test_read_only_store_stops_before_training_and_keeps_its_runs(tiny):
    """A store this user cannot write: a clear message, and the runs already in it are intact."""
    import shutil
    import tempfile
    folder = Path(tempfile.mkdtemp(prefix="readonly-store-"))
    try:
        uri = f"sqlite:///{folder}/mlflow.db"
        run_experiment("figure-7", "smoke", overrides=tiny, progress=False, uri=uri)
        tiny["budget"] = {"target": 0.3}
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        command = [sys.executable, "-c", READ_ONLY_ATTEMPT, json.dumps(tiny)]
        folder.chmod(0o555)
        (folder / "mlflow.db").chmod(0o444)
        if os.geteuid() == 0:     # root writes through permissions unless it drops that capability
            command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--",
                       *command]
        out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=300)
        assert "STORE ERROR" in out.stdout and "read-only" in out.stdout, out.stdout + out.stderr
        folder.chmod(0o755)
        with sqlite3.connect(folder / "mlflow.db") as db:
            assert db.execute("select count(*) from runs").fetchone()[0] == 1
            assert db.execute("select status from runs").fetchone()[0] == "FINISHED"
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder, ignore_errors=True)


WORKER = """
import json, sys
from reproduce.runner import run_experiment
for s in run_experiment("figure-4", "smoke", overrides=json.loads(sys.argv[1]), progress=False):
    print("RESULT", json.dumps({"hash": s["run_id"], "reused": s["reused"]}))
"""


@pytest.mark.slow
def test_two_processes_on_a_new_store_train_each_config_once(tmp_path, tiny):
    """Both create the (absent) store's schema at once, then share the three runs of figure-4."""
    uri = f"sqlite:///{tmp_path}/fresh/mlflow.db"
    (tmp_path / "fresh").mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(tiny)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out
        assert "duplicate column" not in out
    c = tracking.client(uri)
    runs = c.search_runs([tracking.experiment_id(c, "smoke", create=False)])
    hashes = [r.data.tags["config_hash"] for r in runs]
    assert len(hashes) == 3 and len(set(hashes)) == 3                # each config trained once
    assert all(r.info.status == "FINISHED" for r in runs)
    results = [json.loads(line.split(" ", 1)[1]) for out in outs for line in out.splitlines()
               if line.startswith("RESULT")]
    assert len(results) == 6 and sum(not r["reused"] for r in results) == 3


@pytest.mark.slow
def test_jobs_share_the_runs_of_several_experiments(tiny):
    """`--jobs 2`: two processes work through figure-4's and figure-7's runs; each config is
    trained by exactly one of them, and every planned run ends FINISHED."""
    from reproduce.experiments import plan
    from reproduce.pipeline import train_all

    train_all(["figure-4", "figure-7"], "smoke", overrides=tiny, jobs=2, progress=False)
    c = tracking.client()
    runs = c.search_runs([tracking.experiment_id(c, "smoke", create=False)])
    planned = {p.hash for e in ("figure-4", "figure-7") for p in plan(e, "smoke", tiny)}
    hashes = [r.data.tags["config_hash"] for r in runs]
    assert sorted(hashes) == sorted(planned)                      # each once, none missing
    assert all(r.info.status == "FINISHED" for r in runs)
