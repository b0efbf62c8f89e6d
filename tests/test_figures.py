"""Figures 1, 4, 6, 8, 10-14 and the figures index, drawn from small tracked stores in tmp dirs.

Most tests replace SGD by a seeded random walk of the gate logits (`fake_train`): the real model,
growth controller, runner and MLflow logging produce the store (tags, params, per-epoch metrics,
architecture.json, per-structure traces), in a fraction of the time real training takes. These
tests share one store (as the figures share runs), so each run is made once. One slow test trains
for real in its own store. Each test checks the plotted data against the tracked values.
"""

from __future__ import annotations

import importlib
import json
import types

import numpy as np
import pandas as pd
import pytest
import torch

import analysis
from reproduce.pipeline import make
from analysis import style
from analysis.variants import si_scale
from reproduce import tracking
from reproduce.experiments import plan
from reproduce import runner
from reproduce.train import build


def fake_train(cfg, data, device, task, on_epoch=None, progress=True, **_):
    """The method's trainer without SGD: logits take seeded random steps every epoch."""
    shape = types.SimpleNamespace(num_classes=4, in_channels=1, image_size=8)
    result = build(cfg, shape, torch.device("cpu"))
    controller = result.controller
    gen = torch.Generator().manual_seed(cfg.seed + 7)
    on_epoch(0, controller.architecture_stats(), controller)
    for epoch in range(cfg.train.epochs):
        for _ in range(2):
            controller.sample()
            controller.after_step(16)
        with torch.no_grad():
            for g in controller.gates:
                g.logits.add_(0.4 * torch.randn(g.logits.shape, generator=gen))
        stats = {"val/acc": 40.0 + 10 * epoch + cfg.seed + 3 * cfg.budget.target,
                 "train/loss": 1.0 / (epoch + 1)}
        stats.update(controller.end_epoch())
        result.history.append(stats)
        on_epoch(epoch + 1, stats, controller)
    return result


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db"


@pytest.fixture
def fake(monkeypatch, shared_store):
    """Fake training into the module's shared store (figure outputs still go to tmp_path)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", shared_store)
    for method in runner.TRAINERS:
        monkeypatch.setitem(runner.TRAINERS, method, fake_train)


@pytest.fixture
def drawn(monkeypatch):
    """Figures handed to style.save, by output name (saved as usual)."""
    figures = {}
    save = style.save

    def capture(fig, stem, *args, **kwargs):
        figures[stem.name] = fig
        return save(fig, stem, *args, **kwargs)
    monkeypatch.setattr(style, "save", capture)
    return figures


def store_runs(name, overrides) -> pd.DataFrame:
    """The tracked runs (id and tags) whose config hashes the figure's experiment files plan."""
    module = importlib.import_module(analysis.targets()[name])
    hashes = {p.hash for e in module.EXPERIMENTS for p in plan(e, "smoke", overrides)}
    c = tracking.client()
    exp = tracking.experiment_id(c, "smoke", create=False)
    rows = [{"run_id": r.info.run_id, **r.data.tags} for r in c.search_runs([exp])
            if r.data.tags["config_hash"] in hashes]
    assert len(rows) == len(hashes)           # every planned run tracked, once
    return pd.DataFrame(rows)


def metric(run_id, key) -> pd.Series:
    """A tracked metric's values by step (step 0 = the seed before training)."""
    hist = tracking.client().get_metric_history(run_id, key)
    return pd.Series({m.step: m.value for m in hist}).sort_index()


def draw(name, tiny, **extra) -> pd.DataFrame:
    """Draw a figure (training what is missing); check its files; return the runs it planned."""
    overrides = {**tiny, **extra}
    paths = make(name, profile="smoke", overrides=overrides, progress=False)
    for suffix in (".png", ".pdf"):
        path = next(p for p in paths if p.suffix == suffix)
        assert path.stat().st_size > 1000, path
    sidecar = json.loads(next(p for p in paths if p.name.endswith(".runs.json")).read_text())
    runs = store_runs(name, overrides)
    assert {r["run_id"] for r in sidecar["runs"]} == set(runs["run_id"])
    return runs


