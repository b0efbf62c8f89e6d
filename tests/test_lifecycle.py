"""A tracked run's life: every way it can end leaves in the store what tracked_run.ENDINGS says;
a preemption signal checkpoints at the next batch and the same call resumes the same run; the
pipeline plans once; one planned run trains by itself with its claim held."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import torch

from reproduce import runner, tracking
from reproduce import train as train_module
from reproduce.experiments import plan
from reproduce.method import growth
from reproduce.runner import run_all, run_experiment, run_planned, train_tracked
from reproduce.tracked_run import (ENDINGS, PREEMPTION_SIGNALS, Preempted, RunStopped, TrackedRun,
                                   preemption_signals)

ROOT = Path(__file__).resolve().parents[1]


def the_run(uri: str | None = None):
    c = tracking.client(uri)
    (run,) = c.search_runs([tracking.experiment_id(c, "smoke", create=False)])
    return c, run


def histories(uri: str | None = None) -> dict[str, list[tuple[int, float]]]:
    """Every metric of the store's one run, by step (wall-clock times left out)."""
    c, run = the_run(uri)
    return {k: sorted((m.step, m.value) for m in c.get_metric_history(run.info.run_id, k))
            for k in run.data.metrics if not k.startswith("time/")}


def traces(uri: str | None = None):
    """The store's one run's logged structure traces."""
    import pandas as pd
    c, run = the_run(uri)
    return pd.read_csv(c.download_artifacts(run.info.run_id, tracking.ARTIFACT_TRACES))


def checkpoint_of(run_id: str) -> Path:
    return tracking.state_dir() / f"{run_id}.pt"


# ------------------------------------------------------------------------ the ending table

def ends_with(exc: BaseException | None):
    """A trainer that logs the seed step and checkpoints its untrained state, then raises `exc`
    (or returns, when None)."""
    def trainer(cfg, data, device, task, on_epoch=None, progress=True, *, checkpoints,
                resume=None, **_):
        state = train_module.build(cfg, data, device)
        on_epoch(0, state.controller.architecture_stats(), state.controller)
        checkpoints.save(state)
        if exc is not None:
            raise exc
        return state
    return trainer


WORD = uuid.uuid4().hex[:8]          # a fresh reason every session, found again in the tags
CASES = {
    # way: (what the training raises, MLflow status, tags expected, what propagates)
    "finished": (None, "FINISHED", {}, None),
    "stopped": (RunStopped(f"stopped {WORD}", state=f"state-{WORD}"), "KILLED",
                {"state": f"state-{WORD}", "stop_reason": f"stopped {WORD}"}, RunStopped),
    "preempted": (Preempted(signal.SIGTERM), "KILLED", {"state": "preempted"}, Preempted),
    "interrupted": (KeyboardInterrupt(), "KILLED",
                    {"failure_reason": "interrupted by the user (KeyboardInterrupt)"},
                    KeyboardInterrupt),
    "store": (OSError(errno.ENOSPC, f"No space left on device {WORD}"), "KILLED", {},
              tracking.StoreError),
    "failed": (FloatingPointError(f"loss is nan {WORD}"), "FAILED",
               {"failure_reason": f"FloatingPointError: loss is nan {WORD}"}, FloatingPointError),
}


def test_every_way_of_ending_is_tested():
    assert set(CASES) == set(ENDINGS)


