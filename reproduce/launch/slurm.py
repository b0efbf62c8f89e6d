"""Slurm as the engine that trains a command's runs: one job per run, through submitit (pruning
runs that share a pre-training: one job for them all, which pre-trains once).

    make figure-7 LAUNCHER=slurm [PARTITION=gpu TIME=720 GPUS=1 ...] [NO_WAIT=1]

`train(planned, ...)` is what `make` calls instead of training in its own processes:
  1. every planned run already finished in the store (same config hash) is reused;
  2. a run that a live job of this suite (any user's: the job book lives in the shared state
     folder) or any process holding its claim is training is left to it and waited for;
  3. every other run is submitted: one job array per command and per resource request
     (`settings.SlurmSettings`, from the profile's `launcher:` section and `--set launcher.*`),
     one job per run, except that the pruning runs submitted together that prune one
     pre-trained network (runner.pretraining_groups: the same seed and pre-training, different
     pruning targets) are one job, which trains them in turn and pre-trains once;
  4. it prints the job ids and each run's MLflow link, then waits with a progress bar over
     finished runs (or returns at once with `wait=False`), and reports every job that ended
     without finishing its run, with the error the job raised or the tail of its log.
Slurm without accounting (no slurmdbd) is the normal case here: a job's state is read from
`squeue`, and a job gone from the queue is judged by what it left in the store.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ..errors import ConfigError
from .settings import SlurmSettings, executor_parameters, rank_mismatches, slurm_settings

POLL_S = float(os.environ.get("REPRODUCE_SLURM_POLL_S", "5"))
# what a job needs from the submitting shell besides what sbatch exports anyway
ENV_KEYS = ("MLFLOW_TRACKING_URI", "REPRODUCE_STATE_DIR", "DATA_DIR", "OPTUNA_STORAGE",
            "PYTHONPATH")


class SlurmError(ConfigError):
    """Slurm cannot be used (no sbatch, a refused submission) or jobs ended without their runs."""


def check_slurm() -> None:
    for tool in ("sbatch", "squeue", "scontrol"):
        if shutil.which(tool) is None:
            raise SlurmError(f"LAUNCHER=slurm needs Slurm's `{tool}` on PATH (a login node of the "
                             f"cluster); on one machine use the local launcher (LAUNCHER=local)")


def job_env(uri: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in ENV_KEYS if os.environ.get(k)}
    env["MLFLOW_TRACKING_URI"] = uri
    return env


# ------------------------------------------------------------------ the job book

class JobBook:
    """One JSON record per submitted run, `<state>/jobs/<config hash>.json`: the job id, who
    submitted it and where its logs are. Shared by everyone who shares the state folder."""

    def __init__(self, state: Path):
        self.folder = Path(state) / "jobs"

    def write(self, record: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{record['hash']}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(path)

    def get(self, config_hash: str) -> dict | None:
        path = self.folder / f"{config_hash}.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def all(self) -> list[dict]:
        out = []
        for path in sorted(self.folder.glob("*.json")) if self.folder.exists() else []:
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return sorted(out, key=lambda r: r.get("submitted", ""))


def queue_states(job_ids: list[str]) -> dict[str, str]:
    """Slurm's state of each job (array tasks as `A_i`) still in the queue; absent: gone."""
    if not job_ids:
        return {}
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True,
                         timeout=60)
    if out.returncode != 0:
        said = (out.stderr.strip() or out.stdout.strip() or "no output").splitlines()[-1]
        raise SlurmError(f"squeue failed ({said}); is this a node of the cluster, with "
                         f"SLURM_CONF set where the cluster needs it?")
    states = dict(line.split("|", 1) for line in out.stdout.split() if "|" in line)
    return {j: states[j] for j in job_ids if j in states}


# ------------------------------------------------------------------ links

def _base(uri: str) -> str:
    """Where a run's page is: the tracking server itself, else `make mlflow-ui`'s address."""
    from .. import tracking

    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else tracking.ui_base()


def run_link(uri: str, exp_id: str, config_hash: str) -> str:
    """The suite's runs view filtered to this config hash: a link that works before the run
    exists (the job creates it), in the model-training mode."""
    from .. import tracking

    where = quote(f"tags.config_hash = '{config_hash}'")
    return f"{tracking.runs_table_url(exp_id, _base(uri))}&searchFilter={where}"


# ------------------------------------------------------------------ submitting and waiting

@dataclass
class Pending:
    pr: object                  # experiments.PlannedRun
    job_id: str | None          # None: trained elsewhere (another user's job, a claim holder)
    log_dir: str | None = None


def settings_of(pr, launcher_overrides: dict) -> SlurmSettings:
    return slurm_settings(getattr(pr, "launch", None), launcher_overrides,
                          where=f"launcher ({pr.profile})")