def test_figure_4_and_14_plot_the_tracked_training_macs(fake, drawn, tiny):
    runs = draw("figure-4", tiny)
    assert sorted(runs["variant"]) == ["dense", "grow", "prune"]
    ax = drawn["figure-4"].axes[0]
    scale, _ = si_scale([metric(r, "cost/train_macs").max() for r in runs["run_id"]])
    by_variant = dict(zip(runs["variant"], runs["run_id"]))
    for prefix, variant in [("growing", "grow"), ("pruning from full", "prune"),
                            ("dense", "dense")]:
        line = next(li for li in ax.get_lines() if li.get_label().startswith(prefix + " ("))
        tracked = metric(by_variant[variant], "cost/train_macs").loc[1:]
        np.testing.assert_allclose(line.get_ydata() * scale, tracked, rtol=1e-9)
    dense = metric(by_variant["dense"], "cost/train_macs").loc[1:]
    assert np.allclose(dense, dense.iloc[0])                       # the flat dense line
    assert metric(by_variant["grow"], "cost/train_macs").loc[1:].max() < dense.iloc[0]

    runs4, runs = runs, draw("figure-14", tiny)
    assert len(runs) == 9 and set(runs4["run_id"]) <= set(runs["run_id"])   # figure-4's reused
    by_variant = dict(zip(runs["variant"], runs["run_id"]))
    left, right = drawn["figure-14"].axes[:2]
    flops = {li.get_label(): li.get_ydata() for li in left.get_lines()}
    scale, _ = si_scale([2 * metric(r, "cost/train_macs").max() for r in runs["run_id"]])
    np.testing.assert_allclose(flops["prune τ=0.3"] * scale,
                               2 * metric(by_variant["prune-macs0.3"], "cost/train_macs").loc[1:])
    schedules = {li.get_label() for li in right.get_lines()}
    assert schedules >= {"grow, global β", "grow, separate β", "grow, separate_decayed β", "dense"}


def test_figure_1_points_are_training_cost_and_accuracy(fake, drawn, tiny):
    runs = draw("figure-1", tiny)
    assert len(runs) == 7
    ax = drawn["figure-1"].axes[0]
    plotted = {c.get_label(): np.c_[c.lines[0].get_xdata(), c.lines[0].get_ydata()]
               for c in ax.containers}                  # one errorbar per family
    for family, variants in (("growing", ["grow-macs0.3", "grow", "grow-macs0.7"]),
                             ("pruning from full", ["prune-macs0.3", "prune", "prune-macs0.7"]),
                             ("dense", ["dense"])):
        ids = [runs.loc[runs["variant"] == v, "run_id"].iloc[0] for v in variants]
        expected = [[metric(i, "cost/train_macs_total").iloc[-1]
                     / metric(i, "cost/dense_train_macs_total").iloc[-1],
                     metric(i, "val/acc").iloc[-1]] for i in ids]
        np.testing.assert_allclose(plotted[family].astype(float), expected, rtol=1e-9)
    assert plotted["dense"][0, 0] == pytest.approx(1.0)


@pytest.mark.parametrize("name, metric_name", [
    ("figure-11", "macs"),
    pytest.param("figure-6", "params", marks=pytest.mark.slow),    # 13 more runs, same drawing
])
def test_figures_6_and_11_plot_the_final_widths(fake, drawn, tiny, name, metric_name):
    runs = draw(name, tiny)
    assert len(runs) == 13
    c = tracking.client()
    fig = drawn[name]
    panels = [ax for ax in fig.axes if ax.get_title(loc="left")]
    assert [ax.get_title(loc="left") for ax in panels] == \
        [f"{'MACs' if metric_name == 'macs' else 'params'} target τ = {t} of dense"
         for t in (0.3, 0.5, 0.7)]
    labels = {"": "ours", "-nosampling": "w/o sampling", "-separate": "separate β",
              "-separate_decayed": "separate_decayed β"}
    for ax, tau in zip(panels, (0.3, 0.5, 0.7)):
        lines = {li.get_label().split(":")[0]: li.get_ydata() for li in ax.get_lines()}
        assert len(lines) == 5
        for suffix, label in labels.items():
            run = runs[(runs["variant"].str.fullmatch(f"grow{suffix}(-{metric_name}{tau})?"))]
            if metric_name == "params" or tau != 0.5:
                run = run[run["variant"].str.endswith(f"{tau}")]
            assert len(run) == 1, (suffix, tau)
            arch = json.load(open(c.download_artifacts(run["run_id"].iloc[0], "architecture.json")))
            np.testing.assert_array_equal(lines[label], list(arch["widths"].values()))
        # the run without budget control is the same line in every panel
        nobudget = runs.loc[runs["variant"].str.startswith("grow-nobudget"), "run_id"].iloc[0]
        arch = json.load(open(c.download_artifacts(nobudget, "architecture.json")))
        np.testing.assert_array_equal(lines["w/o budget (fixed λ)"], list(arch["widths"].values()))


