"""`make demo`: the smoke reproduction of Figures 7 and 9, then a short summary."""

from __future__ import annotations

import time

from . import tracking


def main(profile: str = "smoke", force: bool = False) -> int:
    from .experiments import plan
    from .pipeline import make
    from .store import Store

    start = time.perf_counter()
    print(f"Growing ResNet-20 from a 25% channel seed to a 50% MACs budget ({profile} profile).")
    print(f"Runs are tracked in {tracking.tracking_uri()}\n")
    outputs = make("figure-7", profile=profile, force=force)
    outputs += make("figure-9", profile=profile, run_missing=False)
    runs = Store().runs(profile, {p.hash for p in plan("figure-7", profile)})
    r = runs.iloc[0]
    print("\nSummary (" + ", ".join(f"run {x}" for x in runs["run_id"]) + ")")
    print(f"  final validation accuracy  {r['val/acc']:.2f} %  ({r['dataset']}, hard gates)")
    print(f"  inference MACs             {r['cost/macs'] / 1e6:.3f} M = {r['budget/usage']:.3f} of "
          f"dense ({r['cost/dense_macs'] / 1e6:.3f} M); target {float(r['param.budget.target']):g}")
    print(f"  params                     {r['cost/params'] / 1e3:.1f} k of "
          f"{r['cost/dense_params'] / 1e3:.1f} k")
    print(f"  training-MACs savings      {100 * r['cost/train_savings']:.1f} % against dense "
          f"training over the same schedule")
    print("  (MACs of conv and linear layers; FLOPs = 2 x MACs)")
    print("\nFigures:")
    for p in outputs:
        print(f"  {p}")
    exp_id = tracking.experiment_id(tracking.client(), profile, create=False)
    print(f"\nBrowse the runs:  make mlflow-ui   (then open {tracking.runs_table_url(exp_id)})")
    print("Any other figure: make figure-9, or change a knob: "
          "python -m reproduce run figure-7 --set budget.target=0.3")
    print(f"Done in {time.perf_counter() - start:.0f} s.")
    return 0
