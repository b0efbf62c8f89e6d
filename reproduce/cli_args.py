"""The options every training command shares: profile, overrides, jobs, launcher."""

# Heavy packages are imported inside the functions, so that `python -m reproduce --help` stays
# instant.

from __future__ import annotations

import argparse
import json
import os
import sys


def _overrides(items: list[str]) -> dict:
    """--set KEY=VALUE options as nested overrides (imported here: the schema imports torch,
    which `--help` does not need)."""
    from .config import parse_overrides
    return parse_overrides(items)


def _add_profile(p: argparse.ArgumentParser) -> None:
    """--profile, defaulting to $PROFILE (what `make ... PROFILE=paper` passes), else smoke."""
    p.add_argument("--profile", default=os.environ.get("PROFILE", "smoke"),
                   help="smoke (CPU minutes, digits) or paper (CIFAR-10, full schedule)")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    _add_profile(p)
    p.add_argument("--force", action="store_true", default=os.environ.get("FORCE") == "1",
                   help="retrain even if a finished run with the same config exists")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field for every run, e.g. --set budget.target=0.3")
    p.add_argument("--only", action="append", default=None, metavar="VARIANT",
                   help="train only this variant of the experiment (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--jobs", type=int, default=int(os.environ["JOBS"]) if os.environ.get("JOBS")
                   else None, metavar="N",
                   help="train with N processes at once (each run is trained by exactly one); "
                        "on G GPUs process i trains on GPU i mod G")
    p.add_argument("--runs-per-gpu", type=int, metavar="K",
                   default=int(os.environ["RUNS_PER_GPU"]) if os.environ.get("RUNS_PER_GPU")
                   else None, help="let K runs share one GPU (--jobs then defaults to GPUs x K)")
    _add_launcher(p)
    # overrides as JSON, for scripts that start the command line with a whole override tree
    p.add_argument("--overrides-json", default="{}", help=argparse.SUPPRESS)


def _add_launcher(p: argparse.ArgumentParser) -> None:
    p.add_argument("--launcher", choices=("local", "slurm"),
                   default=os.environ.get("LAUNCHER") or "local",
                   help="local: processes of this machine; slurm: one Slurm job per missing run "
                        "(resources: the profile's launcher: section, --set launcher.FIELD=V)")
    p.add_argument("--no-wait", action="store_true", default=os.environ.get("NO_WAIT") == "1",
                   help="with --launcher slurm: return once the jobs are submitted; the same "
                        "command later draws from what finished")


def _launch_options(args) -> dict:
    """train_all's keywords for the command's launcher (and the `launcher.*` of --set)."""
    from .launch.devices import default_jobs, visible_gpus
    from .launch.settings import split_launcher

    overrides, launch = split_launcher(_run_overrides(args))
    if launch and args.launcher == "local":
        print(f"note: --set launcher.* ({', '.join(launch)}) applies to --launcher slurm only",
              file=sys.stderr)
    jobs = args.jobs
    if jobs is None:
        gpus = visible_gpus() if args.runs_per_gpu else []
        jobs = default_jobs(gpus, args.runs_per_gpu, 1)
    return {"overrides": overrides, "jobs": jobs, "launcher": args.launcher, "launch": launch,
            "wait": not args.no_wait, "runs_per_gpu": args.runs_per_gpu}


def _run_overrides(args) -> dict:
    """--set overrides on top of those a parent process handed over (--overrides-json)."""
    def merge(a: dict, b: dict) -> dict:
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out
    return merge(json.loads(args.overrides_json), _overrides(args.overrides))
