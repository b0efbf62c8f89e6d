"""`python -m reproduce run|figure|table|flops|list|data|demo|search|search-best|pareto …`"""

# Every command lives here. Heavy packages (torch, mlflow, optuna and what imports them) are
# imported inside the command that needs them, so that `python -m reproduce --help` stays instant.

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import warnings
from pathlib import Path

from .errors import ConfigError


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
    p.add_argument("--jobs", type=int, default=int(os.environ.get("JOBS") or 1), metavar="N",
                   help="train with N processes at once (each run is trained by exactly one)")
    # how `--jobs` hands the parent's overrides to its helper processes
    p.add_argument("--overrides-json", default="{}", help=argparse.SUPPRESS)


def _run_overrides(args) -> dict:
    """--set overrides on top of those a parent process handed over (--overrides-json)."""
    def merge(a: dict, b: dict) -> dict:
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out
    return merge(json.loads(args.overrides_json), _overrides(args.overrides))


def cmd_run(args) -> int:
    from . import distributed
    from .pipeline import train_all
    from .runner import run_experiment

    overrides = _run_overrides(args)
    if distributed.init_from_env():   # under torchrun: one run on every process, rank 0 tracks
        args.jobs = 1
    if args.jobs > 1 and not args.only:
        train_all(args.experiments, args.profile, args.force, overrides, args.jobs,
                  progress=not args.quiet)
    for exp in args.experiments:
        summaries = run_experiment(exp, args.profile, args.force and args.jobs <= 1, overrides,
                                   args.only, progress=not args.quiet)
        for s in summaries:
            state = "reused" if s["reused"] else "trained"
            print(f"{state:8s} {s['run_id']}  {s['model']}/{s['variant']}/seed{s['seed']}  "
                  f"{s['main_metric']} {s[s['main_metric']]:.2f}  MACs {s['cost/macs'] / max(1, s['cost/dense_macs']):.3f}"
                  f" of dense")
    return 0


def cmd_figure(args) -> int:
    from .pipeline import experiments_of, make, train_all

    overrides = _run_overrides(args)
    if not args.no_run:      # everything the targets need first, with --jobs processes at once
        train_all(experiments_of(args.targets), args.profile, args.force, overrides, args.jobs,
                  progress=not args.quiet)
    for target in args.targets:
        outputs = make(target, profile=args.profile, run_missing=False, overrides=overrides,
                       out_dir=Path(args.out) if args.out else None, progress=not args.quiet)
        for path in outputs:
            print(f"wrote {path}")
    return 0


def cmd_flops(args) -> int:
    from .flops import describe

    info = describe(args.model, args.input, args.num_classes, args.run)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:>16s}: {v:,.0f}" if isinstance(v, (int, float)) else f"{k:>16s}: {v}")
    return 0


def cmd_list(args) -> int:
    if args.what == "models":
        from .models import available_models
        print("\n".join(available_models()))
    elif args.what == "experiments":
        from .experiments import EXPERIMENTS_DIR, PROFILES_FILE
        files = [p for p in sorted(EXPERIMENTS_DIR.glob("*.yaml")) if p.name != PROFILES_FILE]
        searches = [p.stem for p in files if p.stem.startswith("search-") and
                    not p.stem.endswith("-best")]
        print("experiments (python -m reproduce run NAME):")
        print("\n".join(f"  {p.stem}" for p in files if p.stem not in searches))
        print("search specs (python -m reproduce search NAME):")
        print("\n".join(f"  {name}" for name in searches))
    else:
        from . import tracking
        from .tasks import TASKS
        main_metrics = [task.main_metric for task in TASKS.values()]
        c = tracking.client()
        exp_id = tracking.experiment_id(c, args.profile, create=False)
        if exp_id is None:
            print(f"no runs yet for profile {args.profile!r} in {tracking.tracking_uri()}")
            return 0
        for r in c.search_runs([exp_id], order_by=["attributes.start_time DESC"], max_results=500):
            t, m = r.data.tags, r.data.metrics
            # its task's main metric (accuracy, perplexity, mIoU, ...): the one the run tracked
            key = next((k for k in main_metrics if k in m), main_metrics[0])
            print(f"{r.info.run_id}  {r.info.status:9s} {t.get('model', '?'):10s} "
                  f"{t.get('variant', '?'):18s} s{t.get('seed', '?'):3s} "
                  f"{key.split('/')[1]} {m.get(key, float('nan')):6.2f}  "
                  f"figures {t.get('figures', '')}")
    return 0


