"""Slurm for real, through submitit: the single-node cluster of scripts/services.sh runs job
arrays two at once, runs a requeued job again, and lets a Checkpointable job save its state and
requeue itself when Slurm warns it (USR2) ahead of its time limit or of a preemption.

Needs the cluster (root only: slurmd starts each job as the user who submitted it); CI runs, and
so can you:

    scripts/services.sh start slurm && eval "$(scripts/services.sh env slurm)"
    REPRODUCE_SERVICES=1 .venv/bin/python -m pytest -q -m slurm
    scripts/services.sh stop slurm

Without REPRODUCE_SERVICES=1 every test here is skipped; with it, a missing cluster is an error
(`-m "services and not slurm"` leaves these tests out). The cluster has no accounting (no
slurmdbd), so submitit's `sacct` calls fail: it logs "Bypassing sacct error" and learns that a
job ended from the job's result file alone, which is why every wait here has a deadline of its own.
See docs/SLURM.md for what these tests establish about submitit and Slurm.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ENABLED = os.environ.get("REPRODUCE_SERVICES") == "1"
SLURM_CONF = os.environ.get("SLURM_CONF", "")

pytestmark = [
    pytest.mark.services,
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(not ENABLED, reason=(
        "needs the local Slurm cluster: scripts/services.sh start slurm (as root), "
        "eval \"$(scripts/services.sh env slurm)\", then REPRODUCE_SERVICES=1")),
]

DEADLINE = 150          # seconds any one test may wait for its jobs
POLL = 0.25             # seconds between looks at a job's files
CAP = 120               # seconds a job that waits for a requeue or a signal waits at most


# ------------------------------------------------------------------ what the jobs run
# Pickled by value (below), so that the job needs neither this file nor the tests package.

def _facts() -> dict:
    """What a job sees of Slurm: its SLURM_* variables, and when it ran."""
    return {"env": {k: v for k, v in os.environ.items() if k.startswith("SLURM_")},
            "pid": os.getpid(), "time": time.time()}


def _square(x: int, where: str) -> dict:
    """A small task of an array: x squared, with the time it started and ended. It waits (20 s
    at most) until a second task has started too, so that tasks able to run at once overlap."""
    start = time.time()
    env = _facts()["env"]
    Path(where, f"started-{x}").write_text("")
    while len(list(Path(where).glob("started-*"))) < 2 and time.time() < start + 20:
        time.sleep(0.1)
    time.sleep(1)
    return {"value": x * x, "start": start, "end": time.time(), "env": env}


def _log_start(where: str, name: str) -> dict:
    facts = _facts()
    with open(Path(where) / f"{name}.starts", "a") as f:
        f.write(f"{facts['env'].get('SLURM_RESTART_COUNT', '-')} {facts['pid']}\n")
    return facts


def _until_requeued(name: str, where: str, wait: bool) -> dict:
    """A task that says it started and, when told to `wait`, waits to be requeued on its first
    run; a run after a requeue (SLURM_RESTART_COUNT set) returns at once."""
    facts = _log_start(where, name)
    if wait and "SLURM_RESTART_COUNT" not in facts["env"]:
        Path(where, f"{name}.running").write_text("")
        time.sleep(CAP)
    return {"name": name, "env": facts["env"]}


class _Counter:
    """Counts steps, a quarter of a second each; state that a checkpoint carries over. The
    first run counts until Slurm's signal stops it; a run after a requeue counts two more steps."""

    def __init__(self, where: str):
        self.where = where
        self.steps = 0
        self.runs: list[dict] = []      # one entry per run that this object lived through

    def __call__(self) -> dict:
        facts = _log_start(self.where, "counter")
        self.runs.append({"restarts": facts["env"].get("SLURM_RESTART_COUNT"),
                          "steps_at_start": self.steps, "job": facts["env"]["SLURM_JOB_ID"],
                          "started": facts["time"]})
        until = self.steps + 2 if "SLURM_RESTART_COUNT" in facts["env"] else CAP * 4
        while self.steps < until:
            time.sleep(0.25)
            self.steps += 1
            Path(self.where, "counter.steps").write_text(str(self.steps))
        return {"steps": self.steps, "runs": self.runs}

    def checkpoint(self, *args, **kwargs):
        """Called by submitit's USR2 handler before it requeues the job: what it returns is
        pickled in place of the submitted call, so the next run starts from this state."""
        self.runs[-1]["checkpointed"] = time.time()
        return super().checkpoint(*args, **kwargs)


