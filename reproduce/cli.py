"""`python -m reproduce run|figure|table|flops|list|data|demo …`"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from .config import ConfigError, parse_overrides


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default=os.environ.get("PROFILE", "smoke"),
                   help="smoke (CPU minutes, digits) or paper (CIFAR-10, full schedule)")
    p.add_argument("--force", action="store_true", default=os.environ.get("FORCE") == "1",
                   help="retrain even if a finished run with the same config exists")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field for every run, e.g. --set budget.target=0.3")
    p.add_argument("--only", action="append", default=None, metavar="VARIANT",
                   help="train only this variant of the experiment (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_run(args) -> int:
    from .runner import run_experiment

    for exp in args.experiments:
        summaries = run_experiment(exp, args.profile, args.force, parse_overrides(args.overrides),
                                   args.only, progress=not args.quiet)
        for s in summaries:
            state = "reused" if s["reused"] else "trained"
            print(f"{state:8s} {s['run_id']}  {s['model']}/{s['variant']}/seed{s['seed']}  "
                  f"val/acc {s['val/acc']:.2f}  MACs {s['cost/macs'] / max(1, s['cost/dense_macs']):.3f}"
                  f" of dense")
    return 0


def cmd_figure(args) -> int:
    from analysis import draw

    for target in args.targets:
        outputs = draw(target, profile=args.profile, run_missing=not args.no_run,
                       force=args.force, overrides=parse_overrides(args.overrides),
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
        c = tracking.client()
        exp_id = tracking.experiment_id(c, args.profile, create=False)
        if exp_id is None:
            print(f"no runs yet for profile {args.profile!r} in {tracking.tracking_uri()}")
            return 0
        for r in c.search_runs([exp_id], order_by=["attributes.start_time DESC"], max_results=500):
            t, m = r.data.tags, r.data.metrics
            print(f"{r.info.run_id}  {r.info.status:9s} {t.get('model', '?'):10s} "
                  f"{t.get('variant', '?'):18s} s{t.get('seed', '?'):3s} "
                  f"acc {m.get('val/acc', float('nan')):6.2f}  figures {t.get('figures', '')}")
    return 0


def cmd_data(args) -> int:
    from .config import DataConfig, data_root
    from .data import download

    root = args.root or data_root(DataConfig())
    download(args.dataset, root)
    print(f"{args.dataset} is in {root}")
    return 0


def cmd_demo(args) -> int:
    from .demo import main
    return main(profile=args.profile, force=args.force)


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", category=FutureWarning)
    parser = argparse.ArgumentParser(prog="python -m reproduce", description=__doc__)
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
    p.add_argument("--input", default="3,32,32", help="C,H,W of one input")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--run", default=None, help="an MLflow run id: also report its final architecture")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_flops)

    p = sub.add_parser("list", help="models, experiments, or tracked runs")
    p.add_argument("what", choices=["models", "experiments", "runs"])
    p.add_argument("--profile", default=os.environ.get("PROFILE", "smoke"))
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("data", help="download a dataset (CIFAR only; ImageNet must be placed by hand)")
    p.add_argument("dataset", choices=["cifar10", "cifar100"])
    p.add_argument("--root", default=None, help="default: $DATA_DIR or ./data")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("demo", help="the smoke reproduction of figures 7 and 9, with a summary")
    p.add_argument("--profile", default="smoke")
    p.add_argument("--force", action="store_true", default=os.environ.get("FORCE") == "1")
    p.set_defaults(func=cmd_demo)

    from .search import register_cli as register_search
    register_search(sub)

    args = parser.parse_args(argv)
    from .data import DatasetMissing
    from .tracking import StoreError
    try:
        return args.func(args)
    except (ConfigError, DatasetMissing, StoreError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
