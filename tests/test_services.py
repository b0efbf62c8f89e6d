"""The suite on shared services for real: PostgreSQL as the Optuna storage and an MLflow tracking
server backed by PostgreSQL, with several processes writing at once.

Needs the services of scripts/services.sh; CI runs, and so can you:

    scripts/services.sh start && eval "$(scripts/services.sh env)"
    REPRODUCE_SERVICES=1 .venv/bin/python -m pytest -q -m services
    scripts/services.sh stop

Without REPRODUCE_SERVICES=1 every test here is skipped. Each test keeps to its own Optuna
database (created on the PostgreSQL server and dropped afterwards) and its own MLflow experiment
(a profile of its own, `reproduce-svc-<random>`), so tests never collide with each other, with
earlier runs on the same services, or with the user's default stores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from reproduce.experiments import EXPERIMENTS_DIR

from .conftest import TINY

REPO = Path(__file__).resolve().parents[1]

# Read at import: conftest's autouse fixture points both variables at tmp_path in every test.
OPTUNA_SERVER = os.environ.get("OPTUNA_STORAGE", "")
MLFLOW_SERVER = os.environ.get("MLFLOW_TRACKING_URI", "")
ENABLED = os.environ.get("REPRODUCE_SERVICES") == "1"

pytestmark = [
    pytest.mark.services,
    pytest.mark.slow,
    pytest.mark.skipif(not ENABLED, reason=(
        "needs PostgreSQL and an MLflow server: scripts/services.sh start, "
        "eval \"$(scripts/services.sh env)\", then REPRODUCE_SERVICES=1")),
    pytest.mark.filterwarnings("ignore:Heartbeat of storage"),
]

SUBPROCESS_TIMEOUT = 240        # seconds any one command of these tests may take
POLL = 0.25                     # seconds between looks at the storage while workers run


# ------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def servers():
    """The exported URIs, checked once: REPRODUCE_SERVICES=1 with anything else is an error."""
    from sqlalchemy.engine import make_url

    if not OPTUNA_SERVER.startswith("postgresql"):
        pytest.fail(f"REPRODUCE_SERVICES=1 but OPTUNA_STORAGE={OPTUNA_SERVER!r} is not a "
                    f"postgresql:// URL; eval \"$(scripts/services.sh env)\"")
    if not MLFLOW_SERVER.startswith(("http://", "https://")):
        pytest.fail(f"REPRODUCE_SERVICES=1 but MLFLOW_TRACKING_URI={MLFLOW_SERVER!r} is not a "
                    f"server URL; eval \"$(scripts/services.sh env)\"")
    try:
        with urllib.request.urlopen(f"{MLFLOW_SERVER}/health", timeout=10) as r:
            assert r.status == 200
    except OSError as e:
        pytest.fail(f"the MLflow server {MLFLOW_SERVER} does not answer ({e}); "
                    f"scripts/services.sh status")
    return {"optuna": make_url(OPTUNA_SERVER), "mlflow": MLFLOW_SERVER}


def _admin(url):
    """An autocommit connection to the server's maintenance database (CREATE/DROP DATABASE)."""
    import psycopg

    return psycopg.connect(host=url.host, port=url.port or 5432, user=url.username,
                           password=url.password, dbname="postgres", autocommit=True,
                           connect_timeout=10)


@pytest.fixture
def optuna_db(servers):
    """A fresh PostgreSQL database for this test's Optuna storage, dropped afterwards."""
    url = servers["optuna"]
    name = f"optuna_test_{uuid.uuid4().hex[:12]}"
    with _admin(url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield url.set(database=name).render_as_string(hide_password=False)
    with _admin(url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def on_services(servers, tmp_path, monkeypatch):
    """Point this process at the MLflow server, with claims and checkpoints in tmp_path, and a
    profile (so an MLflow experiment) of this test's own: experiment files are copied into
    tmp_path beside a profiles.yaml that declares it."""
    from reproduce import tracking

    profile = f"svc-{uuid.uuid4().hex[:10]}"
    exp_dir = tmp_path / "experiments"
    exp_dir.mkdir()
    (exp_dir / "profiles.yaml").write_text(yaml.safe_dump(
        {profile: {"seeds": [0], "config": TINY}}, sort_keys=False))
    for name in ("figure-4", "figure-7"):
        (exp_dir / f"{name}.yaml").write_text((EXPERIMENTS_DIR / f"{name}.yaml").read_text())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", servers["mlflow"])
    monkeypatch.setenv("REPRODUCE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")   # run links in logs
    monkeypatch.delenv("FORCE", raising=False)
    monkeypatch.delenv("JOBS", raising=False)
    tracking._client.cache_clear()
    print(f"profile {profile}: MLflow experiment {tracking.experiment_name(profile)} on "
          f"{servers['mlflow']}")
    return {"profile": profile, "dir": exp_dir, "uri": servers["mlflow"]}


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                env=dict(os.environ))


def _wait(procs: list[subprocess.Popen], deadline: float) -> list[int]:
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            for q in procs:
                if q.poll() is None:
                    q.kill()
                    q.wait(timeout=30)
            raise
    return codes


def _tails(logs: list[Path], lines: int = 25) -> str:
    return "\n".join(f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-lines:])
                     for log in logs)