def _checkpointable():
    """_Counter as a submitit Checkpointable (built here: submitit is imported by the tests)."""
    import submitit

    class Counter(_Counter, submitit.helpers.Checkpointable):
        pass

    return Counter


# ------------------------------------------------------------------ fixtures and helpers

def _cli(*args: str, check: bool = True) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60,
                          check=check).stdout


@pytest.fixture(scope="module")
def cluster() -> dict:
    """The exported cluster, checked once: REPRODUCE_SERVICES=1 without it is an error."""
    if not SLURM_CONF or not Path(SLURM_CONF).is_file():
        pytest.fail(f"REPRODUCE_SERVICES=1 but SLURM_CONF={SLURM_CONF!r} names no file; "
                    f"scripts/services.sh start slurm (as root) and "
                    f"eval \"$(scripts/services.sh env slurm)\", or deselect: -m 'not slurm'")
    try:
        import cloudpickle
        import submitit
    except ImportError as e:
        pytest.fail(f"submitit is not installed ({e}); make setup")
    try:
        node = _cli("sinfo", "-h", "-o", "%N %t %c").split()
    except (OSError, subprocess.SubprocessError) as e:
        pytest.fail(f"sinfo fails ({e}); scripts/services.sh status slurm")
    assert len(node) == 3 and node[1] in ("idle", "mix", "alloc"), node
    # the jobs load what they run from the pickle alone
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return {"node": node[0], "cpus": int(node[2]), "submitit": submitit}


@pytest.fixture
def executor(cluster, tmp_path):
    """An AutoExecutor on the cluster, its files in tmp_path, its jobs named after this test
    alone; they are all cancelled afterwards, whatever happened."""
    submitit = cluster["submitit"]
    ex = submitit.AutoExecutor(folder=tmp_path / "jobs" / "%j")
    assert ex.cluster == "slurm"        # found srun: the cluster, not submitit's local fallback
    name = f"reproduce-test-{uuid.uuid4().hex[:8]}"
    ex.update_parameters(timeout_min=5, cpus_per_task=1, name=name)
    yield ex
    _cli("scancel", f"--name={name}", check=False)


def _diagnosis(jobs) -> str:
    lines = [_cli("squeue", "-o", "%i %T %r %M", check=False)]
    for j in jobs:
        for name, text in (("stdout", j.stdout()), ("stderr", j.stderr())):
            tail = "\n".join((text or "").splitlines()[-15:])
            lines.append(f"--- {j.job_id} {name}\n{tail}")
    return "\n".join(lines)


def _wait_for(condition, what: str, jobs, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout:.0f}s\n" + _diagnosis(jobs))
        time.sleep(POLL)


def _results(jobs, timeout: float = DEADLINE) -> list:
    """The jobs' results, waiting at most `timeout` seconds (submitit alone would wait for
    ever for a job that died without writing its result: it cannot ask sacct)."""
    _wait_for(lambda: all(j.done() for j in jobs), "jobs done", jobs, timeout)
    return [j.result() for j in jobs]


def _starts(where: Path, name: str) -> list[list[str]]:
    return [line.split() for line in (where / f"{name}.starts").read_text().splitlines()]


# ------------------------------------------------------------------ tests

def test_map_array_runs_an_array_two_at_once_and_returns_every_result(executor, cluster,
                                                                      tmp_path):
    executor.update_parameters(slurm_array_parallelism=2)
    xs = [3, 4, 5]
    jobs = executor.map_array(_square, xs, [str(tmp_path)] * len(xs))

    # one array job, three tasks, at most two at once (sbatch --array=0-2%2)
    array_id = jobs[0].job_id.split("_")[0]
    assert [j.job_id for j in jobs] == [f"{array_id}_{i}" for i in range(len(xs))]
    script = (tmp_path / "jobs" / array_id / f"{array_id}_submission.sh").read_text()
    assert "#SBATCH --array=0-2%2" in script

    results = _results(jobs)
    assert [r["value"] for r in results] == [x * x for x in xs]
    for i, r in enumerate(results):
        env = r["env"]
        assert env["SLURM_ARRAY_JOB_ID"] == array_id
        assert env["SLURM_ARRAY_TASK_ID"] == str(i)
        assert env["SLURM_ARRAY_TASK_COUNT"] == str(len(xs))
        assert env["SLURM_JOB_NODELIST"] == cluster["node"]
        assert env["SLURM_CPUS_PER_TASK"] == "1"
        assert env["SLURM_CONF"] == SLURM_CONF
        assert "SLURM_RESTART_COUNT" not in env            # never requeued
    # every task is a job of its own
    assert len({r["env"]["SLURM_JOB_ID"] for r in results}) == len(xs)

    # two ran at once and the third only after one of them had ended
    def running_at(t):
        return sum(r["start"] <= t < r["end"] for r in results)

    most = max(running_at(r["start"]) for r in results)
    assert most == min(2, cluster["cpus"]), [(r["start"], r["end"]) for r in results]


