"""End to end: experiment file → training → MLflow → figure, on synthetic data in tmp_path."""

from __future__ import annotations

import json
import os

import pytest
import torch

from reproduce import tracking
from reproduce.config import ConfigError
from reproduce.experiments import plan
from reproduce.runner import run_experiment


def runs_of(profile: str = "smoke"):
    c = tracking.client()
    exp_id = tracking.experiment_id(c, profile, create=False)
    return c, (c.search_runs([exp_id]) if exp_id else [])


@pytest.mark.slow
def test_run_track_reuse_and_draw(tiny, tmp_path):
    from reproduce.pipeline import make as draw

    epochs = tiny["train"]["epochs"]
    outputs = draw("figure-7", profile="smoke", overrides=tiny, progress=False)
    c, runs = runs_of()
    assert len(runs) == 1
    run = runs[0]
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"

    # tags and params of the contract
    tags = run.data.tags
    for key in tracking.TAGS:
        assert key in tags, key
    assert tags["model"] == "resnet20" and tags["dataset"] == "synthetic"
    assert set(tags["figures"].split(",")) == {"figure-7", "figure-9"}
    assert tags["config_hash"] == plan("figure-7", "smoke", tiny)[0].hash
    assert run.data.params["budget.target"] == "0.5"
    # found under one name (variant-seed first, then model and experiment), described by its experiment file,
    # in an experiment that MLflow's UI opens on the runs table
    assert run.info.run_name == "grow-s0 · resnet20 · figure-7"
    assert tags["mlflow.note.content"].startswith("ResNet-20 channel growing")
    exp = c.get_experiment(run.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"

    # per-epoch metrics: step 0 is the seed, steps 1..E follow each epoch
    hist = c.get_metric_history(run_id, "channels/stage1")
    assert [m.step for m in hist] == list(range(epochs + 1))
    assert hist[0].value == pytest.approx(0.25)                 # the 25 % seed
    acc = c.get_metric_history(run_id, "val/acc")
    assert [m.step for m in acc] == list(range(1, epochs + 1))
    keys = set(run.data.metrics)
    for key in ("val/top5", "val/loss", "cost/macs", "cost/params", "cost/train_macs", "cost/train_macs_total",
                "budget/lambda", "budget/usage", "lr", "train/loss",
                "channels/layer1.0.conv1", "temperature/global"):
        assert key in keys, key
    # only series that change: one temperature under the global schedule, and what cannot change
    # (the dense model's costs, the depth of stages without block gates) once, as params
    assert not [k for k in keys if k.startswith("temperature/") and k != "temperature/global"]
    assert not [k for k in keys if k.startswith("blocks/") or k.startswith("cost/dense_m")
                or k == "cost/dense_params"]
    assert float(run.data.params["blocks/stage2"]) == 3
    assert float(run.data.params["cost/dense_macs"]) > run.data.metrics["cost/macs"]
    assert float(run.data.params["cost/dense_params"]) > 0
    total = sum(m.value for m in c.get_metric_history(run_id, "cost/train_macs"))
    assert run.data.metrics["cost/train_macs_total"] == pytest.approx(total, rel=1e-9)
    beta = c.get_metric_history(run_id, "temperature/global")
    t = plan("figure-7", "smoke", tiny)[0].cfg.temperature
    assert [m.step for m in beta] == list(range(epochs + 1))
    assert beta[0].value == pytest.approx(t.beta_0) and beta[-1].value == pytest.approx(t.beta_final)
    # the readers see the constants as the run's final metrics
    from reproduce.store import Store
    frame = Store().runs("smoke")
    assert frame.loc[0, "cost/dense_macs"] == float(run.data.params["cost/dense_macs"])
    assert frame.loc[0, "blocks/stage2"] == 3

    # the run's own Figure 7 panel, and a README whose Python lines load and run its model
    from PIL import Image
    with Image.open(c.download_artifacts(run_id, "channel_dynamics.png")) as img:
        assert img.size[0] > 200 and img.size[1] > 100
    assert not [a.path for a in c.list_artifacts(run_id) if a.path.endswith(".pdf")]
    readme = open(c.download_artifacts(run_id, "README.md")).read()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert f'run_id="{run_id}"' in code and "load_compact" in code
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code + "\nprint(tuple(out.shape))"], cwd=root,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "(1, 4)"     # 4 classes of the tiny data

    # artifacts: resolved config, architecture, traces, a compact model that reproduces val/acc
    arch = json.loads(open(c.download_artifacts(run_id, tracking.ARTIFACT_ARCH)).read())
    assert arch["macs"] == pytest.approx(run.data.metrics["cost/macs"])
    import pandas as pd
    traces = pd.read_csv(c.download_artifacts(run_id, tracking.ARTIFACT_TRACES))
    assert sorted(traces["epoch"].unique()) == list(range(epochs + 1))
    assert (traces.groupby("epoch")["gate"].count().nunique()) == 1   # every structure, every epoch

    from reproduce.data import build_data
    from reproduce.checkpoint import load_compact
    from reproduce.tasks import task_for
    from reproduce.train import evaluate
    cfg = plan("figure-7", "smoke", tiny)[0].cfg
    compact = load_compact(c.download_artifacts(run_id, tracking.ARTIFACT_MODEL))
    data = build_data(cfg.data, "cpu", seed=cfg.seed)
    acc_compact = evaluate(compact, data.val, task_for(cfg, data))["val/acc"]
    assert acc_compact == pytest.approx(run.data.metrics["val/acc"], abs=1e-6)

    # the figure and its sidecar name exactly this run
    assert {p.suffix for p in outputs} >= {".png", ".pdf", ".json"}
    for p in outputs:
        assert p.exists() and p.stat().st_size > 0
        assert str(p).startswith(os.environ["FIGURES_DIR"])
    sidecar = json.loads(next(p for p in outputs if p.suffix == ".json").read_text())
    assert [r["run_id"] for r in sidecar["runs"]] == [run_id]

    # same config again: reused, not retrained; forced: a new run
    again = run_experiment("figure-7", "smoke", overrides=tiny, progress=False)
    assert again[0]["reused"] and again[0]["run_id"] == run_id
    assert len(runs_of()[1]) == 1
    forced = run_experiment("figure-7", "smoke", overrides=tiny, force=True, progress=False)
    assert not forced[0]["reused"] and forced[0]["run_id"] != run_id
    assert len(runs_of()[1]) == 2