def train(planned: list, *, uri: str, launcher_overrides: dict | None = None, force: bool = False,
          wait: bool = True, progress: bool = True, label: str = "reproduce") -> dict:
    """Get every planned run trained by Slurm jobs; returns {"finished", "waiting", "failed"}
    lists of config hashes. Validation (settings, datasets, the store) happens before anything
    is submitted."""
    from .. import tracking
    from ..data import check_available
    from ..tracked_run import run_name_of

    check_slurm()
    unique = list({pr.hash: pr for pr in planned}.values())
    settings = {pr.hash: settings_of(pr, launcher_overrides or {}) for pr in unique}
    for pr in unique:
        check_available(pr.cfg.data)
    for line in rank_mismatches(unique, lambda pr: settings[pr.hash].ranks):
        print(f"[slurm] warning: {line}", file=sys.stderr)
    c = tracking.client(uri)
    exp_ids = {p: tracking.experiment_id(c, p) for p in dict.fromkeys(pr.profile for pr in unique)}
    book = JobBook(tracking.state_dir(uri))
    finished, todo = [], []
    for pr in unique:
        if not force and tracking.find_finished(c, exp_ids[pr.profile], pr.hash) is not None:
            finished.append(pr.hash)
        else:
            todo.append(pr)
    records = {pr.hash: book.get(pr.hash) for pr in todo}
    alive = queue_states([r["job_id"] for r in records.values() if r])
    pending: dict[str, Pending] = {}
    submit = []
    for pr in todo:
        rec = records[pr.hash]
        if rec and rec["job_id"] in alive:
            pending[pr.hash] = Pending(pr, rec["job_id"], rec.get("log_dir"))
            continue
        lock = tracking.claim(uri, exp_ids[pr.profile], pr.hash)
        if lock is None:                         # a process somewhere trains it right now
            pending[pr.hash] = Pending(pr, None)
            continue
        lock.release()
        submit.append(pr)
    if finished:
        print(f"[slurm] {len(finished)} of {len(unique)} runs already finished in the store: reused")
    for h, p in pending.items():
        where = f"job {p.job_id} ({alive.get(p.job_id, '').lower()})" if p.job_id else \
            "another process (it holds the run's claim)"
        print(f"[slurm] {run_name_of(p.pr)}: already being trained by {where}")
    if submit:
        pending.update(_submit(submit, settings, uri, exp_ids, book, label, force))
    waiting = list(pending)
    if not waiting or not wait:
        if waiting:
            print(f"[slurm] {len(waiting)} runs queued or running; `make jobs` lists them; run "
                  f"the same command again to draw from what has finished")
        return {"finished": finished, "waiting": waiting, "failed": []}
    return _wait(pending, finished, uri, exp_ids, progress)


def _submit(runs: list, settings: dict, uri: str, exp_ids: dict, book: JobBook, label: str,
            force: bool) -> dict[str, Pending]:
    from .. import tracking
    from ..tracked_run import run_name_of
    from .job import RunJob

    import submitit

    state = tracking.state_dir(uri)
    env = job_env(uri)
    groups: dict[SlurmSettings, list[tuple]] = {}
    for unit, sharing in _job_units(runs, tracking.client(uri)):
        groups.setdefault(settings[unit[0].hash], []).append((unit, sharing))
    out = {}
    for s, units in groups.items():
        folder = Path(s.folder or state / "slurm") / "%j"
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm",
                                         slurm_max_num_timeout=s.max_requeues)
        executor.update_parameters(**executor_parameters(s, label))
        try:
            with executor.batch():
                jobs = [executor.submit(RunJob(unit, env, force, sharing))
                        for unit, sharing in units]
        except Exception as e:  # noqa: BLE001 - sbatch refused: say what Slurm said
            raise SlurmError(f"Slurm refused the jobs ({s.describe()}): {e}") from None
        array = jobs[0].job_id.split("_")[0]
        count = sum(len(unit) for unit, _ in units)
        print(f"[slurm] submitted {count} runs as job array {array} ({s.describe()}); "
              f"logs in {folder.parent / array}")
        for (unit, _), job in zip(units, jobs):
            if len(unit) > 1:
                print(f"  job {job.job_id} trains {', '.join(run_name_of(pr) for pr in unit)} "
                      f"in turn: they prune one pre-trained network, pre-trained once")
        for pr, job in ((pr, job) for (unit, _), job in zip(units, jobs) for pr in unit):
            log_dir = str(Path(str(folder).replace("%j", array)))
            book.write({"hash": pr.hash, "job_id": job.job_id, "run_name": run_name_of(pr),
                        "experiment": pr.experiment, "profile": pr.profile, "label": label,
                        "log_dir": log_dir, "user": getpass.getuser(),
                        "host": socket.gethostname(),
                        "submitted": time.strftime("%Y-%m-%d %H:%M:%S")})
            print(f"  {job.job_id:>12s}  {run_name_of(pr):40s} "
                  f"{run_link(uri, exp_ids[pr.profile], pr.hash)}")
            out[pr.hash] = Pending(pr, job.job_id, log_dir)
    return out


