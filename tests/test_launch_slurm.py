"""`LAUNCHER=slurm` on a real Slurm: a figure's runs train as jobs (two at once) and the figure
is the one the local launcher draws; a job requeued mid-run resumes its MLflow run and ends as an
uninterrupted run; a failing job's error reaches the submitting command; a cancelled job leaves a
checkpoint the next command resumes; a run of two tasks trains under DDP; three search workers
on PostgreSQL end with exactly the study's trials.

Needs the local cluster and the services (CI starts them):

    scripts/services.sh start && eval "$(scripts/services.sh env)"
    REPRODUCE_SERVICES=1 .venv/bin/python -m pytest -q tests/test_launch_slurm.py

Stores are SQLite files in each test's tmp_path (the jobs run on this node and see them), so
these tests never touch the server's experiments; the search test uses a database of its own
on the PostgreSQL server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from reproduce import contract, tracking

ROOT = Path(__file__).resolve().parents[1]
ENABLED = os.environ.get("REPRODUCE_SERVICES") == "1"
SLURM_CONF = os.environ.get("SLURM_CONF", "")
OPTUNA_SERVER = os.environ.get("OPTUNA_STORAGE", "")     # read before conftest repoints it

pytestmark = [
    pytest.mark.services,
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(not ENABLED, reason=(
        "needs the local Slurm cluster and PostgreSQL: scripts/services.sh start (as root), "
        "eval \"$(scripts/services.sh env)\", then REPRODUCE_SERVICES=1")),
]

DEADLINE = 300          # seconds any one command of these tests may take
# a synthetic run of 20 epochs of 16 batches, checkpointed within epochs: long enough to be
# interrupted mid-run, short enough for CI
LONG = {"data.dataset": "synthetic", "data.synthetic_train": 512, "data.synthetic_val": 64,
        "data.batch_size": 32, "data.image_size": 8, "data.num_classes": 4,
        "train.epochs": 20, "train.lr": 0.05, "train.threads": 1,
        "train.checkpoint_minutes": 0.002, "model.width_multiplier": 0.5}


def sets(overrides: dict) -> list[str]:
    return [x for k, v in overrides.items() for x in ("--set", f"{k}={v}")]


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    if not SLURM_CONF or not Path(SLURM_CONF).is_file():
        pytest.fail(f"REPRODUCE_SERVICES=1 but SLURM_CONF={SLURM_CONF!r} names no file; "
                    f"scripts/services.sh start slurm (as root) and "
                    f"eval \"$(scripts/services.sh env slurm)\"")
    monkeypatch.setenv("REPRODUCE_SLURM_POLL_S", "1")
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    monkeypatch.delenv("REPRODUCE_STATE_DIR", raising=False)
    for k in ("JOBS", "FORCE", "LAUNCHER", "NO_WAIT"):
        monkeypatch.delenv(k, raising=False)
    tracking._client.cache_clear()
    return tmp_path


def store(tmp_path: Path, name: str) -> dict[str, str]:
    """Environment for a command tracking into its own SQLite store under tmp_path."""
    (tmp_path / name).mkdir(exist_ok=True)
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / name}/mlflow.db",
            "FIGURES_DIR": str(tmp_path / name / "figures")}


def reproduce(*args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "reproduce", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=DEADLINE)
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


def runs_of(env: dict, profile: str = "smoke") -> list:
    c = tracking.client(env["MLFLOW_TRACKING_URI"])
    exp = tracking.experiment_id(c, profile, create=False)
    return c.search_runs([exp]) if exp else []


def histories(env: dict, run_id: str) -> dict[str, list[tuple[int, float]]]:
    c = tracking.client(env["MLFLOW_TRACKING_URI"])
    keys = [k for k in c.get_run(run_id).data.metrics if not k.startswith("time/")]
    return {k: sorted((m.step, m.value) for m in c.get_metric_history(run_id, k)) for k in keys}


def job_ids(out: str) -> list[str]:
    """The job ids a submitting command printed, one per run line (`  <id>  <name>  <link>`)."""
    ids = []
    for line in out.splitlines():
        words = line.split()
        if len(words) >= 3 and words[-1].startswith("http") and \
                words[0].replace("_", "").isdigit():
            ids.append(words[0])
    return ids


def wait_for(what: str, check, deadline: float = DEADLINE, poll: float = 0.5):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"timed out waiting for {what}")


def epoch_of(env: dict, run) -> int:
    c = tracking.client(env["MLFLOW_TRACKING_URI"])
    return tracking.last_step(c, run.info.run_id, contract.USAGE)


def test_a_figure_trains_as_jobs_two_at_once_and_draws_what_local_draws(cluster):
    short = ["--profile", "smoke", *sets({**LONG, "train.epochs": 2}), "--quiet"]
    slurm = store(cluster, "slurm")
    out = reproduce("figure", "4", *short, "--launcher", "slurm", env=slurm).stdout
    assert "submitted 3 runs as job array" in out, out
    ids = job_ids(out)
    assert len(ids) == 3 and len({i.split("_")[0] for i in ids}) == 1, out   # one array
    runs = runs_of(slurm)
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    spans = sorted((r.info.start_time, r.info.end_time) for r in runs)
    assert any(a[1] > b[0] for a, b in zip(spans, spans[1:])), f"no two jobs overlapped: {spans}"

    local = store(cluster, "local")
    reproduce("figure", "4", *short, "--jobs", "1", env=local)
    by_hash = {r.data.tags["config_hash"]: r for r in runs_of(local)}
    assert set(by_hash) == {r.data.tags["config_hash"] for r in runs}         # same runs
    for r in runs:
        twin = by_hash[r.data.tags["config_hash"]]
        for key in (contract.VAL_ACC, contract.MACS, contract.USAGE):
            assert r.data.metrics.get(key) == twin.data.metrics.get(key), key  # same numbers
    for name in ("figure-4.csv",):
        drawn = [(cluster / s / "figures" / name) for s in ("slurm", "local")]
        if drawn[0].exists():
            assert drawn[0].read_text() == drawn[1].read_text()
    again = reproduce("figure", "4", *short, "--launcher", "slurm", env=slurm).stdout
    assert "3 of 3 runs already finished" in again and "submitted" not in again


def test_a_job_requeued_mid_run_resumes_the_same_run_and_ends_as_an_uninterrupted_one(cluster):
    args = ["run", "figure-7", "--profile", "smoke", *sets(LONG), "--quiet"]
    slurm = store(cluster, "slurm")
    out = reproduce(*args, "--launcher", "slurm", "--no-wait", env=slurm).stdout
    [job] = job_ids(out)
    run = wait_for("the run to train a few epochs", lambda: next(
        (r for r in runs_of(slurm) if epoch_of(slurm, r) >= 3), None))
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=60)
    done = wait_for("the requeued job to finish the run", lambda: next(
        (r for r in runs_of(slurm) if r.info.status == "FINISHED"), None))
    assert len(runs_of(slurm)) == 1 and done.info.run_id == run.info.run_id   # resumed in place
    log = "".join(p.read_text() for p in (cluster / "slurm").rglob(f"{job}_0_log.*"))
    assert "resuming run" in log, log

    clean = store(cluster, "clean")
    reproduce(*args, env=clean)
    [twin] = runs_of(clean)
    resumed, uninterrupted = histories(slurm, done.info.run_id), histories(clean, twin.info.run_id)
    assert set(resumed) == set(uninterrupted)
    for key, values in uninterrupted.items():
        assert resumed[key] == values, key                       # exactly equal on CPU


def test_a_failing_job_shows_its_error_and_leaves_nothing_half_written(cluster):
    import torch

    if torch.cuda.is_available():
        pytest.skip("the failure here is a GPU config sent to a CPU-only job")
    slurm = store(cluster, "slurm")
    # valid for the planner, impossible on the node: a run asking for a GPU in a CPU-only job
    p = reproduce("run", "figure-7", "--profile", "smoke", *sets({
        **LONG, "train.epochs": 2, "train.device": "cuda"}), "--launcher", "slurm", env=slurm,
        check=False)
    assert p.returncode != 0
    assert "did not finish" in p.stderr and "NVIDIA driver" in p.stderr, p.stdout + p.stderr
    runs = runs_of(slurm)
    assert all(r.info.status == "FAILED" and r.data.tags.get("failure_reason") for r in runs)
    assert not list((cluster / "slurm" / "checkpoints").glob("*.pt"))
    # a config the planner refuses never reaches Slurm
    p = reproduce("run", "figure-7", "--profile", "smoke", "--set", "budget.target=7",
                  "--launcher", "slurm", env=slurm, check=False)
    assert p.returncode != 0 and "budget.target" in p.stderr and "submitted" not in p.stdout


def test_a_cancelled_job_leaves_a_checkpoint_the_next_command_resumes(cluster):
    args = ["run", "figure-7", "--profile", "smoke", *sets(LONG), "--quiet"]
    slurm = store(cluster, "slurm")
    [job] = job_ids(reproduce(*args, "--launcher", "slurm", "--no-wait", env=slurm).stdout)
    run = wait_for("the run to train a few epochs", lambda: next(
        (r for r in runs_of(slurm) if epoch_of(slurm, r) >= 3), None))
    subprocess.run(["scancel", job], check=True, timeout=60)
    stopped = wait_for("the cancelled run to be marked", lambda: next(
        (r for r in runs_of(slurm) if r.info.status == "KILLED"), None))
    assert stopped.data.tags.get("state") == "preempted"
    assert list((cluster / "slurm" / "checkpoints").glob("*.pt"))
    listing = reproduce("jobs", env=slurm).stdout
    assert job in listing and "killed" in listing, listing
    out = reproduce(*args, env=slurm).stdout                       # the local launcher resumes it
    assert "resuming run" in out, out
    [done] = runs_of(slurm)
    assert done.info.run_id == run.info.run_id and done.info.status == "FINISHED"


def test_pruning_runs_that_share_a_pretraining_pre_train_once_in_one_job(cluster):
    """Two pruning runs of one seed that prune one pre-trained network go to one job, which
    pre-trains once: the second run loads the first's pre-training (tag `pretrained_in`), the
    shared file is gone after, and every number equals the local launcher's, which shares it
    the same way."""
    path = cluster / "prune-pair.yaml"
    path.write_text(yaml.safe_dump({"name": "prune-pair", "figures": [],
                                    "base": {"model": {"name": "resnet20"}, "method": "prune",
                                             "baseline": {"pretrain_epochs": 2,
                                                          "finetune_epochs": 1}},
                                    "runs": [{"variant": f"l1-{t}", "config": {
                                        "baseline": {"prune_target": t}}} for t in (0.6, 0.3)]}))
    short = ["--profile", "smoke", *sets({k: v for k, v in LONG.items()
                                          if not k.startswith("train.epochs")}), "--quiet"]
    slurm = store(cluster, "slurm")
    out = reproduce("run", str(path), *short, "--launcher", "slurm", env=slurm).stdout
    assert "submitted 2 runs as job array" in out and "pre-trained once" in out, out
    ids = job_ids(out)
    assert len(ids) == 2 and len(set(ids)) == 1, out                  # both runs, one job
    runs = {r.data.tags["variant"]: r for r in runs_of(slurm)}
    assert set(runs) == {"l1-0.6", "l1-0.3"}
    assert all(r.info.status == "FINISHED" for r in runs.values())
    assert "pretrained_in" not in runs["l1-0.6"].data.tags
    assert runs["l1-0.3"].data.tags["pretrained_in"] == runs["l1-0.6"].info.run_id
    assert not list((cluster / "slurm" / "checkpoints" / "pretrained").glob("*.pt"))

    local = store(cluster, "local")
    reproduce("run", str(path), *short, "--jobs", "1", env=local)
    twins = {r.data.tags["variant"]: r for r in runs_of(local)}
    for variant, r in runs.items():
        assert r.data.tags["config_hash"] == twins[variant].data.tags["config_hash"]
        assert histories(slurm, r.info.run_id) == histories(local, twins[variant].info.run_id)


def test_a_run_of_two_tasks_trains_under_ddp_and_rank_0_tracks(cluster):
    slurm = store(cluster, "slurm")
    out = reproduce("run", "figure-7", "--profile", "smoke", *sets({**LONG, "train.epochs": 2}),
                    "--set", "launcher.tasks=2", "--launcher", "slurm", env=slurm).stdout
    [job] = job_ids(out)
    [run] = runs_of(slurm)
    assert run.info.status == "FINISHED"
    assert run.data.tags.get("world_size") == "2", run.data.tags


def test_three_search_workers_on_postgresql_finish_the_trials_once_each(cluster, tmp_path):
    from sqlalchemy.engine import make_url

    if not OPTUNA_SERVER.startswith("postgresql"):
        pytest.fail(f"REPRODUCE_SERVICES=1 but OPTUNA_STORAGE={OPTUNA_SERVER!r} is not a "
                    f"postgresql:// URL; eval \"$(scripts/services.sh env)\"")
    import optuna
    import psycopg
    from optuna.trial import TrialState

    url = make_url(OPTUNA_SERVER)
    name = f"optuna_slurm_{uuid.uuid4().hex[:12]}"
    admin = dict(host=url.host, port=url.port or 5432, user=url.username, password=url.password,
                 dbname="postgres", autocommit=True, connect_timeout=10)
    with psycopg.connect(**admin) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    storage = url.set(database=name).render_as_string(hide_password=False)
    try:
        spec = tmp_path / "search-slurm.yaml"
        spec.write_text(yaml.safe_dump({
            "name": "search-slurm", "base": "figure-7", "variant": "grow",
            "set": {"train": {"epochs": 2, "threads": 1}},
            "objectives": [{"metric": "val/acc", "direction": "maximize"}],
            "space": {"budget.target": {"type": "float", "low": 0.3, "high": 0.7}},
            "sampler": {"name": "random", "seed": 0}, "pruner": {"name": "none"},
            "trials": 5}, sort_keys=False))
        env = {**store(cluster, "slurm"), "OPTUNA_STORAGE": storage}
        out = reproduce("search", str(spec), "--profile", "smoke", "--workers", "3",
                        "--storage", storage, "--launcher", "slurm", "--quiet", env=env).stdout
        assert "submitted 3 search workers" in out, out
        [study_name] = optuna.get_all_study_names(storage)
        study = optuna.load_study(study_name=study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        assert len(done) == 5, [(t.number, t.state) for t in trials]
        run_ids = [t.user_attrs.get("mlflow_run_id") for t in done]
        assert len(set(run_ids)) == 5 and None not in run_ids         # none lost or duplicated
    finally:
        with psycopg.connect(**admin) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
