"""Training-step cost of the method against the dense model, measured in the same process.

    python bench/bench_step.py [--model resnet20] [--batch 128] [--size 32] [--device auto]

Reports the median time of one optimisation step for
  dense      the model without gates (the baseline every ratio is relative to)
  gated      the method's full step: sample gates, forward, penalty, backward, two optimizers,
             budget update and training-cost accounting
  bookkeep   only the method's per-iteration Python work (sample + penalty + after_step)
  compact    the exported model of a 50 %-MACs architecture (what physical restructuring buys)
Ratios, not absolute times, are the result: they transfer across machines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the checkout this script is in

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from reproduce.method import GrowthController, export  # noqa: E402
from reproduce.method.options import BudgetOptions  # noqa: E402
from reproduce.models import create_model  # noqa: E402
from reproduce.train import pick_device, train_step  # noqa: E402


def timed(fn, device: torch.device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    device = pick_device(args.device)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)

    def plain_step(model):
        """One SGD step of an ordinary (gate-free) model."""
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    dense_step = plain_step(create_model(args.model, gate_channels=False).to(device))

    gated = create_model(args.model).to(device)
    grow = GrowthController(gated, (3, args.size, args.size), epochs=10,
                            budget=BudgetOptions(target=0.5))
    opt_w = torch.optim.SGD(grow.weight_parameters(), lr=0.01, momentum=0.9)
    opt_m = torch.optim.SGD(grow.mask_parameters(), lr=0.01, momentum=0.9)

    def gated_step():
        train_step(gated, grow, (opt_w, opt_m), x, y, F.cross_entropy, args.batch)

    def bookkeeping():
        grow.sample()
        grow.penalty()
        grow.after_step(args.batch)

    with torch.no_grad():        # a random hard architecture (about a quarter of dense MACs)
        for g in grow.gates:
            g.logits.uniform_(-1, 1)
    compact_step = plain_step(export(gated).train())

    gated.train()
    results = {name: timed(fn, device, 3, args.repeats) for name, fn in
               [("dense", dense_step), ("gated", gated_step), ("bookkeep", bookkeeping),
                ("compact", compact_step)]}
    usage = grow.costs.hard()[0] / grow.costs.dense_macs
    print(f"{args.model}, batch {args.batch}, {args.size}x{args.size}, {device} "
          f"({torch.get_num_threads()} threads); compact model at {usage:.2f} of dense MACs")
    for name, t in results.items():
        print(f"  {name:9s} {1e3 * t:8.2f} ms/step   {t / results['dense']:5.2f} x dense")


if __name__ == "__main__":
    main()