def _job_units(runs: list, c) -> list[tuple[list, object]]:
    """The runs one job trains, in the order given, with the pre-training they share (None
    for a run alone): a job per run, and one for the runs of each shared pre-training."""
    from ..runner import pretraining_groups

    sharing = pretraining_groups(runs, c)
    units: dict[object, list] = {}
    for pr in runs:
        group = sharing.get(pr.hash)
        units.setdefault(group if group is not None else pr.hash, []).append(pr)
    return [(unit, sharing.get(unit[0].hash)) for unit in units.values()]


def _wait(pending: dict[str, Pending], finished: list, uri: str, exp_ids: dict,
          progress: bool) -> dict:
    """Wait until every pending run finished or its job is gone; report the ones that failed."""
    from tqdm import tqdm

    from .. import tracking

    c = tracking.client(uri)
    total = len(pending) + len(finished)
    bar = tqdm(total=total, initial=len(finished), desc="runs finished", unit="run",
               disable=not progress, file=sys.stdout, mininterval=1 if sys.stdout.isatty() else 30)
    failed: dict[str, str] = {}
    gone_since: dict[str, float] = {}
    try:
        while pending:
            states = queue_states([p.job_id for p in pending.values() if p.job_id])
            for h, p in list(pending.items()):
                run = tracking.find_finished(c, exp_ids[p.pr.profile], h)
                if run is not None:
                    finished.append(h)
                    del pending[h]
                    bar.update(1)
                    continue
                if p.job_id is None:           # trained by someone else: is the claim still held?
                    lock = tracking.claim(uri, exp_ids[p.pr.profile], h)
                    if lock is not None:
                        lock.release()
                        failed[h] = "the process that trained it stopped before it finished"
                        del pending[h]
                    continue
                if p.job_id in states:
                    gone_since.pop(h, None)
                    continue
                # gone from the queue: the result is written before a job leaves it, and the
                # store may lag a moment behind; look twice
                if time.time() - gone_since.setdefault(h, time.time()) < 2 * POLL_S:
                    continue
                failed[h] = _why_failed(p, c, exp_ids)
                del pending[h]
            if pending:
                bar.set_postfix_str(_summary(states), refresh=True)
                time.sleep(POLL_S)
    except KeyboardInterrupt:
        bar.close()
        print("\n[slurm] stopped waiting; the jobs go on. `make jobs` lists them; the same "
              "command draws from what finished", file=sys.stderr)
        raise
    bar.close()
    if failed:
        print("[slurm] these runs did not finish:", file=sys.stderr)
        for h, why in failed.items():
            print(f"  {why}", file=sys.stderr)
    return {"finished": finished, "waiting": [], "failed": list(failed)}


