"""Which GPU and how many CPU threads each training process of one machine gets (`JOBS=N`).

    slots = process_slots(jobs=4, gpus=["0", "1"])       # GPUs 0, 1, 0, 1; cores split four ways

Process i trains on GPU i mod G (round robin over the visible GPUs), so four processes on two
GPUs run two per GPU. `runs_per_gpu=k` (make ... RUNS_PER_GPU=k) is the user's consent to pack k
runs on one GPU: with it `jobs` defaults to G x k, and asking for more processes than that is an
error rather than a silent crowding. The machine's cores are split evenly between processes, so
N processes with T threads each never ask for more than the cores there are.

A helper process is pinned with CUDA_VISIBLE_DEVICES (it then sees its GPU as cuda:0); the
process that spawns them is slot 0 and trains on the first visible GPU, which is slot 0's GPU.
`physical_gpu` names the GPU a process trains on as the machine numbers it (the `device` tag).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import ConfigError


# the number of training processes a command runs at once on this machine (its runs' `device`
# tag says it: times measured beside other runs are not those of a run alone)
PROCESSES_ENV = "REPRODUCE_PROCESSES"


@dataclass(frozen=True)
class Slot:
    index: int              # 0: the process that spawns the others
    gpu: str | None         # the machine's GPU id (CUDA_VISIBLE_DEVICES entry), None on CPU
    threads: int            # CPU threads for this process
    processes: int = 1      # how many slots the command runs at once

    def env(self) -> dict[str, str]:
        """Environment variables that pin a helper process to this slot."""
        env = {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads),
               PROCESSES_ENV: str(self.processes)}
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpu
        return env


def processes_at_once() -> int:
    """How many training processes the command that started this one runs at once (1: alone)."""
    try:
        return max(1, int(os.environ.get(PROCESSES_ENV, "1")))
    except ValueError:
        return 1


def visible_gpus() -> list[str]:
    """The machine's ids of the GPUs this process may use, in CUDA's order."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch
    except ImportError:
        return []
    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def default_jobs(gpus: list[str], runs_per_gpu: int | None, fallback: int) -> int:
    """JOBS when the user set none: G x RUNS_PER_GPU where both are known, else `fallback`."""
    return len(gpus) * runs_per_gpu if gpus and runs_per_gpu else fallback


def process_slots(jobs: int, gpus: list[str] | None = None, runs_per_gpu: int | None = None,
                  cpus: int | None = None) -> list[Slot]:
    """One slot per training process: GPUs round robin, cores split evenly."""
    gpus = visible_gpus() if gpus is None else list(gpus)
    cpus = cpus or os.cpu_count() or 1
    if jobs < 1:
        raise ConfigError(f"JOBS={jobs}: the number of training processes must be at least 1")
    if runs_per_gpu is not None:
        if runs_per_gpu < 1:
            raise ConfigError(f"RUNS_PER_GPU={runs_per_gpu}: must be at least 1")
        if gpus and jobs > len(gpus) * runs_per_gpu:
            raise ConfigError(
                f"JOBS={jobs} on {len(gpus)} GPU(s) puts more than RUNS_PER_GPU={runs_per_gpu} "
                f"runs on one GPU; set JOBS={len(gpus) * runs_per_gpu} (or leave JOBS out), or "
                f"raise RUNS_PER_GPU")
    threads = max(1, cpus // jobs)
    return [Slot(i, gpus[i % len(gpus)] if gpus else None, threads, jobs) for i in range(jobs)]


def physical_gpu(index: int) -> str:
    """The machine's id of the process's CUDA device `index` (CUDA_VISIBLE_DEVICES maps them)."""
    listed = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    return listed[index].strip() if index < len(listed) else str(index)
