"""The resources one Slurm job asks for, from the profile and the command line.

    launcher:                    # experiments/profiles.yaml, per profile
      gpus: 1                    # GPUs per run; k > 1: one job of k tasks training under DDP
      cpus: 8                    # CPUs per task
      time_min: 720

`--set launcher.partition=gpu` (or `make ... PARTITION=gpu`) overrides any field for every run of
the command. None of these is part of a run's identity: the same run trained with other
resources has the same config hash and is reused.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from ..errors import ConfigError


@dataclass(frozen=True)
class SlurmSettings:
    partition: str | None = None       # sbatch --partition
    account: str | None = None         # --account
    qos: str | None = None             # --qos
    constraint: str | None = None      # --constraint (e.g. a GPU model)
    time_min: int = 60                 # --time, per job; a longer run requeues itself
    gpus: int = 0                      # GPUs per run; > 1: that many tasks on one node, DDP
    tasks: int = 0                     # tasks (DDP ranks) per run; 0: one per GPU, at least one
    cpus: int = 1                      # CPUs per task (--cpus-per-task)
    mem_gb: float | None = None        # memory per node (--mem)
    signal_delay_s: int = 120          # USR2 this long before the time limit: checkpoint, requeue
    parallelism: int = 0               # at most this many jobs of an array at once (0: no cap)
    max_requeues: int = 100            # time-limit requeues a job may take (submitit's count)
    setup: tuple[str, ...] = ()        # shell lines run before each job (module load, ...)
    folder: str | None = None          # submitit's folder (pickles, logs); default <state>/slurm

    @property
    def ranks(self) -> int:
        """Tasks of the job, each a DDP rank: `tasks`, else one per GPU, else one."""
        return self.tasks or max(1, self.gpus)

    def describe(self) -> str:
        parts = [f"{self.gpus} GPU" if self.gpus else "CPU only", f"{self.ranks} task(s)",
                 f"{self.cpus} CPU/task",
                 f"{self.time_min} min"]
        parts += [f"{k} {getattr(self, k)}" for k in ("partition", "account", "qos", "constraint",
                                                       "mem_gb") if getattr(self, k)]
        return ", ".join(parts)


FIELDS = {f.name: f for f in fields(SlurmSettings)}
_INTS = {"time_min", "gpus", "tasks", "cpus", "signal_delay_s", "parallelism", "max_requeues"}


def slurm_settings(*layers: dict | None, where: str = "launcher") -> SlurmSettings:
    """SlurmSettings from layers of `launcher:` mappings, later ones winning; unknown keys and
    bad values stop with a message naming them."""
    s = SlurmSettings()
    for layer in layers:
        if not layer:
            continue
        if not isinstance(layer, dict):
            raise ConfigError(f"{where}: expected a mapping like {{gpus: 1, time_min: 60}}, "
                              f"got {layer!r}")
        unknown = sorted(set(layer) - set(FIELDS))
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: "
                              f"{', '.join(FIELDS)}")
        s = replace(s, **{k: _value(where, k, v) for k, v in layer.items()})
    if s.signal_delay_s + 60 >= s.time_min * 60:
        raise ConfigError(f"{where}: signal_delay_s={s.signal_delay_s} leaves no time to train in "
                          f"time_min={s.time_min}; Slurm may signal the job before it starts. "
                          f"Raise time_min or lower signal_delay_s")
    return s


def _value(where: str, key: str, value):
    if key in _INTS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0 or \
                (key in ("time_min", "cpus") and value < 1):
            raise ConfigError(f"{where}.{key}: expected a whole number >= "
                              f"{1 if key in ('time_min', 'cpus') else 0}, got {value!r}")
        return value
    if key == "mem_gb":
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or value <= 0):
            raise ConfigError(f"{where}.mem_gb: expected a positive number of GB, got {value!r}")
        return value
    if key == "setup":
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) for x in value):
            raise ConfigError(f"{where}.setup: expected shell lines (a list of strings), "
                              f"got {value!r}")
        return tuple(value)
    if value is not None and not isinstance(value, (str, int)):
        raise ConfigError(f"{where}.{key}: expected a name, got {value!r}")
    return None if value is None else str(value)


def split_launcher(overrides: dict | None) -> tuple[dict, dict]:
    """(the run overrides, the `launcher.*` overrides) of a command's --set options."""
    overrides = dict(overrides or {})
    launcher = overrides.pop("launcher", None) or {}
    if not isinstance(launcher, dict):
        raise ConfigError(f"--set launcher={launcher!r}: set one field, e.g. "
                          f"--set launcher.partition=gpu; fields: {', '.join(FIELDS)}")
    return overrides, launcher


def executor_parameters(s: SlurmSettings, name: str) -> dict:
    """submitit's update_parameters() for these settings (`max_requeues` goes to the executor
    itself: AutoExecutor(..., slurm_max_num_timeout=...))."""
    params = dict(name=name, timeout_min=s.time_min, nodes=1, tasks_per_node=s.ranks,
                  cpus_per_task=s.cpus, slurm_signal_delay_s=s.signal_delay_s)
    params.update({f"slurm_{k}": getattr(s, k) for k in ("account", "qos", "constraint")
                   if getattr(s, k)})
    if s.gpus:
        params["gpus_per_node"] = s.gpus
    if s.partition:
        params["slurm_partition"] = s.partition
    if s.mem_gb:
        params["mem_gb"] = s.mem_gb
    if s.parallelism:
        params["slurm_array_parallelism"] = s.parallelism
    if s.setup:
        params["slurm_setup"] = list(s.setup)
    return params


def rank_mismatches(planned: list, ranks_of) -> list[str]:
    """One line per profile whose runs train on another number of DDP ranks than its `launcher:`
    section plans (`ranks_of(pr)`: the ranks a run trains on here). data.batch_size is per rank,
    so the global batch is then not the profile's; the line says which value keeps it."""
    out, seen = [], set()
    for pr in planned:
        plan_ranks = slurm_settings(getattr(pr, "launch", None)).ranks
        ranks, batch = ranks_of(pr), pr.cfg.data.batch_size
        key = (pr.profile, plan_ranks, ranks, batch)
        if plan_ranks == ranks or key in seen:
            continue
        seen.add(key)
        keep = batch * plan_ranks / ranks
        fix = (f"--set data.batch_size={int(keep)} keeps it" if keep == int(keep) else
               f"no whole per-rank batch keeps it on {ranks} rank(s)")
        out.append(f"profile {pr.profile}: data.batch_size {batch} is per rank and the profile "
                   f"plans {plan_ranks} rank(s), a global batch of {batch * plan_ranks}; these "
                   f"runs train on {ranks} rank(s), a global batch of {batch * ranks} ({fix})")
    return out