def _summary(states: dict[str, str]) -> str:
    counts: dict[str, int] = {}
    for s in states.values():
        counts[s.lower()] = counts.get(s.lower(), 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def _why_failed(p: Pending, c, exp_ids: dict) -> str:
    """What a job that left the queue without a finished run left behind: the exception it
    raised, else the reason on its run, else the end of its log."""
    from ..tracked_run import run_name_of

    name = f"{run_name_of(p.pr)} (job {p.job_id})"
    error = _job_error(p)
    if error:
        return f"{name} failed:\n{error}"
    runs = c.search_runs([exp_ids[p.pr.profile]], f"tags.config_hash = '{p.pr.hash}'",
                         order_by=["attributes.start_time DESC"], max_results=1)
    if runs and runs[0].data.tags.get("failure_reason"):
        return f"{name} failed: {runs[0].data.tags['failure_reason']}"
    state = f"its run is {runs[0].info.status}" if runs else "no run was tracked"
    return f"{name} left the queue unfinished ({state}); its log ends:\n{_log_tail(p)}"


def _job_error(p: Pending, lines: int = 12) -> str | None:
    """The end of the traceback a job raised (submitit's result file), if it raised one."""
    import submitit
    from submitit.core.utils import pickle_load

    if not p.log_dir:
        return None
    job = submitit.SlurmJob(Path(p.log_dir), p.job_id)
    path = job.paths.result_pickle
    if not path.exists():
        return None
    try:
        outcome, value = pickle_load(path)
    except Exception:  # noqa: BLE001 - a result file cut short
        return None
    if outcome != "error":
        return None
    return "\n".join("    " + t for t in str(value).strip().splitlines()[-lines:])


def _log_tail(p: Pending, lines: int = 15) -> str:
    if not p.log_dir:
        return "    (no log)"
    for suffix in ("_log.err", "_log.out"):
        path = Path(p.log_dir) / f"{p.job_id}_0{suffix}"
        if path.exists():
            text = path.read_text(errors="replace").strip().splitlines()
            if text:
                return "\n".join("    " + t for t in text[-lines:])
    return "    (empty log)"


# ------------------------------------------------------------------ make jobs

def list_jobs(uri: str, profile: str | None = None, out=sys.stdout) -> list[dict]:
    """Every job in the book with its Slurm state and its run's state in the store."""
    from .. import tracking

    book = JobBook(tracking.state_dir(uri))
    records = [r for r in book.all() if profile in (None, r.get("profile"))]
    if not records:
        print(f"no Slurm jobs recorded in {book.folder}; submit some with "
              f"`make figure-N LAUNCHER=slurm`", file=out)
        return []
    states = queue_states([r["job_id"] for r in records]) if shutil.which("squeue") else {}
    c = tracking.client(uri)
    exp_ids = {p: tracking.experiment_id(c, p, create=False)
               for p in dict.fromkeys(r["profile"] for r in records)}
    print(f"{'job':>12s}  {'slurm':10s} {'run':10s} {'submitted':19s}  {'by':8s} name / link",
          file=out)
    for r in records:
        exp_id = exp_ids.get(r["profile"])
        runs = c.search_runs([exp_id], f"tags.config_hash = '{r['hash']}'",
                             order_by=["attributes.start_time DESC"], max_results=1) \
            if exp_id else []
        r["slurm"] = states.get(r["job_id"], "ended").lower()
        r["run"] = runs[0].info.status.lower() if runs else "not yet"
        r["run_id"] = runs[0].info.run_id if runs else None
        link = run_link(uri, exp_id, r["hash"]) if exp_id else ""
        print(f"{r['job_id']:>12s}  {r['slurm']:10s} {r['run']:10s} {r['submitted']:19s}  "
              f"{r['user'][:8]:8s} {r['run_name']}\n{'':56s}{link}", file=out)
    return records


# ------------------------------------------------------------------ search workers

def run_search_workers(spec, url: str, workers: int, worker_index: int, force: bool,
                       uri: str, launcher_overrides: dict | None = None) -> None:
    """`workers` Slurm jobs, each a worker of the study in `url` (search/worker.py's loop), and
    wait for them. A worker killed mid-trial leaves its trial to the others: the storage's
    heartbeat fails it and its parameters are tried again, as with local workers."""
    import submitit

    from .. import tracking
    from .job import SearchWorkerJob

    check_slurm()
    if url.startswith("sqlite"):
        print(f"[slurm] note: the study is in SQLite ({url}); jobs on several nodes need a "
              f"server database: OPTUNA_STORAGE=postgresql://...", file=sys.stderr)
    from ..experiments import plan
    base = plan(spec.base, spec.profile)[0]        # the trials' profile says what a job asks for
    s = slurm_settings(base.launch, launcher_overrides,
                       where=f"launcher ({spec.profile})")
    folder = Path(s.folder or tracking.state_dir(uri) / "slurm") / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm",
                                         slurm_max_num_timeout=s.max_requeues)
    executor.update_parameters(**executor_parameters(s, f"search-{spec.study_name}"))
    env = job_env(uri)
    try:
        with executor.batch():
            jobs = [executor.submit(SearchWorkerJob(spec, url, worker_index + i, force, env))
                    for i in range(workers)]
    except Exception as e:  # noqa: BLE001 - sbatch refused: say what Slurm said
        raise SlurmError(f"Slurm refused the search workers ({s.describe()}): {e}") from None
    array = jobs[0].job_id.split("_")[0]
    log_dir = str(folder).replace("%j", array)
    print(f"[slurm] submitted {workers} search workers as job array {array} ({s.describe()}); "
          f"logs in {log_dir}")
    ids = [j.job_id for j in jobs]
    try:
        while True:
            alive = queue_states(ids)
            if not alive:
                break
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        print(f"\n[slurm] stopped waiting; the workers go on (job array {array}); the same "
              f"command shows the study once they are done", file=sys.stderr)
        raise
    errors = [e for e in (_job_error(Pending(None, j, log_dir)) for j in ids) if e]
    if errors:
        raise SlurmError(f"{len(errors)} of {workers} search workers failed; the last:\n"
                         f"{errors[-1]}")
