"""What the paper profile costs on this GPU: one table and a JSON file, in at most 8 minutes.

    python bench/gpu_check.py [--out PATH] [--quick] [--steps 128] [--warmup 8]
    make gpu-check

1. CIFAR epoch time. CIFAR-10-sized data (50,000 train / 10,000 test random 32×32 images) is
   written in CIFAR-10's python-pickle format into a temporary folder and read through the suite's
   own CIFAR loader (data.dataset: cifar10). ResNet-20, ResNet-56 and VGG-16, each as its paper
   table resolves it (experiments/table-cifar-*.yaml, profile paper: the `dense` run and the
   `grow-50` run), train
     dense            the model without gates
     masked           growing, closed channels computed and multiplied by zero
     restructured-K   growing, only the sampled sub-network computed, a new one every K = 1, 8, 64
   in fp32 NCHW and with bf16 autocast + channels-last (train.amp, train.channels_last). Growing
   runs start from gates opened to the run's budget (expected MACs = budget.target), where a
   growing run spends most of its epochs. Each configuration trains `warmup` steps, then
   `steps` timed steps (the device synchronised before and after), then the epoch's end
   (BN recalibration, validation on the 10,000 test images), timed too. An epoch's time is
   extrapolated: steps per epoch × time per step + the epoch's end.
2. ImageNet-sized throughput: ResNet-50 and MobileNetV1 at 224 px, batch 256, as their tables
   resolve them (bf16, channels-last), on random batches already on the device (no input
   pipeline): images/s dense, growing masked and growing restructured at budget 0.5.
3. Sharing: 1, 2 and 4 processes training ResNet-20 `grow-50` (paper) at once on the device,
   timed over one window: images/s of each and in total.
4. The GPU-hours of every paper-profile figure and table from the rows above (gpu_estimate.py).

Every step is the training loop's own (train.run_epochs → train_step, on train.build's state).
No MLflow, no Optuna: the machine measured needs neither. `--quick`: every size shrunk, on a CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import multiprocessing
import os
import pickle
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))             # the checkout this script is in

import numpy as np  # noqa: E402
import torch  # noqa: E402

from reproduce import contract  # noqa: E402
from reproduce.config import RunConfig  # noqa: E402
from reproduce.data import DataBundle, build_data, num_batches  # noqa: E402
from reproduce.experiments import plan  # noqa: E402
from reproduce.tasks import task_for  # noqa: E402
from reproduce.train import Phase, build, device_label, pick_device, run_epochs  # noqa: E402

from gpu_estimate import PROFILE, estimate  # noqa: E402  (bench/, beside this file)

CIFAR_MODELS = ("resnet20", "resnet56", "vgg16")
IMAGENET_MODELS = {"resnet50": "table-imagenet-resnet50",
                   "mobilenet_v1": "table-imagenet-mobilenet"}
RESAMPLE = (1, 8, 64)
PRECISIONS = {"fp32": (False, False), "bf16-cl": (True, True)}   # name: (train.amp, channels_last)
SHARING = (1, 2, 4)
CIFAR10_TRAIN, CIFAR10_TEST = 50_000, 10_000


# -- data ---------------------------------------------------------------------------------------

def write_cifar10(folder: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Random images in CIFAR-10's python format (five data batches and a test batch)."""
    out = folder / "cifar-10-batches-py"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sizes = [n_train // 5 + (i < n_train % 5) for i in range(5)]
    files = [(f"data_batch_{i + 1}", s) for i, s in enumerate(sizes)] + [("test_batch", n_test)]
    for name, n in files:
        batch = {"batch_label": name, "labels": rng.integers(0, 10, n).tolist(),
                 "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "filenames": [f"{name}_{i}.png" for i in range(n)]}
        with open(out / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return folder


class Repeat:
    """`n` batches of the same device-resident tensors: an input pipeline that costs nothing."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, n: int):
        self.x, self.y, self.n = x, y, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for _ in range(self.n):
            yield self.x, self.y


class Clock:
    """A training stream that times its own consumer: after `warmup` batches it synchronises
    the device and starts the clock, after `steps` batches (or `seconds`) it synchronises and
    stops, and the epoch ends. The batch after the last timed one is never requested, so the
    window holds exactly the timed steps. Iterated again (BN recalibration) it is the inner
    stream. `len` is the inner stream's (the LR schedule sees a whole epoch)."""

    def __init__(self, inner, device: torch.device, warmup: int, steps: int | None = None,
                 seconds: float | None = None, on_ready=None):
        self.inner, self.device = inner, device
        self.warmup, self.steps, self.seconds, self.on_ready = warmup, steps, seconds, on_ready
        self.timed_steps, self.elapsed, self.stopped, self.done = 0, 0.0, 0.0, False

    @property
    def epoch(self) -> int:
        return getattr(self.inner, "epoch", 0)

    @epoch.setter
    def epoch(self, value: int) -> None:
        if hasattr(self.inner, "epoch"):
            self.inner.epoch = value

    def __len__(self) -> int:
        return len(self.inner)

    def _batches(self):
        while True:
            empty = True
            for batch in self.inner:
                empty = False
                yield batch
            if empty:
                raise ValueError("empty training stream")

    def __iter__(self):
        if self.done:
            yield from self.inner
            return
        batches = self._batches()
        for _ in range(self.warmup):
            yield next(batches)
        sync(self.device)
        if self.on_ready is not None:
            self.on_ready()
        start = time.perf_counter()
        n = 0
        while (self.steps is None or n < self.steps) and \
                (self.seconds is None or time.perf_counter() - start < self.seconds):
            yield next(batches)
            n += 1
        sync(self.device)
        self.stopped = time.perf_counter()
        self.elapsed, self.timed_steps, self.done = self.stopped - start, n, True


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- one timed configuration --------------------------------------------------------------------

def paper_run(experiment: str, variant: str, overrides: dict) -> RunConfig:
    """The run `variant` of an experiment file as the paper profile resolves it (first seed)."""
    return plan(experiment, PROFILE, overrides, only=[variant])[0].cfg


def open_to_budget(controller, target: float) -> float:
    """Set the gate logits so the expected MACs are `target` of dense (a spread of logits shifted
    by one offset, found by bisection); returns the expected usage reached."""
    gates = controller.gates
    if not gates:
        return 1.0
    gen = torch.Generator().manual_seed(0)
    spread = [torch.rand(g.n, generator=gen) * 2 - 1 for g in gates]
    costs = controller.costs

    def usage(shift: float) -> float:
        with torch.no_grad():
            for g, u in zip(gates, spread):
                g.logits.copy_((u + shift).to(g.logits))
            return float(costs.count(costs.prob_state())[0]) / costs.dense_macs

    lo, hi = -20.0, 20.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if usage(mid) < target else (lo, mid)
    reached = usage((lo + hi) / 2)
    controller.budget.update(controller.current_usage())
    return reached


def time_training(cfg: RunConfig, data: DataBundle, device: torch.device, warmup: int,
                  steps: int | None = None, seconds: float | None = None,
                  on_ready=None) -> dict:
    """Train one epoch of `cfg` through train.run_epochs on `data`, timing `steps` steps (or
    `seconds`) after `warmup`, then the epoch's end (BN recalibration, validation)."""
    state = build(cfg, data, device)
    usage = None
    if cfg.method == "grow":
        usage = open_to_budget(state.controller, cfg.budget.target)
    # a phase of one epoch: the controller keeps the run's schedule (built from cfg.train.epochs)
    phase = Phase(dataclasses.replace(cfg.train, epochs=1), mask_lr=cfg.gates.mask_lr,
                  mask_momentum=cfg.gates.mask_momentum,
                  recalibrate_bn=cfg.gates.bn_recalibrate if cfg.method == "grow" else 0)
    clock = Clock(data.train, device, warmup, steps, seconds, on_ready)
    timed = DataBundle(clock, data.val, data.num_classes, data.in_channels, data.image_size,
                       data.num_train, data.num_val, data.name)
    run_epochs(state, phase, timed, task_for(cfg, data), device, progress=False)
    sync(device)
    tail = time.perf_counter() - clock.stopped
    step_s = clock.elapsed / max(1, clock.timed_steps)
    batch = cfg.data.batch_size
    out = {"batch": batch, "warmup_steps": warmup, "timed_steps": clock.timed_steps,
           "timed_s": clock.elapsed, "step_s": step_s, "images_per_s": batch / step_s,
           "epoch_end_s": tail, "expected_usage": usage,
           "hard_usage": state.history[-1].get(contract.USAGE) if state.history else None}
    del state
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def mode_overrides(mode: str, precision: str) -> tuple[str, dict]:
    """(variant, overrides) of a timed configuration."""
    amp, cl = PRECISIONS[precision]
    train = {"amp": amp, "channels_last": cl}
    if mode == "dense":
        return "dense", {"train": train}
    if mode == "masked":
        return "grow-50", {"train": {**train, "execution": "masked"}}
    k = int(mode.rsplit("-", 1)[1])
    return "grow-50", {"train": {**train, "execution": "restructured"},
                       "gates": {"resample_every": k}}


def merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def cifar_rows(args, device, root: Path, log) -> list[dict]:
    base = {"data": {"root": str(root), "download": False, **args.cifar_data},
            "model": args.model, "train": {"threads": args.threads}}
    modes = ["dense", "masked"] + [f"restructured-{k}" for k in RESAMPLE]
    bundle = None
    rows = []
    for model in CIFAR_MODELS:
        experiment = f"table-cifar-{model}"
        for precision in PRECISIONS:
            for mode in modes:
                variant, extra = mode_overrides(mode, precision)
                cfg = paper_run(experiment, variant, merge(base, extra))
                if bundle is None:          # read once through the suite's CIFAR loader
                    t0 = time.perf_counter()
                    bundle = build_data(cfg.data, device, seed=cfg.seed)
                    log(f"CIFAR-format data read by the loader: {bundle.num_train} train / "
                        f"{bundle.num_val} val images in {time.perf_counter() - t0:.1f} s")
                r = time_training(cfg, bundle, device, args.warmup, args.steps)
                per_epoch = num_batches(CIFAR10_TRAIN, cfg.data.batch_size, drop_small=True)
                r.update(model=model, mode=mode, variant=variant, precision=precision,
                         execution=cfg.train.execution if cfg.method == "grow" else "-",
                         resample_every=cfg.gates.resample_every if cfg.method == "grow" else None,
                         amp=cfg.train.amp, channels_last=cfg.train.channels_last,
                         steps_per_epoch=per_epoch,
                         epoch_s=r["step_s"] * per_epoch + r["epoch_end_s"])
                rows.append(r)
                log(f"  {model} {precision} {mode}: {1e3 * r['step_s']:.1f} ms/step, "
                    f"epoch ≈ {r['epoch_s']:.1f} s")
    for r in rows:
        dense = next(d for d in rows if d["model"] == r["model"] and
                     d["precision"] == r["precision"] and d["mode"] == "dense")
        r["vs_dense"] = r["epoch_s"] / dense["epoch_s"]
    return rows


def imagenet_rows(args, device, log) -> list[dict]:
    rows = []
    size, batch = args.imagenet_size, args.imagenet_batch
    for model, experiment in IMAGENET_MODELS.items():
        for mode, variant, execution in (("dense", "dense", None), ("masked", "grow-50", "masked"),
                                         ("restructured-1", "grow-50", "restructured")):
            overrides = {"data": {"image_size": size, "batch_size": batch},
                         "model": args.model, "train": {"threads": args.threads}}
            if execution:
                overrides["train"]["execution"] = execution
                overrides["gates"] = {"resample_every": 1}
            cfg = paper_run(experiment, variant, overrides)
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(batch, 3, size, size, generator=gen).to(device)
            y = torch.randint(0, 1000, (batch,), generator=gen).to(device)
            n = args.imagenet_warmup + args.imagenet_steps
            data = DataBundle(Repeat(x, y, max(n, 1)), Repeat(x, y, 1), 1000, 3, size,
                              batch * n, batch, cfg.data.dataset)
            r = time_training(cfg, data, device, args.imagenet_warmup, args.imagenet_steps)
            r.update(model=model, mode=mode, variant=variant, image_size=size,
                     precision="bf16-cl" if cfg.train.amp else "fp32",
                     execution=cfg.train.execution if cfg.method == "grow" else "-",
                     resample_every=cfg.gates.resample_every if cfg.method == "grow" else None,
                     amp=cfg.train.amp, channels_last=cfg.train.channels_last,
                     budget=cfg.budget.target if cfg.method == "grow" else None)
            del r["epoch_end_s"]            # one repeated batch: nothing to validate
            rows.append(r)
            log(f"  {model} {mode}: {r['images_per_s']:.0f} images/s")
            del x, y, data
    for r in rows:
        dense = next(d for d in rows if d["model"] == r["model"] and d["mode"] == "dense")
        r["vs_dense"] = dense["images_per_s"] / r["images_per_s"]     # time per image ÷ dense
    return rows


# -- sharing one device -------------------------------------------------------------------------

def worker(spec_path: str) -> None:
    """One of several processes training at once (started by `sharing_rows`)."""
    spec = json.loads(Path(spec_path).read_text())
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    cfg = paper_run(spec["experiment"], spec["variant"], spec["overrides"])
    data = build_data(cfg.data, device, seed=cfg.seed)

    def ready() -> None:                   # every process warmed up: start the window together
        Path(spec["ready"]).touch()
        deadline = time.time() + 300
        while not os.path.exists(spec["go"]):
            if time.time() > deadline:
                raise TimeoutError("the other processes never became ready")
            time.sleep(0.005)

    r = time_training(cfg, data, device, spec["warmup"], seconds=spec["seconds"], on_ready=ready)
    Path(spec["out"]).write_text(json.dumps(r))


def sharing_rows(args, device, root: Path, log) -> list[dict]:
    experiment, variant = "table-cifar-resnet20", "grow-50"
    overrides = {"data": {"root": str(root), "download": False, **args.cifar_data},
                 "model": args.model, "train": {"threads": args.threads}}
    cfg = paper_run(experiment, variant, overrides)
    # a CUDA context does not survive fork: on a GPU each process starts afresh (spawn); on a CPU
    # forked processes skip importing torch again
    context = multiprocessing.get_context("fork" if device.type == "cpu" else "spawn")
    rows = []
    for k in SHARING:
        folder = Path(tempfile.mkdtemp(prefix=f"share{k}-", dir=root))
        go = folder / "go"
        procs, outs, readies = [], [], []
        for i in range(k):
            spec = {"experiment": experiment, "variant": variant, "overrides": overrides,
                    "device": str(device), "threads": args.threads, "warmup": args.share_warmup,
                    "seconds": args.share_seconds, "ready": str(folder / f"ready{i}"),
                    "go": str(go), "out": str(folder / f"out{i}.json")}
            path = folder / f"spec{i}.json"
            path.write_text(json.dumps(spec))
            procs.append(context.Process(target=worker, args=(str(path),)))
            procs[-1].start()
            outs.append(Path(spec["out"]))
            readies.append(Path(spec["ready"]))
        deadline = time.time() + 300
        while not all(p.exists() for p in readies):
            if any(p.exitcode not in (None, 0) for p in procs) or time.time() > deadline:
                for p in procs:
                    p.kill()
                raise RuntimeError(f"sharing with {k} processes: a process failed to start")
            time.sleep(0.01)
        go.touch()
        for p in procs:
            p.join()
        codes = [p.exitcode for p in procs]
        if any(codes):
            raise RuntimeError(f"sharing with {k} processes: exit codes {codes}")
        each = [json.loads(o.read_text()) for o in outs]
        per_epoch = num_batches(CIFAR10_TRAIN, cfg.data.batch_size, drop_small=True)
        rates = [r["images_per_s"] for r in each]
        rows.append({"runs": k, "model": cfg.model.name, "variant": variant,
                     "execution": cfg.train.execution, "resample_every": cfg.gates.resample_every,
                     "precision": "bf16-cl" if cfg.train.amp else "fp32",
                     "batch": cfg.data.batch_size, "window_s": args.share_seconds,
                     "timed_steps": [r["timed_steps"] for r in each],
                     "images_per_s_each": rates, "images_per_s": sum(rates),
                     "step_s": sum(r["step_s"] for r in each) / k,
                     "epoch_s_each": sum(r["step_s"] * per_epoch + r["epoch_end_s"]
                                         for r in each) / k})
        log(f"  {k} process(es): {sum(rates):.0f} images/s in total")
    for r in rows:
        r["speedup"] = r["images_per_s"] / rows[0]["images_per_s"]
    return rows


# -- report -------------------------------------------------------------------------------------

def table(result: dict) -> str:
    q = result["settings"]
    lines = [f"gpu-check on {result['device']} (torch {result['torch']}"
             f"{', QUICK: sizes shrunk, numbers meaningless' if result['quick'] else ''}); "
             f"CIFAR epochs extrapolated from {q['steps']} timed steps after {q['warmup']} "
             f"warm-up steps + the timed epoch end (BN recalibration, validation on "
             f"{q['cifar_val']} images); {q['cifar_train']} generated train images read by the "
             f"CIFAR loader",
             "",
             "| part | model | execution | precision | batch | ms/step | images/s | epoch (s) or "
             "GPU-hours | × dense |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["cifar"]:
        lines.append(f"| CIFAR epoch (extrapolated) | {r['model']} | {r['mode']} | "
                     f"{r['precision']} | {r['batch']} | {1e3 * r['step_s']:.1f} | "
                     f"{r['images_per_s']:.0f} | {r['epoch_s']:.1f} s | {r['vs_dense']:.2f} |")
    for r in result["imagenet"]:
        lines.append(f"| {r['image_size']} px throughput | {r['model']} | {r['mode']} | "
                     f"{r['precision']} | {r['batch']} | {1e3 * r['step_s']:.1f} | "
                     f"{r['images_per_s']:.0f} | — | {r['vs_dense']:.2f} |")
    for r in result["sharing"]:
        lines.append(f"| {r['runs']} run(s) sharing the device | {r['model']} {r['variant']} | "
                     f"{r['execution']} | {r['precision']} | {r['batch']} | "
                     f"{1e3 * r['step_s']:.1f} | "
                     f"{r['images_per_s']:.0f} (×{r['speedup']:.2f}) | "
                     f"{r['epoch_s_each']:.1f} s each | — |")
    est = result["estimate"]
    for name, t in est["targets"].items():
        lines.append(f"| GPU-hours ({est['profile']}) | {name} | {t['runs']} runs | "
                     f"— | — | — | — | {t['gpu_hours']:.1f} h | — |")
    lines.append(f"| GPU-hours ({est['profile']}) | all targets | {est['distinct_runs']} distinct "
                 f"runs | — | — | — | — | {est['total_gpu_hours']:.1f} h | — |")
    return "\n".join(lines)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", help="JSON path (the table is written beside it as .md); default "
                                  "bench/results/gpu-check-<device>.json")
    ap.add_argument("--quick", action="store_true", help="tiny sizes and few steps (CPU, seconds)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--warmup", type=int, help="untimed steps per configuration (default 8)")
    ap.add_argument("--steps", type=int,
                    help="timed steps per CIFAR configuration (default 128: two periods of 64)")
    ap.add_argument("--share-seconds", type=float, help="timed window of the sharing rows")
    args = ap.parse_args()
    quick = args.quick
    args.warmup = args.warmup if args.warmup is not None else (1 if quick else 8)
    args.steps = args.steps if args.steps is not None else (2 if quick else 128)
    args.share_seconds = args.share_seconds or (0.3 if quick else 10.0)
    args.threads = 1 if quick else 0
    args.cifar_data = {"batch_size": 4, "eval_batch_size": 16} if quick else {}
    args.model = {"width_multiplier": 0.25} if quick else {}
    args.imagenet_size, args.imagenet_batch = (32, 2) if quick else (224, 256)
    args.imagenet_warmup, args.imagenet_steps = (1, 1) if quick else (5, 15)
    args.share_warmup = 1 if quick else args.warmup
    n_train, n_test = (40, 16) if quick else (CIFAR10_TRAIN, CIFAR10_TEST)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    label = device_label(device)
    out = Path(args.out) if args.out else \
        ROOT / "bench" / "results" / f"gpu-check-{slug(label)}.json"
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {msg}", file=sys.stderr, flush=True)

    log(f"device {label}")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        root = write_cifar10(Path(tmp), n_train, n_test)
        log("CIFAR epoch time")
        cifar = cifar_rows(args, device, root, log)
        log("ImageNet-sized throughput")
        imagenet = imagenet_rows(args, device, log)
        log("runs sharing the device")
        sharing = sharing_rows(args, device, root, log)
    log("GPU-hours of the paper targets")
    est = estimate(cifar, imagenet, log)
    result = {"schema": 1, "device": label, "device_type": device.type, "torch": torch.__version__,
              "python": platform.python_version(), "quick": quick,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "settings": {"warmup": args.warmup, "steps": args.steps,
                           "share_seconds": args.share_seconds, "cifar_train": n_train,
                           "cifar_val": n_test, "epoch_images": CIFAR10_TRAIN,
                           "imagenet_size": args.imagenet_size,
                           "imagenet_batch": args.imagenet_batch,
                           "imagenet_steps": args.imagenet_steps},
              "cifar": cifar, "imagenet": imagenet, "sharing": sharing, "estimate": est,
              "imported": sorted({m.split(".")[0] for m in sys.modules} & {"mlflow", "optuna"})}
    result["wall_s"] = time.perf_counter() - started
    text = table(result)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(text + "\n")
    log(f"wrote {out} and {out.with_suffix('.md')} ({result['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