DATA_ACTIONS = ("list", "check", "make-smoke-imagenet")    # besides the registry's downloads


def cmd_data(args) -> int:
    from . import data as D
    from .config import DataConfig, data_root
    from .data.imagefolder import folder_root, make_smoke_imagenet

    if args.action == "list":
        return _list_datasets(args.root or "", args.json)
    if args.action == "check":
        name = args.dataset or "imagenet"
        if not D.dataset_exists(name):
            raise ConfigError(f"data check: unknown dataset {name!r}; choose one of "
                              f"{', '.join(D.available_datasets())}")
        spec, cfg = D.dataset(name), DataConfig(dataset=name, root=args.root or "")
        if spec.describe is None:
            D.check_available(cfg)                   # DatasetMissing names the path and the fix
            print(f"{name}: nothing missing ({spec.source})")
            return 0
        info = spec.describe(cfg)
        if args.json:
            print(json.dumps(info, indent=2))
            return 0
        print(f"{name} in {info['root']}")
        for split in ("train", "val"):
            d = info[split]
            empty = f", {len(d['empty_classes'])} without images" if d["empty_classes"] else ""
            print(f"  {split:5s} {d['classes']:5d} classes  {d['images']:9d} images{empty}")
        ok = info["same_classes"] and not any(info[s]["empty_classes"] for s in ("train", "val"))
        if not info["same_classes"]:
            print("  train and val have different class folders: labels would not match")
        return 0 if ok else 1
    if args.action == "make-smoke-imagenet":
        root = folder_root(DataConfig(dataset="imagenet_smoke", root=args.root or ""))
        counts = make_smoke_imagenet(root)
        print(f"ImageNet-style digits written to {root}: {counts['train']} train and "
              f"{counts['val']} val images in 10 class folders")
        return 0
    if args.action not in D.available_downloads():
        raise ConfigError(f"data: unknown action {args.action!r}; choose one of "
                          f"{', '.join(DATA_ACTIONS)} or a download: "
                          f"{', '.join(D.available_downloads())}")
    where = D.download(args.action, args.root or data_root(DataConfig()))
    print(f"{args.action} is in {where}")
    return 0


def _list_datasets(root: str, as_json: bool) -> int:
    """Every registered dataset: its task, whether it is on disk, how it is obtained (download:
    `python -m reproduce data NAME`; by hand; built in: bundled or generated) and from where."""
    from . import data as D
    from .config import DataConfig
    rows = []
    for name in D.available_datasets():
        spec = D.dataset(name)
        how = "download" if spec.download else "by hand" if spec.check else "built in"
        rows.append({"name": name, "task": spec.task, "obtained": how,
                     "missing": D.missing(DataConfig(dataset=name, root=root)),
                     "source": spec.source})
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['name']:16s} {r['task']:20s} {'missing' if r['missing'] else 'ready':8s} "
              f"{r['obtained']:9s} {r['source']}")
    return 0


def cmd_demo(args) -> int:
    from .demo import main
    return main(profile=args.profile, force=args.force)


# ------------------------------------------------------------------------- search commands
# (reproduce.search imports optuna, and its worker the training code: imported per command.)

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

    spec = _load_spec(args, args.trials)
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
                         args.workers, extra)
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


def _add_search_commands(sub) -> None:
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


EXAMPLES = """examples:
  python -m reproduce demo                                  # grow ResNet-20 on digits, draw Figures 7 and 9
  python -m reproduce figure 7 --profile smoke              # train what Figure 7 needs, then draw it
  python -m reproduce figure 7 --no-run                     # redraw from the tracked runs only
  python -m reproduce table cifar ablation                  # write figures/table-cifar.md, ...
  python -m reproduce run figure-7 --set budget.target=0.3  # any knob, from the command line
  python -m reproduce list experiments                      # what can be run
  python -m reproduce flops --model vgg16 --json            # dense params and MACs
  python -m reproduce search search-resnet20-budget --trials 8 --workers 2
  python -m reproduce links                                 # direct links to the runs tables

Stores: MLFLOW_TRACKING_URI (default sqlite:///mlflow.db at the repository root), OPTUNA_STORAGE
(default sqlite:///optuna.db), DATA_DIR (default ./data), PROFILE (default smoke).
"""