@pytest.mark.parametrize("way", sorted(CASES))
def test_each_ending_leaves_its_status_tags_checkpoint_and_free_claim(way, tiny, monkeypatch):
    exc, status, tags, raised = CASES[way]
    monkeypatch.setitem(runner.TRAINERS, "grow", ends_with(exc))
    if raised is None:
        run_experiment("figure-7", "smoke", overrides=tiny, progress=False)
    else:
        with pytest.raises(raised) as info:
            run_experiment("figure-7", "smoke", overrides=tiny, progress=False)
    c, run = the_run()
    assert run.info.status == status
    for key, value in tags.items():
        assert run.data.tags[key] == value, key
    if way == "preempted":
        assert "SIGTERM" in run.data.tags["failure_reason"]
    if way == "store":              # the reason names the problem and what to do
        assert "disk is full" in run.data.tags["failure_reason"]
        assert "resume" in str(info.value) and run.info.run_id in str(info.value)
    if raised in (RunStopped, Preempted):
        assert info.value.run_id == run.info.run_id
    kept = checkpoint_of(run.info.run_id).exists()
    assert kept == (way != "finished")
    traces = [a.path for a in c.list_artifacts(run.info.run_id, "traces")]
    assert bool(traces) == (way != "store")       # a failing store is not written to again
    plan_run = plan("figure-7", "smoke", tiny)[0]
    claim = tracking.claim(None, run.info.experiment_id, plan_run.hash)
    assert claim is not None                      # nobody holds the run's claim any more
    claim.release()
    if way in ("preempted", "interrupted", "store"):     # the same command resumes it
        monkeypatch.setitem(runner.TRAINERS, "grow", ends_with(None))
        summary = run_experiment("figure-7", "smoke", overrides=tiny, progress=False)[0]
        assert summary["run_id"] == run.info.run_id
        _, run = the_run()
        assert run.info.status == "FINISHED" and "state" not in run.data.tags
        assert not checkpoint_of(run.info.run_id).exists()


# ----------------------------------------------------------------------------- preemption

def test_preemption_handlers_are_installed_in_the_main_thread_only_and_put_back():
    assert {signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2} <= set(PREEMPTION_SIGNALS)
    got: list[int] = []

    def theirs(signum, frame):            # e.g. submitit's, installed before the run
        got.append(-signum)

    before = {s: signal.signal(s, theirs if s == signal.SIGUSR2 else signal.getsignal(s))
              for s in PREEMPTION_SIGNALS}
    try:
        with pytest.raises(RuntimeError):
            with preemption_signals(lambda signum, frame: got.append(signum)) as installed:
                assert installed
                for s in (signal.SIGUSR1, signal.SIGUSR2):
                    os.kill(os.getpid(), s)
                raise RuntimeError("the block fails: the handlers are put back all the same")
        assert got == [signal.SIGUSR1, signal.SIGUSR2]
        assert signal.getsignal(signal.SIGUSR2) is theirs
        for s in PREEMPTION_SIGNALS:
            if s != signal.SIGUSR2:
                assert signal.getsignal(s) == before[s]
        os.kill(os.getpid(), signal.SIGUSR2)
        assert got[-1] == -signal.SIGUSR2

        elsewhere: dict = {}

        def in_a_thread():
            with preemption_signals(lambda signum, frame: None) as installed:
                elsewhere["installed"] = installed
                elsewhere["handler"] = signal.getsignal(signal.SIGUSR2)
        thread = threading.Thread(target=in_a_thread)
        thread.start()
        thread.join()
        assert elsewhere == {"installed": False, "handler": theirs}
    finally:
        for s, handler in before.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)


