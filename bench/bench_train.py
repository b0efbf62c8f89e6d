"""Realised training savings of a growing network, measured in one process.

    python bench/bench_train.py [--model resnet20] [--batch 128] [--size 32] [--target 0.5]
                                [--epochs 8] [--steps 12] [--archs 24] [--repeats 3]
                                [--threads N] [--channels-last] [--resample-every K]

1. Schedule. The method grows `model` from its seed architecture under a `target` MACs budget
   for `epochs` × `steps` iterations on random data of the benchmark's shape (the suite's
   defaults otherwise: bernoulli sampling, β ramped over half the epochs, the budget controller,
   SGD on weights and logits). Every iteration's sampled architecture q is recorded.
2. Replay. `archs` of those architectures, evenly spaced over the schedule, are each timed as one
   training step (forward, loss, backward, optimizer steps; for the gated model also the
   method's per-iteration work: samples, penalty, budget update and cost accounting):
     dense         the model without gates (the baseline)
     masked        the gated model, closed structures computed and multiplied by zero
     restructured  the gated model computing only the active structures (train.execution)
     compact       a gate-free model of exactly that architecture, built and warmed up (one
                   step) outside the timing: what restructuring can at best buy
   The four are interleaved per architecture, so CPU contention from other processes hits all
   alike: restructured first (before the compact model's warm-up has prepared the kernels of
   its shapes), then the other three in rotating order; the replay is repeated `repeats` times
   and medians reported.
   With `--resample-every K` the schedule holds each sampled architecture for K iterations
   (gates.resample_every) and every replayed architecture is timed as K consecutive steps.
   `--channels-last` runs all four in channels-last memory format (train.channels_last).
   Beside the wall clock, the process CPU time of the same steps is reported: with one thread
   it is what the step costs without the waiting that other processes cause (load-robust).
3. Realisation ratio = (1 − time / dense time) ÷ (1 − training MACs / dense training MACs):
   the share of the counted training savings that the wall clock realises (1 = all of them).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the checkout this script is in

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from reproduce.method import GrowthController  # noqa: E402
from reproduce.method.gates import BlockGate, ChannelGate  # noqa: E402
from reproduce.method.options import BudgetOptions, GateOptions  # noqa: E402
from reproduce.models import create_model  # noqa: E402
from reproduce.train import pick_device, train_step  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build(args, device, **kwargs) -> torch.nn.Module:
    model = create_model(args.model, **kwargs).to(device)
    return model.to(memory_format=torch.channels_last) if args.channels_last else model


def controller(args, model, execution: str) -> GrowthController:
    return GrowthController(model, (3, args.size, args.size), epochs=args.epochs,
                            gates=GateOptions(resample_every=args.resample_every),
                            budget=BudgetOptions(target=args.target), execution=execution)


def record_schedule(args, device, x, y) -> tuple[list[torch.Tensor], list[float]]:
    """Grow the model for epochs × steps iterations; every iteration's samples and hard usage."""
    model = build(args, device, gate_blocks=args.gate_blocks)
    grow = controller(args, model, "restructured")
    opt_w = torch.optim.SGD(grow.weight_parameters(), lr=0.1, momentum=0.9, nesterov=True,
                            weight_decay=1e-4)
    opt_m = torch.optim.SGD(grow.mask_parameters(), lr=0.1, momentum=0.9)
    samples, usage = [], []
    model.train()
    for _ in range(args.epochs):
        grow.start_epoch()
        for _ in range(args.steps):
            train_step(model, grow, (opt_w, opt_m), x, y, F.cross_entropy, args.batch)
            samples.append(torch.cat([g.sample.detach().cpu() for g in grow.gates]))  # its q
            usage.append(grow.budget.usage)
    return samples, usage


def gated_runner(args, device, x, y, execution: str):
    """One training step of the method's gated model on a given architecture."""
    model = build(args, device, gate_blocks=args.gate_blocks)
    grow = controller(args, model, execution)
    opt_w = torch.optim.SGD(grow.weight_parameters(), lr=0.01, momentum=0.9, nesterov=True,
                            weight_decay=1e-4)
    opt_m = torch.optim.SGD(grow.mask_parameters(), lr=0.01, momentum=0.9)
    model.train()

    def step(q: torch.Tensor) -> None:
        train_step(model, grow, (opt_w, opt_m), x, y, F.cross_entropy, args.batch, replay=q)
    return grow, step