def cmd_links(args) -> int:
    from . import tracking
    c = tracking.client()
    found = [e for e in c.search_experiments() if e.name.startswith(tracking.EXPERIMENT_PREFIX + "-")]
    if not found:
        print(f"no experiments yet in {tracking.tracking_uri()}; run `make demo` first")
    base = f"http://{args.host}:{args.port}"
    for e in found:
        print(f"{e.name:24s} {tracking.runs_table_url(e.experiment_id, base)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", category=FutureWarning)
    parser = argparse.ArgumentParser(prog="python -m reproduce", description=__doc__,
                                     epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="train (or reuse) every run of experiment files")
    p.add_argument("experiments", nargs="+", help="experiment name (figure-7) or path to a YAML")
    _add_run_options(p)
    p.set_defaults(func=cmd_run)

    for name, helptext in (("figure", "run what a figure needs, then draw it from tracked runs"),
                           ("table", "run what a table needs, then tabulate it from tracked runs")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("targets", nargs="+", help="e.g. 7, figure-7, cifar, table-cifar")
        p.add_argument("--no-run", action="store_true", help="draw from existing runs only")
        p.add_argument("--out", default=None, help="output directory (default: figures/)")
        _add_run_options(p)
        p.set_defaults(func=cmd_figure)

    p = sub.add_parser("flops", help="params and MACs of a dense model (or a tracked run's result)")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--input", default=None,
                   help="C,H,W of one input; default: the model's own (3,224,224 for resnet50 "
                        "and mobilenet_v1, 3,32,32 for CIFAR models)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="default: the model's own (10 for CIFAR models, a vocabulary of 10000 "
                        "for lstm_lm, 21 VOC classes for fcn_*)")
    p.add_argument("--run", default=None, help="an MLflow run id: also report its final architecture")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_flops)

    p = sub.add_parser("list", help="models, experiments, or tracked runs")
    p.add_argument("what", choices=["models", "experiments", "runs"])
    _add_profile(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("data", help="list the datasets, download one (CIFAR, PASCAL VOC 2012, "
                                    "SBD), check one on disk (an ImageNet tree: classes and "
                                    "images), or write the smoke ImageNet-style tree")
    # the actions are checked against the dataset registry by cmd_data (importing it here
    # would import torch for `--help`)
    p.add_argument("action", metavar="ACTION",
                   help="list: every dataset, its task and whether it is on disk; the name of "
                        "a dataset `list` marks as `download`, or sbd (into ROOT/sbd, for VOC's "
                        "data.sbd): download it; check [DATASET]: what is missing (image folders: "
                        "classes and image counts, default imagenet); make-smoke-imagenet: "
                        "generate ImageNet-style digits")
    p.add_argument("dataset", nargs="?", default=None,
                   help="for check: a dataset (default imagenet)")
    p.add_argument("--root", default=None, help="default: $DATA_DIR (or ./data), or for image "
                   "folders $DATA_DIR/imagenet and $DATA_DIR/imagenet-smoke")
    p.add_argument("--json", action="store_true", help="check, list: print the report as JSON")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("demo", help="the smoke reproduction of figures 7 and 9, with a summary")
    p.add_argument("--profile", default="smoke")
    p.add_argument("--force", action="store_true", default=os.environ.get("FORCE") == "1")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("links", help="direct links to each experiment's runs table in mlflow ui")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", default=os.environ.get("PORT", "5000"))
    p.set_defaults(func=cmd_links)

    _add_search_commands(sub)

    args = parser.parse_args(argv)
    from .data import DatasetMissing
    from .tracking import StoreError
    try:
        return args.func(args)
    except (ConfigError, DatasetMissing, StoreError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