def test_a_preemption_signal_checkpoints_at_the_next_batch_and_the_same_call_resumes(
        tiny, monkeypatch, tmp_path):
    """SIGUSR2 (what a job submitted through submitit gets before its time limit) in a random
    batch: the run checkpoints right after that batch, ends KILLED and preempted, the handlers
    are restored, and the one-run call resumes the same run to exactly the numbers of an
    uninterrupted run."""
    import pandas as pd
    signum = signal.SIGUSR2
    before = signal.getsignal(signum)
    pr = plan("figure-7", "smoke", tiny)[0]
    batches = tiny["data"]["synthetic_train"] // tiny["data"]["batch_size"]
    at = random.Random().randrange(1, pr.cfg.train.epochs * batches)   # after this many steps
    print(f"signal after step {at}")
    real, steps = growth.GrowthController.after_step, {"n": 0}

    def after_step(self, *args, **kwargs):
        real(self, *args, **kwargs)
        steps["n"] += 1
        if steps["n"] == at:
            assert signal.getsignal(signum) not in (signal.SIG_DFL, None), "no handler installed"
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(growth.GrowthController, "after_step", after_step)
    with pytest.raises(Preempted) as info:
        run_planned(pr, progress=False)
    monkeypatch.setattr(growth.GrowthController, "after_step", real)
    assert signal.getsignal(signum) is before
    assert steps["n"] == at                               # stopped right at that batch
    c, run = the_run()
    assert info.value.signum == signum and info.value.run_id == run.info.run_id
    assert "same command" in str(info.value)
    assert run.info.status == "KILLED" and run.data.tags["state"] == "preempted"
    saved = torch.load(checkpoint_of(run.info.run_id), weights_only=False)["train"]
    assert (saved["epoch"], saved["position"]["batch"]) == ((at - 1) // batches,
                                                             (at - 1) % batches + 1)

    assert run_planned(pr, progress=False) == run.info.run_id
    _, run = the_run()
    assert run.info.status == "FINISHED" and "state" not in run.data.tags
    assert not checkpoint_of(run.info.run_id).exists()
    clean = f"sqlite:///{tmp_path}/clean/mlflow.db"
    (tmp_path / "clean").mkdir()
    run_experiment("figure-7", "smoke", overrides=tiny, progress=False, uri=clean)
    assert histories() == histories(clean)
    pd.testing.assert_frame_equal(traces(), traces(clean))        # the checkpoint carried them
    assert run_planned(pr, progress=False) == run.info.run_id     # finished: nothing trains
    assert the_run()[1].info.end_time == run.info.end_time


def test_trace_records_name_structures_once_and_log_as_the_plain_columns():
    """Every epoch's checkpoint pickles the traces so far: the columns that name structures are
    one object across epochs (pickled once, and still one after a checkpoint's round trip), the
    values are arrays, and the logged frame is the one the plain per-epoch lists make. A
    structure added mid-run (a grown layer) starts new name columns."""
    import numpy as np
    import pandas as pd
    from reproduce.tracked_run import _trace_record

    gen = random.Random()

    def states(n: int, epochs: int, prefix: str = "g") -> list[dict]:
        names = {"gate": [f"{prefix}{gen.randrange(4)}" for _ in range(n)],
                 "index": list(range(n)), "kind": gen.choices(["channel", "block"], k=n)}
        return [{**{k: list(v) for k, v in names.items()},
                 "beta": [gen.uniform(0.5, 300.0) for _ in range(n)],
                 "logit": [gen.gauss(0.0, 2.0) for _ in range(n)],
                 "active": [gen.random() < 0.5 for _ in range(n)]} for _ in range(epochs)]

    n, first = gen.randrange(1, 60), gen.randrange(2, 8)
    plain = states(n, first) + states(n + gen.randrange(1, 5), gen.randrange(2, 5), "grown")
    records = []
    for step, state in enumerate(plain):
        records.append(_trace_record({k: list(v) for k, v in state.items()}, step,
                                     records[-1] if records else None))
    for saved in (records, pickle.loads(pickle.dumps(records))):
        assert all(r[k] is saved[0][k] for r in saved[:first] for k in ("gate", "index", "kind"))
        assert saved[first]["gate"] is not saved[0]["gate"]
        assert all(r[k] is saved[first][k] for r in saved[first:] for k in ("gate", "kind"))
        assert all(isinstance(r[k], np.ndarray) for r in saved for k in ("beta", "logit", "active"))
        expected = pd.concat([pd.DataFrame({**state, "epoch": [step] * len(state["gate"])})
                              for step, state in enumerate(plain)], ignore_index=True)
        logged = pd.concat([pd.DataFrame(r) for r in saved], ignore_index=True)
        pd.testing.assert_frame_equal(logged, expected)


