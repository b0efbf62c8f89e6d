"""`python -m reproduce search|search-best|pareto`: the Optuna commands.

reproduce.search imports optuna, and its worker the training code: imported per command.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from .cli_args import _add_launcher, _add_profile, _overrides
from .errors import ConfigError



def _add_search_options(p: argparse.ArgumentParser, with_trials: bool = False) -> None:
    p.add_argument("spec", help="search spec name (search-resnet20-budget) or path to its YAML")
    _add_profile(p)
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL (default: $OPTUNA_STORAGE, else sqlite:///optuna.db at "
                        "the repository root)")
    p.add_argument("--study-name", default=None, help="default: <spec name>-<profile>")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="fixed override for every trial, e.g. --set train.threads=1")
    if with_trials:
        p.add_argument("--trials", type=int, default=None,
                       help="finished trials the study should end with (default: the spec's)")


def _load_spec(args, trials: int | None = None):
    from .search import load_spec
    return load_spec(args.spec, args.profile, trials, _overrides(args.overrides),
                     args.study_name)


def _params(trial) -> str:
    from .search.best import fmt
    return ", ".join(f"{k}={fmt(v)}" for k, v in trial.params.items())


def cmd_search(args) -> int:
    from optuna.trial import TrialState

    from .search import best_trial, pareto_trials, redact, run_search, spec_ref

    launch = _overrides([s for s in args.overrides if s.startswith("launcher.")]).get("launcher")
    args.overrides = [s for s in args.overrides if not s.startswith("launcher.")]
    spec = _load_spec(args, args.trials)
    submit = None
    if args.launcher == "slurm":                 # the workers are Slurm jobs
        import functools

        from .launch.slurm import run_search_workers
        submit = functools.partial(run_search_workers, launcher_overrides=launch)
    if args.workers < 1:
        raise ConfigError("--workers must be >= 1")
    extra = [x for s in args.overrides for x in ("--set", s)]
    extra += ["--force"] if args.force else []
    extra += ["--quiet"] if args.quiet or args.workers > 1 else []
    old_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):            # a polite stop: the running trial is queued again
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        res = run_search(spec, args.storage, args.worker_index, args.force, not args.quiet,
                         args.workers, extra, submit_workers=submit)
    except KeyboardInterrupt:
        print(f"[search] stopped; resume with the same command (study {spec.study_name})",
              file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, old_term)
    if args.spawned:
        return 0                            # a spawned worker: the coordinator prints the summary
    study, n = res["study"], res["counts"]
    print(f"\nstudy {spec.study_name}: {n[TrialState.COMPLETE]} complete, {n[TrialState.PRUNED]} "
          f"pruned, {n[TrialState.FAIL]} failed (storage {redact(res['url'])})")
    if spec.multi_objective:
        front = pareto_trials(study)
        print(f"Pareto front: trials {', '.join(str(t.number) for t in front) or 'none yet'}")
    else:
        best = best_trial(study)
        if best is not None:
            print(f"best trial {best.number}: {spec.objectives[0].metric} = {best.values[0]:.4g}  "
                  + _params(best))
        else:
            print("no complete trial satisfies the constraints yet")
    make_vars = f"SEARCH={spec_ref(spec)} PROFILE={spec.profile}"
    print(f"next: make optuna-dashboard   (OPTUNA_STORAGE={redact(res['url'])})\n"
          f"      make search-best {make_vars}\n"
          f"      make figure-pareto {make_vars}\n"
          f"      MLflow parent run {res['parent_run_id']} (make mlflow-ui)")
    return 0


def cmd_search_best(args) -> int:
    from .experiments import EXPERIMENTS_DIR
    from .search import choose_trial, load_study_for, pareto_table, resolution_note, write_best
    from .search.best import fmt

    spec = _load_spec(args)
    study = load_study_for(spec, args.storage)
    if spec.multi_objective and args.trial is None:
        print("\n".join(pareto_table(study, spec)))
    trial = choose_trial(study, spec, args.trial, args.pareto_index)
    if not spec.multi_objective and args.trial is None and args.pareto_index is not None:
        print("note: --pareto-index applies to multi-objective searches; taking the best trial")
    path = write_best(spec, trial, Path(args.out) if args.out else None)
    note = resolution_note(path, spec, trial)
    if note:
        print(note)
    values = ", ".join(f"{o.metric} = {fmt(v)}" for o, v in zip(spec.objectives, trial.values))
    print(f"trial {trial.number} ({values}): " + _params(trial))
    how = (f"make run EXP={path.stem} PROFILE={spec.profile}"
           if path.resolve().parent == EXPERIMENTS_DIR.resolve()
           else f"python -m reproduce run {path} --profile {spec.profile}")
    print(f"wrote {path}\nrun it: {how}")
    return 0


def cmd_pareto(args) -> int:
    from analysis.search_plots import draw_search

    from .search import load_study_for

    spec = _load_spec(args)
    study = load_study_for(spec, args.storage)
    for path in draw_search(spec, study, Path(args.out) if args.out else None):
        print(f"wrote {path}")
    return 0


def add_search_commands(sub) -> None:
    p = sub.add_parser("search", help="run (or resume) an Optuna search of a search spec")
    _add_search_options(p, with_trials=True)
    p.add_argument("--workers", type=int, default=1,
                   help="start this many local worker processes on the study (default 1: this one)")
    p.add_argument("--worker-index", type=int, default=0,
                   help="offsets the sampler seed so that workers draw different points; give each "
                        "machine's worker its own index")
    p.add_argument("--force", action="store_true", default=os.environ.get("FORCE") == "1",
                   help="retrain trials whose exact configuration is already tracked")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--spawned", action="store_true", help=argparse.SUPPRESS)
    _add_launcher(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("search-best", help="write a search's best trial (or a Pareto point) as a "
                                           "runnable experiment file")
    _add_search_options(p)
    p.add_argument("--pareto-index", type=int, default=None,
                   help="multi-objective: which Pareto point (0 = most accurate; the table lists them)")
    p.add_argument("--trial", type=int, default=None, help="take this trial number instead")
    p.add_argument("--out", default=None, help="default: experiments/<spec name>-best.yaml")
    p.set_defaults(func=cmd_search_best)

    p = sub.add_parser("pareto", help="accuracy vs MACs of every trial, Pareto front, importances")
    _add_search_options(p)
    p.add_argument("--out", default=None, help="output directory (default: figures/)")
    p.set_defaults(func=cmd_pareto)
