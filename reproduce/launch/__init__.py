"""Where a command's runs train: in processes of this machine, or as Slurm jobs.

    local (default)  JOBS=N processes work through the planned runs; each takes a GPU round
                     robin and an even share of the cores (devices.py)
    slurm            one Slurm job per missing run, one array per command (slurm.py), each job
                     training its run(s) with `runner.run_planned` (job.py); resources from the
                     profile's `launcher:` section and `--set launcher.*` (settings.py)

Both resolve the runs the same way (experiments.plan) and reuse finished ones by config hash,
so a figure drawn after either is drawn from the same runs.
"""

LAUNCHERS = ("local", "slurm")