def test_a_signal_after_the_last_batch_finishes_the_run_and_still_stops(tiny, monkeypatch):
    """No batch boundary is left: the run ends FINISHED, and Preempted tells the caller to stop
    before anything else starts; the same command then reuses the run."""
    real = TrackedRun.finish

    def finish_under_signal(self, result):
        os.kill(os.getpid(), signal.SIGTERM)
        real(self, result)

    monkeypatch.setattr(TrackedRun, "finish", finish_under_signal)
    with pytest.raises(Preempted, match="finished first") as info:
        run_experiment("figure-7", "smoke", overrides=tiny, progress=False)
    monkeypatch.setattr(TrackedRun, "finish", real)
    _, run = the_run()
    assert info.value.finished and info.value.run_id == run.info.run_id
    assert run.info.status == "FINISHED" and "state" not in run.data.tags
    assert not checkpoint_of(run.info.run_id).exists()
    assert run_experiment("figure-7", "smoke", overrides=tiny, progress=False)[0]["reused"]


# 4 epochs of 16 batches, checkpoints at the end of epochs only (and when preempted)
OVERRIDES = {
    "data": {"dataset": "synthetic", "synthetic_train": 512, "synthetic_val": 64,
             "batch_size": 32, "image_size": 8, "num_classes": 4},
    # 12 epochs: the signal, sent in epoch 3, must find the run still training however long a
    # loaded machine takes to deliver it
    "train": {"epochs": 12, "lr": 0.05, "threads": 1, "checkpoint_minutes": 0},
    "model": {"width_multiplier": 0.5},
}


@pytest.mark.slow
@pytest.mark.parametrize("jobs", [1, 2])
def test_sigterm_preempts_a_training_process_and_the_same_command_resumes_it(tmp_path, jobs):
    """A cluster preempts the job: `reproduce run` gets SIGTERM mid-run, exits 128 + 15 with the
    run checkpointed, KILLED and tagged preempted; the same command resumes that run and ends
    with the metrics of an uninterrupted one. With two processes (`--jobs 2`) either may train
    the one run while the other waits: the signal reaches the first only, and the helper stops
    with it rather than resume the run just checkpointed."""
    (tmp_path / "store").mkdir()
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    command = [sys.executable, "-m", "reproduce", "run", "figure-7", "--quiet",
               "--jobs", str(jobs), "--overrides-json", json.dumps(OVERRIDES)]
    checkpoints = tmp_path / "store" / "checkpoints"
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    # the checkpoint is rewritten after every epoch: the times of the first two say how long an
    # epoch takes on this machine, and the signal lands at a random point of epoch 3 of 12
    written, stamps = [], []
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline and len(written) < 2:
        with contextlib.suppress(FileNotFoundError):
            stamps = [f.stat().st_mtime_ns for f in checkpoints.glob("*.pt")]
        if stamps and (not written or stamps[0] != written[-1][0]):
            written.append((stamps[0], time.monotonic()))
        time.sleep(0.01)
    assert len(written) == 2, "the run wrote no checkpoint after its first two epochs"
    epoch = written[1][1] - written[0][1]
    time.sleep(random.uniform(0.0, epoch))
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "SIGTERM received" in out and "resume" in out, out
    c, run = the_run(uri)
    assert run.info.status == "KILLED" and run.data.tags["state"] == "preempted", out
    saved = torch.load(checkpoints / f"{run.info.run_id}.pt", weights_only=False)["train"]
    assert 1 <= saved["epoch"] < OVERRIDES["train"]["epochs"]

    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"resuming run {run.info.run_id}" in again.stdout
    _, resumed = the_run(uri)
    assert resumed.info.run_id == run.info.run_id and resumed.info.status == "FINISHED"
    assert not list(checkpoints.glob("*.pt"))
    (tmp_path / "clean").mkdir()
    clean = f"sqlite:///{tmp_path}/clean/mlflow.db"
    run_experiment("figure-7", "smoke", overrides=OVERRIDES, progress=False, uri=clean)
    assert histories(uri) == histories(clean)


# --------------------------------------------------------------- planning and one-run calls