def test_a_requeued_array_task_runs_again_and_only_it(executor, tmp_path):
    where = str(tmp_path)
    jobs = executor.map_array(_until_requeued, ["once", "twice"], [where, where], [False, True])
    once, twice = jobs
    _wait_for(lambda: (tmp_path / "twice.running").exists(), "task 1 running", jobs)

    # what an operator (or a preemption with PreemptMode=REQUEUE) does: Slurm sends SIGTERM,
    # which submitit ignores, then SIGKILL KillWait later, and queues the task again
    _cli("scontrol", "requeue", twice.job_id)
    first, second = _results(jobs)

    # the requeued task ran again from its submitted pickle, as the same array task
    assert second["name"] == "twice"
    assert second["env"]["SLURM_RESTART_COUNT"] == "1"
    assert second["env"]["SLURM_ARRAY_TASK_ID"] == "1"
    assert second["env"]["SLURM_ARRAY_JOB_ID"] == twice.job_id.split("_")[0]
    runs = _starts(tmp_path, "twice")
    assert [r[0] for r in runs] == ["-", "1"]              # started twice, the second a restart
    assert runs[0][1] != runs[1][1]                        # by two processes
    # the other task of the array ran once
    assert first["name"] == "once" and "SLURM_RESTART_COUNT" not in first["env"]
    assert [r[0] for r in _starts(tmp_path, "once")] == ["-"]


def test_a_checkpointable_job_saves_its_state_and_requeues_itself_on_usr2(executor, tmp_path):
    job = executor.submit(_checkpointable()(str(tmp_path)))
    steps = tmp_path / "counter.steps"
    _wait_for(lambda: steps.exists() and int(steps.read_text() or 0) >= 2, "counting", [job])

    # the warning Slurm sends ahead of the time limit (--signal=USR2@slurm_signal_delay_s) or
    # at a preemption (SlurmctldParameters=preempt_send_user_signal)
    _cli("scancel", "--signal=USR2", job.job_id)
    result = _results([job])[0]

    first, second = result["runs"]             # the same object lived through both runs
    assert first["restarts"] is None and first["steps_at_start"] == 0
    assert "checkpointed" in first and "checkpointed" not in second
    assert second["restarts"] == "1" and second["job"] == first["job"] == job.job_id
    assert second["steps_at_start"] >= 2                   # went on from its checkpoint
    assert result["steps"] == second["steps_at_start"] + 2
    assert [r[0] for r in _starts(tmp_path, "counter")] == ["-", "1"]
    log = job.stdout() or ""
    # a job of less than 50 minutes counts every USR2 as a time-out (submitit's rule)
    assert "this job is timed-out" in log and "Calling checkpoint method" in log
    assert f"Requeued job {job.job_id} (2 remaining timeouts)" in log


def test_slurm_signals_a_job_ahead_of_its_time_limit_and_it_goes_on_after_requeue(executor,
                                                                                  tmp_path):
    # A one-minute limit, warned 20 s ahead. slurmctld looks at time limits every 30 s and sends
    # the warning at the first look that finds less than (20 + 30) s left, so 10-40 s after the
    # start: after submitit has installed its handler, before the limit. (A warning of 30 s or
    # more would come at the very first look, possibly before Python has started.)
    executor.update_parameters(timeout_min=1, slurm_signal_delay_s=20)
    job = executor.submit(_checkpointable()(str(tmp_path)))
    script = (tmp_path / "jobs" / job.job_id / f"{job.job_id}_submission.sh").read_text()
    assert "#SBATCH --signal=USR2@20" in script and "#SBATCH --time=1" in script
    result = _results([job])[0]

    first, second = result["runs"]
    assert first["restarts"] is None and second["restarts"] == "1"
    assert second["steps_at_start"] >= 1                    # state carried by the checkpoint
    assert result["steps"] == second["steps_at_start"] + 2
    # Slurm's own signal stopped the first run, well before its minute was over
    warned_after = first["checkpointed"] - first["started"]
    assert 5 <= warned_after < 50, warned_after
    assert "Caught signal SIGUSR2" in (job.stdout() or "")
