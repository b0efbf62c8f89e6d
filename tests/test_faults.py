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
    trained by exactly one of them, every planned run ends FINISHED, and each run's `device`
    tag says it trained beside another (its times are not those of a run alone)."""
    from reproduce.experiments import plan
    from reproduce.pipeline import plan_all, train_all

    summaries = train_all(plan_all(["figure-4", "figure-7"], "smoke", tiny), jobs=2,
                          progress=False)
    c = tracking.client()
    runs = c.search_runs([tracking.experiment_id(c, "smoke", create=False)])
    planned = {p.hash for e in ("figure-4", "figure-7") for p in plan(e, "smoke", tiny)}
    hashes = [r.data.tags["config_hash"] for r in runs]
    assert sorted(hashes) == sorted(planned)                      # each once, none missing
    assert all(r.info.status == "FINISHED" for r in runs)
    assert sorted({s["run_id"] for s in summaries}) == sorted(r.info.run_id for r in runs)
    assert all(r.data.tags["device"].endswith(", 2 runs at once") for r in runs), \
        [r.data.tags["device"] for r in runs]
    assert os.environ.get("REPRODUCE_PROCESSES") is None          # this process is alone again


def test_a_full_disk_while_logging_artifacts_keeps_the_run_resumable(tiny, monkeypatch):
    """ENOSPC while the finished run logs its artifacts: a clear message, the run KILLED (not
    FAILED) with the reason, its checkpoint kept; the same command later finishes the same run."""
    import errno

    from reproduce.tracked_run import TrackedRun

    real = TrackedRun.finish

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(TrackedRun, "finish", full_disk)
    with pytest.raises(tracking.StoreError, match="disk is full.*resume"):
        run_experiment("figure-7", "smoke", overrides=tiny, progress=False)
    c = tracking.client()
    exp = tracking.experiment_id(c, "smoke")
    (run,) = c.search_runs([exp])
    assert run.info.status == "KILLED" and "disk is full" in run.data.tags["failure_reason"]
    assert (tracking.state_dir() / f"{run.info.run_id}.pt").exists()
    steps = [m.step for m in c.get_metric_history(run.info.run_id, "val/acc")]

    monkeypatch.setattr(TrackedRun, "finish", real)    # (not undo(): that restores the store too)
    summary = run_experiment("figure-7", "smoke", overrides=tiny, progress=False)[0]
    assert summary["run_id"] == run.info.run_id
    (run,) = c.search_runs([exp])
    assert run.info.status == "FINISHED"
    assert [m.step for m in c.get_metric_history(run.info.run_id, "val/acc")] == steps
    assert not (tracking.state_dir() / f"{run.info.run_id}.pt").exists()


def test_a_dataset_that_disappears_mid_run_fails_the_run_with_the_reason(tmp_path, tiny):
    """Image files deleted while a run trains: the run ends FAILED, naming the missing file;
    the runs already in the store are untouched."""
    import shutil

    import numpy as np
    from PIL import Image

    from reproduce.experiments import plan
    from reproduce.runner import train_tracked
    from reproduce.tracked_run import TrackedRun

    rng = np.random.default_rng(0)
    root = tmp_path / "tree"
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(8):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
                    root / split / cls / f"{i}.png")
    tiny["data"] = {"dataset": "imagefolder", "root": str(root), "image_size": 8,
                    "batch_size": 8, "augment": False}
    tiny["model"] = {"name": "basic3resnet-1-1-1", "width_multiplier": 0.25}
    done = run_experiment("figure-7", "smoke", overrides={**tiny, "seed": 5}, progress=False)

    def vanish(epoch, stats):
        if epoch == 1:
            shutil.rmtree(root / "train")

    cfg_run = plan("figure-7", "smoke", tiny)[0]
    c = tracking.client()
    exp = tracking.experiment_id(c, "smoke")
    with pytest.raises(Exception) as info:
        train_tracked(TrackedRun.create(c, exp, cfg_run), progress=False, epoch_hook=vanish)
    assert "train" in str(info.value)
    runs = {r.info.run_id: r for r in c.search_runs([exp])}
    failed = [r for r in runs.values() if r.info.status == "FAILED"]
    assert len(failed) == 1 and str(root / "train") in failed[0].data.tags["failure_reason"]
    assert runs[done[0]["run_id"]].info.status == "FINISHED"


@pytest.mark.slow
def test_a_locked_store_stops_clearly_and_keeps_its_runs(tiny):
    """Another process holds the SQLite store's write lock: a clear message, nothing written."""
    run_experiment("figure-7", "smoke", overrides=tiny, progress=False)
    uri = os.environ["MLFLOW_TRACKING_URI"]
    path = uri[len("sqlite:///"):]
    tracking._client.cache_clear()
    holder = sqlite3.connect(path, timeout=0)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        tiny["budget"] = {"target": 0.3}
        with pytest.raises(tracking.StoreError, match="locked"):
            run_experiment("figure-7", "smoke", overrides=tiny, progress=False)
    finally:
        holder.rollback()
        holder.close()
        tracking._client.cache_clear()
    with sqlite3.connect(path) as db:
        assert db.execute("select count(*) from runs").fetchone()[0] == 1