def _experiment_runs(c, profile: str):
    from reproduce import tracking

    exp_id = tracking.experiment_id(c, profile, create=False)
    assert exp_id is not None, f"no MLflow experiment {tracking.experiment_name(profile)}"
    return c.search_runs([exp_id], max_results=1000)


# ------------------------------------------------------- eight workers, two killed mid-trial

TRIALS = 12
WORKERS = 8
KILLED = 2


def test_eight_workers_on_postgresql_end_with_exact_trials_while_two_are_killed(
        tmp_path, on_services, optuna_db, monkeypatch):
    import optuna
    from optuna.trial import TrialState

    from reproduce import contract, search, tracking

    monkeypatch.setenv("OPTUNA_STORAGE", optuna_db)
    profile, epochs = on_services["profile"], 3
    spec_path = tmp_path / "search-services.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "search-services",
        "base": str(on_services["dir"] / "figure-7.yaml"),
        "variant": "grow",
        "set": {"train": {"epochs": epochs, "threads": 1}},
        "objectives": [{"metric": "val/acc", "direction": "maximize"}],
        "space": {"budget.lambda_base": {"type": "float", "low": 0.01, "high": 0.3, "log": True},
                  "budget.target": {"type": "float", "low": 0.3, "high": 0.7}},
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "trials": TRIALS,
        # a killed worker's trial is failed by another worker 10 s after its last heartbeat
        "heartbeat": {"interval": 2, "grace_period": 10, "max_retry": 2},
    }, sort_keys=False))

    # eight independent workers (as on eight machines): the first creates the study in the empty
    # database and the MLflow parent run, the others join
    cmd = [sys.executable, "-m", "reproduce", "search", str(spec_path), "--profile", profile,
           "--storage", optuna_db, "--quiet"]
    logs = [tmp_path / f"worker-{i}.log" for i in range(WORKERS)]
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT
    procs = [_start(cmd + ["--worker-index", str(i)], log) for i, log in enumerate(logs)]
    by_pid = {p.pid: p for p in procs}

    # kill two workers while they train: a RUNNING trial whose MLflow run names its process
    # and has at least two epochs to go
    c = tracking.client(on_services["uri"])
    spec = search.load_spec(str(spec_path), profile)
    killed: dict[int, int] = {}            # trial number -> pid
    study = None
    kill_deadline = time.monotonic() + 150
    while len(killed) < KILLED and time.monotonic() < kill_deadline:
        if all(p.poll() is not None for p in procs):
            break
        time.sleep(POLL)
        try:
            study = study or optuna.load_study(study_name=spec.study_name, storage=optuna_db)
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        except Exception:  # noqa: BLE001 - not created yet, or its tables being created
            continue
        for t in running:
            run_id = t.user_attrs.get("mlflow_run_id")
            if t.number in killed or not run_id:
                continue
            host_pid = c.get_run(run_id).data.tags.get("host_pid", "")
            pid = int(host_pid.rsplit(":", 1)[-1]) if ":" in host_pid else None
            p = by_pid.get(pid)
            if p is None or p.poll() is not None or pid in killed.values():
                continue
            if c.get_run(run_id).info.status != "RUNNING" or \
                    tracking.last_step(c, run_id, contract.USAGE) >= epochs - 1:
                continue                    # (nearly) finished: not mid-trial any more
            os.kill(pid, signal.SIGKILL)
            killed[t.number] = pid
            print(f"killed worker pid {pid} in trial {t.number} (MLflow run {run_id})")
            if len(killed) == KILLED:
                break
    codes = _wait(procs, deadline)
    out = _tails(logs)
    assert len(killed) == KILLED, "could not catch two workers mid-trial\n" + out
    for p, code in zip(procs, codes):
        if p.pid in killed.values():
            assert code == -signal.SIGKILL
        else:
            assert code == 0, f"worker {p.pid} exited {code}\n" + out

    # Optuna: exactly N finished trials, the killed ones failed and retried once each
    study = optuna.load_study(study_name=spec.study_name, storage=optuna_db)
    trials = study.get_trials(deepcopy=False)
    assert len({t.number for t in trials}) == len(trials)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == TRIALS, [(t.number, t.state.name) for t in trials]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for number in killed:
        dead = trials[number]
        assert dead.state == TrialState.FAIL, (number, dead.state)
        retries = [t for t in trials if t.system_attrs.get("failed_trial") == number]
        assert len(retries) == 1, (number, [t.number for t in retries])     # not lost, not twice
        assert retries[0] in finished
        assert retries[0].params == dead.params
    others = [t for t in trials if t not in finished and t.number not in killed]
    assert all(t.user_attrs.get("surplus") for t in others), \
        [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in others]
    # no two finished trials ran the same point (a retry ran instead of, not beside, a trial)
    points = [tuple(sorted(t.params.items())) for t in finished]
    assert len(set(points)) == len(points)

    # MLflow: one parent run, one nested run per finished trial, the killed trials' runs closed
    runs = _experiment_runs(c, profile)
    parents = [r for r in runs if r.data.tags.get("run_kind") == "search"]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["trials/complete"] + parent.data.metrics["trials/pruned"] == TRIALS
    assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    done = [r for r in children if r.data.tags.get("optuna.state") in ("COMPLETE", "PRUNED")]
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in done) == \
        sorted(t.number for t in finished)                 # one each: none missing, none twice
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in done}
    for t in finished:
        run = by_number[t.number]
        assert run.info.run_id == t.user_attrs["mlflow_run_id"]
        assert run.info.status == ("FINISHED" if t.state == TrialState.COMPLETE else "KILLED")
        assert run.data.metrics["objective/val/acc"] == pytest.approx(t.values[0])
    for number in killed:
        run = c.get_run(trials[number].user_attrs["mlflow_run_id"])
        assert run.info.status == "KILLED" and run.data.tags["optuna.state"] == "FAIL"
    assert not [r for r in children if r.info.status == "RUNNING"]
    # artifacts went through the server's artifact proxy
    config = c.download_artifacts(by_number[finished[0].number].info.run_id,
                                  tracking.ARTIFACT_CONFIG, str(tmp_path))
    assert yaml.safe_load(Path(config).read_text())["train"]["epochs"] == epochs