def test_figures_8_and_10_vgg16_channel_ratios(fake, drawn, tiny):
    runs = draw("figure-8", tiny, model={"width_multiplier": 0.25})
    assert draw("figure-10", tiny, model={"width_multiplier": 0.25}).equals(runs)
    assert len(runs) == 1
    run_id = runs["run_id"].iloc[0]
    stage_axes = drawn["figure-8"].axes[:5]
    assert [len(ax.get_lines()) for ax in stage_axes] == [2, 2, 3, 3, 3]      # VGG-16's stages
    conv5 = next(li for li in stage_axes[2].get_lines() if li.get_label() == "conv5")
    np.testing.assert_allclose(conv5.get_ydata(), metric(run_id, "channels/conv5"))
    lines = {li.get_label(): li.get_ydata() for li in drawn["figure-10"].axes[0].get_lines()}
    for k in range(1, 6):
        np.testing.assert_allclose(lines[f"stage {k}"], metric(run_id, f"channels/stage{k}"))


@pytest.mark.parametrize("name, schedule", [("figure-12", "separate"),
                                            ("figure-13", "separate_decayed")])
def test_figures_12_and_13_temperature_quantiles(fake, drawn, tiny, name, schedule):
    from reproduce.store import Store

    runs = draw(name, tiny)
    assert len(runs) == 1
    traces = Store().traces(runs["run_id"].iloc[0])
    fig = drawn[name]
    assert schedule in fig._suptitle.get_text()
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert len(panels) == traces["gate"].nunique() == 12        # ResNet-20: 9 inner + 3 streams
    last = traces[traces["epoch"] == traces["epoch"].max()]
    for ax, gate in zip(panels, dict.fromkeys(traces["gate"])):
        median = next(li for li in ax.get_lines() if li.get_label() == "median")
        expected = traces[traces["gate"] == gate].groupby("epoch")["beta"].median()
        np.testing.assert_allclose(median.get_ydata(), expected.to_numpy())
        assert f"({int(last.loc[last['gate'] == gate, 'active'].sum())}/" in ax.get_title()
    if schedule == "separate":            # β only rises (multiplied by γ while active)
        assert (traces.groupby(["gate", "index"])["beta"].diff().dropna() >= 0).all()


def test_index_lists_every_sidecar(tmp_path):
    from analysis.index import write_index

    out = tmp_path / "figures"
    out.mkdir(parents=True)
    sides = {"figure-4": ["a" * 32, "b" * 32], "table-cifar": ["c" * 32]}
    for name, ids in sides.items():
        (out / f"{name}.runs.json").write_text(json.dumps({
            "output": name, "profile": "smoke", "experiments": [name],
            "runs": [{"run_id": i, "experiment": name, "variant": "grow", "seed": 0,
                      "config_hash": "0" * 16} for i in ids], "drawn_at": "2025-01-01 00:00:00"}))
        (out / f"{name}.{'png' if name.startswith('figure') else 'md'}").write_text("x")
    (out / "broken.runs.json").write_text("{not json")
    text = write_index(out).read_text()
    for name, ids in sides.items():
        assert f"## {name}" in text
        for i in ids:
            assert f"`{i}`" in text
    assert "[figure-4.png](figure-4.png)" in text and "[table-cifar.md](table-cifar.md)" in text


@pytest.mark.slow
def test_figure_4_from_real_tiny_training(drawn, tiny):
    """Real SGD on synthetic data: the whole path from training to the drawn training cost."""
    runs = draw("figure-4", tiny)
    index = (analysis.figures_dir() / "INDEX.md").read_text()
    assert all(f"`{i}`" in index for i in runs["run_id"])
    by_variant = dict(zip(runs["variant"], runs["run_id"]))
    dense = metric(by_variant["dense"], "cost/train_macs").loc[1:]
    np.testing.assert_allclose(dense, dense.iloc[0])
    grow = metric(by_variant["grow"], "cost/train_macs").loc[1:]
    assert (grow < dense).all()       # the sampled architecture never costs more than dense
    legend = [t.get_text() for t in drawn["figure-4"].axes[0].get_legend().get_texts()]
    assert any(t.startswith("growing (") for t in legend)
    assert any(t.startswith("dense (") for t in legend)