def test_make_plans_once_and_hands_the_planned_runs_to_the_runner(tiny, monkeypatch):
    from reproduce import pipeline

    calls = {"pipeline": 0, "runner": 0}

    def counted(where, real):
        def plan_counted(*args, **kwargs):
            calls[where] += 1
            return real(*args, **kwargs)
        return plan_counted

    monkeypatch.setattr(pipeline, "plan", counted("pipeline", pipeline.plan))
    monkeypatch.setattr(runner, "plan", counted("runner", runner.plan))
    pipeline.make("figure-7", profile="smoke", overrides=tiny, progress=False)
    assert calls == {"pipeline": 1, "runner": 0}
    _, run = the_run()
    assert run.info.status == "FINISHED"
    # `reproduce figure` plans every target's files once and hands the plans to each target
    plans = pipeline.plan_each(pipeline.experiments_of(["figure-7"]), "smoke", tiny)
    calls.update(pipeline=0)
    pipeline.make("figure-7", profile="smoke", overrides=tiny, progress=False, plans=plans)
    assert calls == {"pipeline": 0, "runner": 0}


def test_experiments_that_need_the_same_run_share_it(tiny, tmp_path, monkeypatch):
    """Two files planning one config: one run (here interrupted under the first file, then
    resumed for both), tagged with the figures of both."""
    other = tmp_path / "other.yaml"
    text = (ROOT / "experiments" / "figure-7.yaml").read_text()
    other.write_text(text.replace("name: figure-7", "name: other")
                     .replace("figures: [figure-7, figure-9]", "figures: [other-figure]"))
    runs = plan("figure-7", "smoke", tiny) + plan(str(other), "smoke", tiny)
    assert runs[0].hash == runs[1].hash and runs[0].experiment != runs[1].experiment
    grow = runner.TRAINERS["grow"]
    monkeypatch.setitem(runner.TRAINERS, "grow", ends_with(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        run_all(runs[:1], progress=False)
    _, interrupted = the_run()
    assert set(interrupted.data.tags["figures"].split(",")) == {"figure-7", "figure-9"}
    monkeypatch.setitem(runner.TRAINERS, "grow", grow)
    first, second = run_all(runs, progress=False)
    assert first == second and not first["reused"]
    _, run = the_run()
    assert run.info.run_id == interrupted.info.run_id and run.info.status == "FINISHED"
    assert set(run.data.tags["figures"].split(",")) == {"figure-7", "figure-9", "other-figure"}


def test_run_planned_waits_for_a_claim_held_elsewhere_then_returns_that_run(tiny):
    pr = plan("figure-7", "smoke", tiny)[0]
    c = tracking.client()
    exp = tracking.experiment_id(c, "smoke")
    held = tracking.claim(None, exp, pr.hash)
    got: dict = {}
    waiter = threading.Thread(target=lambda: got.update(run_id=run_planned(pr, progress=False)))
    waiter.start()
    try:
        time.sleep(1.0)
        assert waiter.is_alive() and not c.search_runs([exp])    # waiting; nothing tracked
        trained = train_tracked(TrackedRun.create(c, exp, pr), progress=False)
    finally:
        held.release()
    waiter.join(timeout=120)
    assert got["run_id"] == trained["run_id"]
    assert len(c.search_runs([exp])) == 1


def test_run_planned_takes_a_pickled_run_and_a_signal_after_the_last_batch_returns_its_id(
        tiny, monkeypatch, tmp_path):
    """What a cluster job does: unpickle a planned run in another process and train it into the
    store named by its argument; a signal that comes too late to stop it leaves it finished."""
    pr = pickle.loads(pickle.dumps(plan("figure-7", "smoke", tiny)[0]))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    real = TrackedRun.finish

    def finish_under_signal(self, result):
        os.kill(os.getpid(), signal.SIGUSR2)
        real(self, result)

    monkeypatch.setattr(TrackedRun, "finish", finish_under_signal)
    run_id = run_planned(pr, uri=uri, progress=False)
    c, run = the_run(uri)
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert run.data.tags["config_hash"] == pr.hash
    assert not (tracking.state_dir(uri) / f"{run_id}.pt").exists()