# ------------------------------------------------ two runners at once, figures from the server

def test_two_runners_share_the_server_and_figures_are_drawn_from_it(tmp_path, on_services,
                                                                    monkeypatch):
    import importlib

    import analysis
    from reproduce import pipeline, tracking
    from reproduce.experiments import plan

    profile, exp_file = on_services["profile"], on_services["dir"] / "figure-4.yaml"
    planned = plan(exp_file, profile)                        # grow, prune, dense
    assert len(planned) >= 2
    cmd = [sys.executable, "-m", "reproduce", "run", str(exp_file), "--profile", profile,
           "--quiet", "--jobs", "1"]
    logs = [tmp_path / f"runner-{i}.log" for i in range(2)]
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT
    procs = [_start(cmd, log) for log in logs]
    codes = _wait(procs, deadline)
    out = _tails(logs)
    assert codes == [0, 0], out
    said = [line.split()[0] for log in logs for line in log.read_text().splitlines()
            if line.startswith(("trained ", "reused "))]
    n = len(planned)
    assert sorted(said) == ["reused"] * n + ["trained"] * n, out    # each config trained once

    # each config trained exactly once, by one of the two processes
    c = tracking.client(on_services["uri"])
    runs = _experiment_runs(c, profile)
    assert sorted(r.data.tags["config_hash"] for r in runs) == sorted(p.hash for p in planned), \
        [(r.info.run_name, r.info.status) for r in runs]
    assert {r.info.status for r in runs} == {"FINISHED"}
    trainers = {r.data.tags["host_pid"].rsplit(":", 1)[-1] for r in runs}
    assert trainers <= {str(p.pid) for p in procs}
    # the runs' artifacts are on the server's artifact store
    for r in runs:
        arch = json.loads(Path(c.download_artifacts(r.info.run_id, tracking.ARTIFACT_ARCH,
                                                    str(tmp_path))).read_text())
        assert arch["macs"] > 0

    # the figure, drawn from the server only (its experiment file is this test's copy)
    module = importlib.import_module(analysis.targets()["figure-4"])
    monkeypatch.setattr(module, "EXPERIMENTS", [str(exp_file)])
    outputs = pipeline.make("figure-4", profile=profile, run_missing=False, uri=on_services["uri"],
                            out_dir=tmp_path / "figures", progress=False)
    assert (tmp_path / "figures" / "figure-4.png").stat().st_size > 0
    sidecar = json.loads((tmp_path / "figures" / "figure-4.runs.json").read_text())
    assert sidecar["profile"] == profile
    assert sorted(r["run_id"] for r in sidecar["runs"]) == sorted(r.info.run_id for r in runs)
    assert sorted(r["config_hash"] for r in sidecar["runs"]) == sorted(p.hash for p in planned)
    assert sorted(r["variant"] for r in sidecar["runs"]) == sorted(p.cfg.variant for p in planned)
    assert any(str(p).endswith("figure-4.runs.json") for p in outputs)
