"""Runs survive faults: killed at random points and started again, a run ends exactly as an
uninterrupted one, in the same MLflow run, with one value per step."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reproduce import tracking
from reproduce.experiments import plan
from reproduce.runner import run_experiment

ROOT = Path(__file__).resolve().parents[1]
# 4 epochs of 16 batches; checkpoints within epochs too (every ~0.1 s)
OVERRIDES = {
    "data": {"dataset": "synthetic", "synthetic_train": 512, "synthetic_val": 64,
             "batch_size": 32, "image_size": 8, "num_classes": 4},
    "train": {"epochs": 4, "lr": 0.05, "threads": 1, "checkpoint_minutes": 0.002},
    "model": {"width_multiplier": 0.5},
}
WORKER = """
import json, sys
from reproduce.runner import run_experiment
run_experiment("figure-7", "smoke", overrides=json.loads(sys.argv[1]), progress=False)
"""


def histories(uri: str) -> tuple[list, dict[str, list[tuple[int, float]]]]:
    c = tracking.client(uri)
    exp = tracking.experiment_id(c, "smoke", create=False)
    runs = c.search_runs([exp])
    keys = [k for k in runs[0].data.metrics if not k.startswith("time/")]   # wall clock
    return runs, {k: sorted((m.step, m.value) for m in c.get_metric_history(runs[0].info.run_id, k))
                  for k in keys}


def start(env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(OVERRIDES)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(tmp_path):
    rng = random.Random()
    seed = rng.randrange(10**6)
    print(f"kill-time seed {seed}")
    rng.seed(seed)
    killed_uri = f"sqlite:///{tmp_path}/killed/mlflow.db"
    (tmp_path / "killed").mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": killed_uri}
    checkpoints = tmp_path / "killed" / "checkpoints"

    kills = 0
    for attempt in range(12):
        proc = start(env)
        if kills < 3:
            # wait until training has started (a checkpoint exists or appears), then kill at a
            # random moment: mid-batch, mid-epoch, while checkpointing or while logging
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline and \
                    not any(checkpoints.glob("*.pt")):
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 1.5))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                continue
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, out
        if kills:
            assert "resuming run" in out, out
        break
    assert kills >= 1, "the run finished before it could be killed"

    clean_uri = f"sqlite:///{tmp_path}/clean/mlflow.db"
    (tmp_path / "clean").mkdir()
    run_experiment("figure-7", "smoke", overrides=OVERRIDES, progress=False, uri=clean_uri)

    runs, resumed = histories(killed_uri)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"       # one run, resumed in place
    _, clean = histories(clean_uri)
    assert set(resumed) == set(clean)
    for key, values in clean.items():
        steps = [s for s, _ in resumed[key]]
        assert steps == sorted(set(steps)), f"{key}: a step logged twice: {steps}"
        assert resumed[key] == values, key                               # exactly equal on CPU
    assert not list(checkpoints.glob("*.pt"))                            # cleaned up when done
    c = tracking.client(killed_uri)
    traces = c.download_artifacts(runs[0].info.run_id, tracking.ARTIFACT_TRACES)
    import pandas as pd
    assert sorted(pd.read_csv(traces)["epoch"].unique()) == list(range(5))


def test_a_ctrl_c_run_is_resumed_in_the_same_run_and_says_so(tiny, monkeypatch, capsys):
    """KeyboardInterrupt mid-run: KILLED; the same command continues it, not a new run."""
    from reproduce import train as train_module

    tiny["train"]["epochs"] = 3
    original = train_module.run_epochs
    calls = {"n": 0}

    def interrupt_after_first_epoch(state, *args, **kwargs):
        checkpoints = kwargs["checkpoints"]
        save = checkpoints.save

        def save_then_stop(st, position=None):
            save(st, position)
            if position is None and st.epoch == 1 and calls["n"] == 0:
                calls["n"] += 1
                raise KeyboardInterrupt
        checkpoints.save = save_then_stop
        return original(state, *args, **kwargs)

    monkeypatch.setattr(train_module, "run_epochs", interrupt_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_experiment("figure-7", "smoke", overrides=tiny, progress=False)
    c = tracking.client()
    exp = tracking.experiment_id(c, "smoke")
    (run,) = c.search_runs([exp])
    assert run.info.status == "KILLED"
    summary = run_experiment("figure-7", "smoke", overrides=tiny, progress=False)[0]
    assert "resuming run" in capsys.readouterr().out
    assert summary["run_id"] == run.info.run_id and not summary["reused"]
    (run,) = c.search_runs([exp])
    assert run.info.status == "FINISHED"
    steps = [m.step for m in c.get_metric_history(run.info.run_id, "val/acc")]
    assert steps == [1, 2, 3]
    assert tracking.find_finished(c, exp, plan("figure-7", "smoke", tiny)[0].hash) is not None
