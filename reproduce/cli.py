"""`python -m reproduce run|figure|table|jobs|flops|list|data|demo …`, the browsers
(`links|mlflow-ui|optuna-dashboard`), and the search commands of cli_search.py."""

# Every command lives here. Heavy packages (torch, mlflow, optuna and what imports them) are
# imported inside the command that needs them, so that `python -m reproduce --help` stays instant.

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from .errors import ConfigError


from .cli_args import _add_profile, _add_run_options, _launch_options


def cmd_run(args) -> int:
    from . import distributed
    from .pipeline import plan_all, train_all

    opts = _launch_options(args)
    if distributed.init_from_env():   # under torchrun: one run on every process, rank 0 tracks
        opts["jobs"] = 1
    runs = plan_all(args.experiments, args.profile, opts.pop("overrides"), args.only)
    label = "-".join(Path(e).stem for e in args.experiments)
    for s in train_all(runs, args.force, progress=not args.quiet, label=label, **opts):
        state = "reused" if s["reused"] else "trained"
        print(f"{state:8s} {s['run_id']}  {s['model']}/{s['variant']}/seed{s['seed']}  "
              f"{s['main_metric']} {s[s['main_metric']]:.2f}  MACs {s['cost/macs'] / max(1, s['cost/dense_macs']):.3f}"
              f" of dense")
    return 0


def cmd_figure(args) -> int:
    from .pipeline import experiments_of, finished_hashes, make, plan_each, train_all

    opts = _launch_options(args)
    overrides = opts.pop("overrides")
    plans = plan_each(experiments_of(args.targets), args.profile, overrides)   # once, for all
    if not args.no_run:      # everything the targets need first, with --jobs processes at once
        train_all([pr for runs in plans.values() for pr in runs], args.force, progress=not args.quiet,
                  label="-".join(args.targets), **opts)
    for target in args.targets:
        if args.launcher == "slurm" and not finished_hashes(
                [pr for e in experiments_of([target]) for pr in plans[e]]):
            print(f"{target}: nothing to draw yet, none of its runs has finished; the same "
                  f"command draws it once they have (`python -m reproduce jobs` lists the jobs)")
            continue
        outputs = make(target, profile=args.profile, run_missing=False, overrides=overrides,
                       out_dir=Path(args.out) if args.out else None, progress=not args.quiet,
                       plans=plans)
        for path in outputs:
            print(f"wrote {path}")
    return 0


def cmd_jobs(args) -> int:
    from . import tracking
    from .launch.slurm import list_jobs

    list_jobs(tracking.tracking_uri(), args.profile if args.profile != "all" else None)
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
    from .serve import print_links
    uri = tracking.tracking_uri()
    if args.port is None and args.host is None and uri.startswith(("http://", "https://")):
        base = uri.rstrip("/")                 # a tracking server: its own UI
    else:
        base = tracking.ui_base(args.port, args.host or "127.0.0.1")
    return print_links(base, uri)


def cmd_report(args) -> int:
    from pathlib import Path

    from . import report
    try:
        paths = report.write(args.profile, Path(args.out) if args.out else None)
    except FileNotFoundError as e:
        print(e)
        return 1
    for path in paths:
        print(f"wrote {path}")
    return 0


def cmd_mlflow_ui(args) -> int:
    from .serve import serve_mlflow
    return serve_mlflow(args.host, args.port, args.workers, args.jobs)


def cmd_optuna_dashboard(args) -> int:
    from .search.storage import storage_url
    from .serve import serve_dashboard
    return serve_dashboard(storage_url(args.storage), args.host, args.port)


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

    p = sub.add_parser("jobs", help="the suite's Slurm jobs: state, run, link (LAUNCHER=slurm)")
    p.add_argument("--profile", default=os.environ.get("PROFILE", "all"),
                   help="only this profile's jobs (default: all)")
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("links", help="direct links to each experiment's runs table in mlflow ui "
                                     "(never creates a store)")
    p.add_argument("--host", default=None, help="default 127.0.0.1")
    p.add_argument("--port", default=None, help="default $PORT, else 5000")
    p.set_defaults(func=cmd_links)

    p = sub.add_parser("report", help="one shareable HTML page and PDF of a profile's figures and "
                                      "tables, the paper's numbers beside ours, run links and "
                                      "the environment (figures/report-PROFILE.{html,pdf})")
    p.add_argument("--profile", default="smoke")
    p.add_argument("--out", default=None, help="the figures folder (default $FIGURES_DIR or figures/)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("mlflow-ui", help="serve the tracked runs in MLflow's UI (the suite's app), "
                                         "then print the links")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 5000))
    p.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    p.add_argument("--jobs", action="store_true",
                   help="run MLflow's background job runner too (off: ~0.5 GB instead of ~3 GB)")
    p.set_defaults(func=cmd_mlflow_ui)

    p = sub.add_parser("optuna-dashboard", help="serve the Optuna studies in optuna-dashboard, "
                                                "best trials under the studies' constraints")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL (default: $OPTUNA_STORAGE, else sqlite:///optuna.db)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=int(os.environ.get("DASHBOARD_PORT") or 8080))
    p.set_defaults(func=cmd_optuna_dashboard)

    from .cli_search import add_search_commands
    add_search_commands(sub)

    args = parser.parse_args(argv)
    from .data import DatasetMissing
    from .tracked_run import Preempted
    from .tracking import StoreError
    try:
        return args.func(args)
    except (ConfigError, DatasetMissing, StoreError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Preempted as e:       # a cluster job requeues itself; the same command resumes
        print(f"stopped: {e}", file=sys.stderr)
        return 128 + e.signum