def plain_step(model, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                          weight_decay=1e-4)
    model.train()

    def step(_q=None) -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def compact_of(template, names, gates, q: torch.Tensor, device, channels_last: bool = False):
    """A gate-free model of exactly the architecture q (random weights: only shapes matter)."""
    sizes, removed = {}, set()
    state = dict(zip(names, q.split([g.n for g in gates])))
    blocks = {b.gate: b.name for b in template.removable_blocks()}
    for name, g in zip(names, gates):
        if isinstance(g, ChannelGate):
            sizes[name] = int(state[name].sum())
        elif isinstance(g, BlockGate) and not state[name].item():
            removed.add(blocks[name])
    with warnings.catch_warnings():          # zero-width layers
        warnings.simplefilter("ignore", UserWarning)
        model = template.compact(sizes, removed).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def timed(fn, q, device, steps: int) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of `steps` training steps on architecture q."""
    sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn(q)
    sync(device)
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--gate-blocks", action="store_true", help="also grow blocks")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--target", type=float, default=BudgetOptions.target,
                    help="MACs budget of the schedule (budget.target)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=12, help="iterations per epoch of the schedule")
    ap.add_argument("--archs", type=int, default=24, help="architectures replayed")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    ap.add_argument("--resample-every", type=int, default=GateOptions.resample_every,
                    help="iterations each sampled architecture trains (gates.resample_every)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    device = pick_device(args.device)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    t0 = time.perf_counter()
    samples, usage = record_schedule(args, device, x, y)
    record_s = time.perf_counter() - t0
    n = len(samples)
    picks = [round(i * (n - 1) / max(1, args.archs - 1)) for i in range(min(args.archs, n))]
    archs = [samples[i] for i in picks]

    masked_ctl, masked = gated_runner(args, device, x, y, "masked")
    _, restructured = gated_runner(args, device, x, y, "restructured")
    dense = plain_step(build(args, device, gate_channels=False), x, y)
    template = masked_ctl.model
    names = [nm for nm, _ in masked_ctl.named_gates]
    costs = masked_ctl.costs
    macs = [float(costs.count(dict(zip(names, q.split([g.n for g in masked_ctl.gates]))))[0])
            for q in archs]
    mac_ratio = sum(macs) / (len(archs) * costs.dense_macs)

    for fn in (dense, masked, restructured):          # warm up every path once
        for q in archs[:2]:
            fn(q)
    modes = ["dense", "masked", "restructured", "compact"]
    steps = args.resample_every
    totals = {m: [] for m in modes}          # wall-clock seconds per repeat
    cpu = {m: [] for m in modes}             # process CPU seconds per repeat
    for r in range(args.repeats):
        t = {m: 0.0 for m in modes}
        c = {m: 0.0 for m in modes}
        for i, q in enumerate(archs):
            # restructured first: the compact model's warm-up prepares the kernels of exactly
            # these shapes (oneDNN/cuDNN caches are per process), which restructured training
            # has to prepare itself whenever the architecture changes
            wall, proc = timed(restructured, q, device, steps)
            t["restructured"] += wall
            c["restructured"] += proc
            compact = plain_step(compact_of(template, names, masked_ctl.gates, q, device,
                                            args.channels_last), x, y)
            compact()                                  # warm-up outside the timing
            fns = {"dense": dense, "masked": masked, "compact": compact}
            rest = ["dense", "masked", "compact"]
            for m in rest[(i + r) % 3:] + rest[:(i + r) % 3]:
                wall, proc = timed(fns[m], q, device, steps)
                t[m] += wall
                c[m] += proc
        for m in modes:
            totals[m].append(t[m])
            cpu[m].append(c[m])

    def ratio(times: dict, m: str, k: int) -> float:
        return (1 - times[m][k] / times["dense"][k]) / (1 - mac_ratio)

    def median_ratio(times: dict, m: str) -> float:
        return statistics.median(ratio(times, m, k) for k in range(args.repeats))

    load_after = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"{args.model}{' +blocks' if args.gate_blocks else ''}, batch {args.batch}, "
          f"{args.size}x{args.size}, {device} ({torch.get_num_threads()} threads"
          f"{', channels-last' if args.channels_last else ''}), torch {torch.__version__}; "
          f"load average (1/5/15 min) before {'/'.join(f'{v:.1f}' for v in load_before)}, "
          f"after {'/'.join(f'{v:.1f}' for v in load_after)}")
    print(f"schedule: {n} iterations ({args.epochs} epochs x {args.steps}, a new architecture "
          f"every {args.resample_every}) in {record_s:.0f} s, budget {args.target}; hard usage "
          f"{usage[0]:.2f} -> {usage[len(usage) // 2]:.2f} -> {usage[-1]:.2f}; {len(archs)} "
          f"architectures replayed ({steps} step{'s' if steps > 1 else ''} each) x {args.repeats}")
    print(f"training MACs of the replayed architectures: {mac_ratio:.3f} of dense "
          f"(counted savings {1 - mac_ratio:.3f})")
    print("| mode | ms/step (median) | time / dense | realisation ratio | "
          "CPU ms/step | CPU time / dense | realisation ratio (CPU time) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for m in modes:
        per_step = len(archs) * steps
        rel = statistics.median(t / d for t, d in zip(totals[m], totals["dense"]))
        rel_cpu = statistics.median(t / d for t, d in zip(cpu[m], cpu["dense"]))
        rr = "—" if m == "dense" else f"{median_ratio(totals, m):+.2f}"
        rr_cpu = "—" if m == "dense" else f"{median_ratio(cpu, m):+.2f}"
        print(f"| {m} | {1e3 * statistics.median(totals[m]) / per_step:.1f} | {rel:.3f} | {rr} | "
              f"{1e3 * statistics.median(cpu[m]) / per_step:.1f} | {rel_cpu:.3f} | {rr_cpu} |")
    for label, times in (("wall clock", totals), ("CPU time", cpu)):
        rr_r, rr_c = median_ratio(times, "restructured"), median_ratio(times, "compact")
        print(f"{label}: restructured realises {rr_r / rr_c:.0%} of what the compact models "
              f"realise")


if __name__ == "__main__":
    main()