def test_failed_and_interrupted_runs_are_marked(tiny, monkeypatch):
    from reproduce import runner
    grow = runner.TRAINERS["grow"]

    def exploding(cfg, data, device, task, on_epoch=None, progress=True, **_):
        raise FloatingPointError("loss is nan")

    monkeypatch.setitem(runner.TRAINERS, "grow", exploding)
    with pytest.raises(FloatingPointError):
        run_experiment("figure-7", "smoke", overrides=tiny, progress=False)
    c, runs = runs_of()
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "loss is nan" in runs[0].data.tags["failure_reason"]

    def interrupted(cfg, data, device, task, on_epoch=None, progress=True, **_):
        raise KeyboardInterrupt

    monkeypatch.setitem(runner.TRAINERS, "grow", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_experiment("figure-7", "smoke", overrides=tiny, progress=False)
    statuses = sorted(r.info.status for r in runs_of()[1])
    assert statuses == ["FAILED", "KILLED"]
    # neither counts as finished: the next call trains again instead of reusing
    # (the trainer restored alone: undo() would also restore the environment, and with it the
    # user's tracking store)
    monkeypatch.setitem(runner.TRAINERS, "grow", grow)
    c, _ = runs_of()
    assert tracking.find_finished(c, tracking.experiment_id(c, "smoke"),
                                  plan("figure-7", "smoke", tiny)[0].hash) is None


def test_bad_experiment_fails_before_anything_is_tracked(tiny):
    with pytest.raises(ConfigError, match="budget.targte"):
        run_experiment("figure-7", "smoke", overrides={**tiny, "budget": {"targte": 0.2}})
    c = tracking.client()
    assert tracking.experiment_id(c, "smoke", create=False) is None


def test_unreachable_store_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/missing/dir/mlflow.db")
    with pytest.raises(tracking.StoreError, match="MLFLOW_TRACKING_URI"):
        tracking.client()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(tracking.StoreError, match="127.0.0.1:9"):
        tracking.client()


def test_cli_reports_missing_dataset(tmp_path, capsys):
    from reproduce.cli import main

    code = main(["run", "figure-7", "--quiet", "--set", "data.dataset=cifar10",
                 "--set", f"data.root={tmp_path}/nowhere"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{tmp_path}/nowhere" in err and "make data-cifar10" in err
    # nothing half-finished is left behind as a running run
    _, runs = runs_of()
    assert all(r.info.status != "RUNNING" for r in runs)


def test_cli_flops_json_matches_flop_counter(capsys):
    from torch.utils.flop_counter import FlopCounterMode

    from reproduce.cli import main
    from reproduce.models import create_model

    name = "resnet56"
    assert main(["flops", "--model", name, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    model = create_model(name, gate_channels=False).eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, 32, 32))
    assert info["macs"] == counter.get_total_flops() // 2
    assert info["params"] == sum(p.numel() for n, p in model.named_parameters()
                                 if "bn" not in n and "shortcut.1" not in n)


def test_cli_flops_defaults_to_the_models_own_input_size(capsys):
    """An ImageNet model is counted at its 224 px unless --input says otherwise."""
    from reproduce.cli import main

    assert main(["flops", "--model", "mobilenet_v1", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["input"] == [3, 224, 224] and round(info["macs"] / 1e6) == 569    # Howard et al.
    assert main(["flops", "--model", "mobilenet_v1", "--input", "3,32,32", "--json"]) == 0
    small = json.loads(capsys.readouterr().out)
    assert small["input"] == [3, 32, 32] and small["macs"] < info["macs"] / 40


def test_cli_list_runs_shows_each_runs_own_main_metric(capsys, monkeypatch):
    """Runs of every task (one added here), tracked with their task's main metric: each line
    shows that metric."""
    from reproduce.cli import main
    from reproduce.tasks import TASKS, Task

    monkeypatch.setitem(TASKS, "detection", type("Detection", (Task,), {"main_metric": "val/map"}))
    c = tracking.client()
    exp_id = tracking.experiment_id(c, "smoke")
    shown = {}
    for i, task in enumerate(TASKS.values()):
        value = float(torch.rand(()) * 90 + 1)
        run = c.create_run(exp_id, tags={"model": f"model{i}", "variant": "v", "seed": "0"})
        c.log_metric(run.info.run_id, task.main_metric, value)
        c.log_metric(run.info.run_id, "train/loss", 123.0)      # not a main metric
        shown[run.info.run_id] = f"{task.main_metric.split('/')[1]} {value:6.2f}"
    assert main(["list", "runs", "--profile", "smoke"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for run_id, text in shown.items():
        assert text in next(line for line in lines if line.startswith(run_id))


def test_figures_draw_from_a_store_at_a_non_default_uri(tiny, tmp_path, monkeypatch):
    """A store copied elsewhere: drawing from it by URI finds its runs, not the default store's."""
    from reproduce.pipeline import make

    other = f"sqlite:///{tmp_path}/elsewhere/mlflow.db"
    (tmp_path / "elsewhere").mkdir()
    summaries = run_experiment("figure-7", "smoke", overrides=tiny, progress=False, uri=other)
    default_c = tracking.client()
    assert tracking.experiment_id(default_c, "smoke", create=False) is None   # nothing here
    outputs = make("figure-7", profile="smoke", overrides=tiny, run_missing=False, uri=other)
    sidecar = json.loads(next(p for p in outputs if p.suffix == ".json").read_text())
    assert [r["run_id"] for r in sidecar["runs"]] == [summaries[0]["run_id"]]
    with pytest.raises(ConfigError, match="no finished runs"):   # the default store has none
        make("figure-7", profile="smoke", overrides=tiny, run_missing=False)


def test_pruning_runs_share_their_pretraining_and_keep_its_numbers(tiny, tmp_path):
    """l1-60 and l1-30 of one seed pre-train once: the second run loads the first's pre-trained
    network, reports its pre-training epochs as its own, names where they come from, and ends
    with the numbers of a run that pre-trained alone; the shared file goes once both finished."""
    import yaml
    from reproduce.runner import execute

    (tmp_path / "profiles.yaml").write_text(yaml.safe_dump({"tiny": {"seeds": [0],
                                                                     "config": tiny}}))
    prune = {"method": "prune", "baseline": {"pretrain_epochs": 2, "finetune_epochs": 1}}
    path = tmp_path / "prune-pair.yaml"
    path.write_text(yaml.safe_dump({"name": "prune-pair", "figures": [],
                                    "base": {"model": {"name": "resnet20"}, **prune}, "runs": [
        {"variant": "l1-60", "config": {"baseline": {"prune_target": 0.6}}},
        {"variant": "dense", "config": {"method": "dense"}},
        {"variant": "l1-30", "config": {"baseline": {"prune_target": 0.3}}}]}))
    summaries = run_experiment(str(path), "tiny", progress=False)
    c = tracking.client()
    first, _, second = (c.get_run(s["run_id"]) for s in summaries)
    assert "pretrained_in" not in first.data.tags
    assert second.data.tags["pretrained_in"] == first.info.run_id
    phases = c.get_metric_history(second.info.run_id, "phase")
    assert [(m.step, m.value) for m in phases] == [(0, 0.0), (1, 0.0), (2, 0.0), (3, 1.0)]
    pre_first = c.get_metric_history(first.info.run_id, "val/acc")[:2]
    pre_second = c.get_metric_history(second.info.run_id, "val/acc")[:2]
    assert [m.value for m in pre_first] == [m.value for m in pre_second]
    alone = execute(plan(str(path), "tiny")[2].cfg, progress=False).final
    for key in ("val/acc", "val/loss", "cost/macs", "cost/train_macs_total"):
        assert second.data.metrics[key] == pytest.approx(alone[key], rel=1e-12), key
    assert not list((tracking.state_dir() / "pretrained").glob("*.pt"))

    # FORCE retrains from scratch: a pre-training left behind (here one that cannot load) is
    # not used, the forced runs pre-train again and share that
    from reproduce.checkpoint import SharedPretraining
    from reproduce.runner import pretraining_groups
    planned = plan(str(path), "tiny")
    (group,) = set(pretraining_groups(planned, c).values())
    assert group.hashes == {planned[0].hash, planned[2].hash}    # the two pruning runs, not dense
    SharedPretraining(tracking.state_dir() / "pretrained", group.name, "stale").save({"broken": True})
    forced = run_experiment(str(path), "tiny", force=True, progress=False)
    again = c.get_run(forced[2]["run_id"])
    assert again.data.tags["pretrained_in"] == forced[0]["run_id"]
    assert again.data.metrics["val/acc"] == second.data.metrics["val/acc"]


def test_shared_pretraining_lock_tells_other_processes_it_is_busy(tmp_path):
    from reproduce.checkpoint import SharedPretraining

    holder = SharedPretraining(tmp_path, "key", "run-a")
    other = SharedPretraining(tmp_path, "key", "run-b")
    assert not other.busy()
    holder.lock()
    assert other.busy() and not SharedPretraining(tmp_path, "another", "run-b").busy()
    holder.save({"epoch": 2})                   # saving hands the pre-training over
    assert not other.busy()
    seen = []
    other.on_load = seen.append
    assert other.load() == {"epoch": 2} and seen == ["run-a"]
    other.delete()
    assert other.load() is None


def test_epoch_times_wall_and_cpu():
    """Every epoch records its wall clock and, on CPU, the process's CPU time, each with its
    running total over the run's epochs."""
    import time

    from reproduce import contract
    from reproduce.train import epoch_times

    cpu = torch.device("cpu")
    start, cpu_start = time.perf_counter(), time.process_time()
    while time.process_time() - cpu_start < 0.02:       # some work of this process's own
        sum(range(1000))
    first = epoch_times(cpu, start, cpu_start, [])
    assert first[contract.EPOCH_TIME] > 0 and first[contract.EPOCH_CPU_TIME] >= 0.02
    assert first[contract.TRAIN_TIME_TOTAL] == first[contract.EPOCH_TIME]
    assert first[contract.TRAIN_CPU_TIME_TOTAL] == first[contract.EPOCH_CPU_TIME]
    second = epoch_times(cpu, time.perf_counter(), time.process_time(), [first])
    assert second[contract.TRAIN_CPU_TIME_TOTAL] == pytest.approx(
        first[contract.EPOCH_CPU_TIME] + second[contract.EPOCH_CPU_TIME])
    assert second[contract.TRAIN_TIME_TOTAL] == pytest.approx(
        first[contract.EPOCH_TIME] + second[contract.EPOCH_TIME])
