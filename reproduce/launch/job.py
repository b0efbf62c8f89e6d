"""What a Slurm job runs: planned runs (`RunJob`) or one search worker (`SearchWorkerJob`).

submitit pickles the object, and the job calls it on the node. A RunJob trains one run, or the
pruning runs that share one pre-training one after another (the first pre-trains and saves, the
others load it), through `runner.run_planned`, the call a local process makes, so it reuses,
resumes or trains each run exactly as `make` would, under the same claim (two jobs never train
one run).

How a job ends, and what it leaves:
  - finished: the run is FINISHED in the store; the job's result is the run's summary.
  - Slurm's warning before the time limit or a preemption (USR2, `--signal`): the run is
    checkpointed at the next batch and marked preempted, then the job requeues itself
    (`scontrol requeue`) and exits. The rerun calls `run_planned` again, which resumes the same
    MLflow run from that checkpoint.
  - SIGTERM (a requeue or a cancel from outside, or a preemption without a warning): the run is
    checkpointed and marked preempted; Slurm decides what comes next (a requeued job resumes it,
    a cancelled one leaves it to the next `make`).
  - an error: the run is FAILED with its reason (tracked_run.ENDINGS) and the job's result is
    the exception, which the submitting command shows.
If Slurm's warning comes while no run is training (loading data, waiting for a claim), submitit
asks `checkpoint()`: the job is requeued with the same arguments, and the rerun starts over from
what is on disk.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import submitit


def _requeue_self() -> None:
    """Put this job back in the queue (what submitit does on a time-out), so that it runs again."""
    env = submitit.JobEnvironment()
    subprocess.run(["scontrol", "requeue", env.job_id], check=False, timeout=60)


def _join_ranks() -> None:
    """A job of several tasks trains one run under DDP: each task is a rank, as under torchrun."""
    if int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return
    from .. import distributed

    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False,
                                                          overwrite=True)
    distributed.init_from_env()


class _Job(submitit.helpers.Checkpointable):
    def __init__(self, env: dict[str, str]):
        self.env = env            # the stores and folders the submitting command used

    def _setup(self) -> None:
        os.environ.update(self.env)
        _join_ranks()

    def _preempted(self, e) -> None:
        """After the run was checkpointed: requeue on Slurm's warning, then leave the job."""
        print(f"[job] {e}", file=sys.stderr, flush=True)
        if e.signum == signal.SIGUSR2 and int(os.environ.get("SLURM_PROCID", "0")) == 0:
            _requeue_self()
            print("[job] requeued: the run resumes when the job starts again", file=sys.stderr,
                  flush=True)
        raise SystemExit(-1)      # no result: the job is not over for whoever waits on it


class RunJob(_Job):
    """Train planned runs (`experiments.PlannedRun`) in turn to the store named in `env`: one
    run, or the pruning runs that share the pre-training `pretraining` (runner.Pretraining)."""

    def __init__(self, planned: list, env: dict[str, str], force: bool = False,
                 pretraining=None):
        super().__init__(env)
        self.planned, self.force, self.pretraining = list(planned), force, pretraining

    def __call__(self) -> list[dict]:
        from ..runner import run_planned_in_turn
        from ..tracked_run import Preempted

        self._setup()
        # FORCE retrains once: a requeued job resumes what its first run started (the runs it
        # finished before are reused)
        force = self.force and "SLURM_RESTART_COUNT" not in os.environ
        try:
            run_ids = run_planned_in_turn(self.planned, pretraining=self.pretraining,
                                          force=force, progress=False)
        except Preempted as e:
            self._preempted(e)
        return [{"run_id": r, "config_hash": pr.hash} for r, pr in zip(run_ids, self.planned)]


class SearchWorkerJob(_Job):
    """One worker of a search on its study's storage: trials until the study has enough."""

    def __init__(self, spec, url: str, worker_index: int, force: bool, env: dict[str, str]):
        super().__init__(env)
        self.spec, self.url, self.worker_index, self.force = spec, url, worker_index, force

    def __call__(self) -> int:
        from ..search.worker import run_search
        from ..tracked_run import Preempted

        self._setup()
        try:
            run_search(self.spec, self.url, self.worker_index, self.force, progress=False)
        except Preempted as e:
            self._preempted(e)
        return self.worker_index