@pytest.mark.slow
def test_figure_3_from_real_tiny_training(drawn, tmp_path, monkeypatch, imagenet_tiny):
    """experiments/figure-3.yaml -> runs -> MLflow -> figure-3: the plotted points are the
    tracked MACs and top-1, the uniform widths' MACs grow with the width, paper points are
    drawn from the reference file, only on the runs' dataset, and the dense network learns (32
    steps, the classifier at the full learning rate: test_table_imagenet_end_to_end says why)."""
    from analysis import figure_3, reference

    imagenet_tiny["data"]["synthetic_train"] = 256
    imagenet_tiny["train"].update(epochs=4, lr=0.05, head_lr_scale=1.0, warmup_epochs=0)

    shipped, ref = reference.REFERENCE_FILE, tmp_path / "reference.csv"
    known = [["figure-3", "mobilenet_v1", "synthetic", "grow", "p1", "top1", "40.5", "%", "src S", ""],
             ["figure-3", "mobilenet_v1", "synthetic", "grow", "p1", "macs", "2.5", "M", "src S", ""],
             ["figure-3", "mobilenet_v1", "imagenet", "grow", "p2", "top1", "70.0", "%", "src I", ""],
             ["figure-3", "mobilenet_v1", "imagenet", "grow", "p2", "macs", "300", "M", "src I", ""],
             ["figure-3", "mobilenet_v1", "synthetic", "grow", "p3", "top1", "60.0", "%", "src S", ""],
             ["figure-3", "mobilenet_v1", "synthetic", "grow", "p3", "macs", "", "M", "src S", ""]]
    pd.DataFrame(known, columns=reference.COLUMNS).to_csv(ref, index=False)
    monkeypatch.setattr(reference, "REFERENCE_FILE", ref)
    runs = draw("figure-3", imagenet_tiny)
    assert sorted(runs["variant"]) == sorted(["dense", "uniform-0.75", "uniform-0.5",
                                              "uniform-0.25", "grow-75", "grow-50", "grow-25",
                                              "grow-10"])
    ax = drawn["figure-3"].axes[0]
    plotted = {c.get_label(): np.c_[c.lines[0].get_xdata(), c.lines[0].get_ydata()]
               for c in ax.containers}
    c = tracking.client()
    params = {r: c.get_run(r).data.params for r in runs["run_id"]}
    for label, method in (("uniform width multiplier α (dense)", "dense"),
                          ("growing (Yuan et al. 2021) at MACs budget τ", "grow")):
        ids = [r for r in runs["run_id"] if params[r]["method"] == method]
        expected = sorted([metric(r, "cost/macs").iloc[-1] / 1e6, metric(r, "val/acc").iloc[-1]]
                          for r in ids)
        np.testing.assert_allclose(plotted[label].astype(float), expected, rtol=1e-9)
    uniform = sorted((float(params[r]["model.width_multiplier"]), metric(r, "cost/macs").iloc[-1])
                     for r in runs["run_id"] if params[r]["method"] == "dense")
    assert [w for w, _ in uniform] == [0.25, 0.5, 0.75, 1.0]
    dense = next(r for r in runs["run_id"] if params[r]["method"] == "dense"
                 and float(params[r]["model.width_multiplier"]) == 1.0)
    assert metric(dense, "val/acc").iloc[-1] >= 60                       # 4 classes: chance 25 %
    assert all(a[1] < b[1] for a, b in zip(uniform, uniform[1:]))          # MACs ordered by width
    stars = [li for li in ax.get_lines() if li.get_marker() == "*"]
    assert len(stars) == 1 and "src S" in stars[0].get_label()
    np.testing.assert_allclose(np.c_[stars[0].get_xdata(), stars[0].get_ydata()], [[2.5, 40.5]])
    assert "16 px" in ax.get_xlabel() and "smoke profile" in ax.get_title()
    assert "synthetic" in ax.get_title() and "cpu" in ax.get_title()
    # without known points on the runs' dataset, the figure says so and draws none
    monkeypatch.setattr(reference, "REFERENCE_FILE", shipped)
    none_here, elsewhere = figure_3.paper_points(["synthetic"])
    assert none_here.empty and elsewhere == 0                # the shipped file: all blank
    make("figure-3", profile="smoke", overrides=imagenet_tiny, run_missing=False, progress=False)
    ax = drawn["figure-3"].axes[0]
    assert not [li for li in ax.get_lines() if li.get_marker() == "*"]
    assert any("paper points: none known" in t.get_text() for t in ax.texts)
