"""The dataset registry: every vocabulary reads it, and a dataset of one's own is one file."""

from __future__ import annotations

import importlib
import json
import random
import string
import sys
import textwrap

import pytest
import yaml

from reproduce import data as D
from reproduce.config import DataConfig, choices_of, resolve
from reproduce.data import registry
from reproduce.errors import ConfigError
from reproduce.tasks import TASKS, Classification, task_class


@pytest.fixture
def scratch_registry(monkeypatch):
    """Datasets registered by a test leave with it."""
    monkeypatch.setattr(registry, "_DATASETS", dict(registry._DATASETS))
    monkeypatch.setattr(registry, "_DOWNLOADS", dict(registry._DOWNLOADS))


def misspelt() -> str:
    return "no_such_" + "".join(random.choices(string.ascii_lowercase, k=6))


def test_every_vocabulary_is_the_registry():
    names = D.available_datasets()
    assert {"digits", "cifar10", "imagenet", "ptb", "voc", "digit_scenes"} <= set(names)
    from dataclasses import fields
    field = next(f for f in fields(DataConfig) if f.name == "dataset")
    assert list(choices_of(field.metadata)) == names
    for name in names:
        cfg = resolve({"data": {"dataset": name}})
        assert task_class(cfg) is TASKS[D.dataset(name).task]
    bad = misspelt()
    with pytest.raises(ConfigError) as err:
        resolve({"data": {"dataset": bad}})
    assert bad in str(err.value) and all(n in str(err.value) for n in names)
    with pytest.raises(ValueError, match=f"data.dataset: unknown value '{bad}'.*{names[-1]}"):
        DataConfig(dataset=bad)                 # the section checks itself when built
    unchecked = DataConfig()
    unchecked.dataset = bad
    for call in (D.build_data, D.check_available):
        with pytest.raises(ValueError, match=f"unknown dataset '{bad}'.*{names[-1]}"):
            call(unchecked)
    with pytest.raises(ValueError) as err:
        D.download(bad, "nowhere")
    assert all(n in str(err.value) for n in D.available_downloads())
    assert D.available_downloads() == ["cifar10", "cifar100", "voc", "sbd"]


def test_registering_is_checked(scratch_registry):
    name = misspelt()
    D.register_dataset(name, task="detection", build=lambda cfg, device, seed: None)
    with pytest.raises(ValueError, match="registered twice"):
        D.register_dataset(name, task="classification", build=lambda cfg, device, seed: None)
    with pytest.raises(ValueError, match="a name and a task"):
        D.register_dataset(misspelt(), task="", build=lambda cfg, device, seed: None)
    # a task the suite does not have stops with the ones it has
    with pytest.raises(ValueError, match=f"{name!r} declares the task 'detection'.*segmentation"):
        task_class(resolve({"data": {"dataset": name}}))


def test_image_size_defaults_come_from_the_registry(scratch_registry):
    side = random.randrange(12, 200)
    for name, defaults, want in [
            (misspelt(), D.DatasetDefaults(image_size=side, image_size_in_config=True), side),
            (misspelt(), D.DatasetDefaults(image_size=side, image_size_in_config=True,
                                           image_size_from_model=True), 224),
            (misspelt(), D.DatasetDefaults(image_size=side), 0)]:
        D.register_dataset(name, task="classification", defaults=defaults,
                           build=lambda cfg, device, seed: None)
        cfg = resolve({"data": {"dataset": name}, "model": {"name": "resnet50"}})
        assert cfg.data.image_size == want, name


def test_data_cli_lists_and_checks_every_dataset(tmp_path, monkeypatch, capsys):
    from reproduce.cli import main
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    name = random.choice(["cifar10", "cifar100"])
    folder = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[name]
    assert main(["data", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert list(rows) == D.available_datasets()
    assert str(tmp_path / folder) in rows[name]["missing"]
    assert f"make data-{name}" in rows[name]["missing"] and rows[name]["obtained"] == "download"
    assert rows["digits"]["missing"] is None and rows["digits"]["obtained"] == "built in"
    assert (rows["ptb"]["task"], rows["ptb"]["obtained"]) == ("language_modelling", "by hand")
    assert main(["data", "check", "ptb"]) == 2               # missing: the path looked at
    assert str(tmp_path / "ptb") in capsys.readouterr().err
    (tmp_path / "ptb").mkdir()
    for split in ("train", "valid"):
        (tmp_path / "ptb" / f"ptb.{split}.txt").write_text(" ".join(misspelt() for _ in range(9)))
    assert main(["data", "check", "ptb"]) == 0
    assert main(["data", "list"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("ptb "))
    assert line.split()[1:3] == ["language_modelling", "ready"]
    assert main(["data", "check", misspelt()]) == 2
    assert "digit_scenes" in capsys.readouterr().err
    assert main(["data", misspelt()]) == 2                   # neither an action nor a download
    assert "cifar10, cifar100, voc, sbd" in capsys.readouterr().err


STRIPES = '''
    """Stripes: horizontal against vertical bars under noise, an easy two-class dataset."""

    import torch

    from reproduce.data import DatasetDefaults, register_dataset
    from reproduce.data.tensor import tensor_bundle

    SEED, NOISE = {seed}, {noise}


    def build(cfg, device, seed):
        gen = torch.Generator().manual_seed(SEED)
        n, size = cfg.synthetic_train + cfg.synthetic_val, cfg.image_size or 8
        y = torch.randperm(n, generator=gen) % 2
        bars = (torch.arange(size) % 2).float()
        x = torch.where(y[:, None, None] == 0, bars[:, None].expand(size, size),
                        bars[None, :].expand(size, size))
        x = x[:, None].repeat(1, 3, 1, 1) + NOISE * torch.randn(n, 3, size, size, generator=gen)
        t = cfg.synthetic_train
        return tensor_bundle(cfg, device, seed, (x[:t], y[:t], x[t:], y[t:]), 2, flip=True)


    register_dataset("{name}", task="classification", build=build,
                     defaults=DatasetDefaults(image_size=8, num_classes=2),
                     source="generated bars")
'''


@pytest.mark.slow
def test_a_dataset_from_one_new_file_trains_end_to_end(tmp_path, monkeypatch, capsys,
                                                       scratch_registry, isolated_stores):
    from reproduce import tracking
    from reproduce.cli import main
    from reproduce.runner import run_experiment

    name = "stripes_" + "".join(random.choices(string.ascii_lowercase, k=6))
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(STRIPES).format(
        seed=random.randrange(2**31), noise=round(random.uniform(0.2, 0.4), 3), name=name))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=f"unknown value '{name}'"):
        resolve({"data": {"dataset": name}})
    try:
        importlib.import_module(name)                          # the one line that adds it
    finally:
        sys.modules.pop(name, None)

    assert main(["data", "list", "--json"]) == 0
    listed = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed[name] == {"name": name, "task": "classification", "obtained": "built in",
                            "missing": None, "source": "generated bars"}
    assert main(["data", "check", name]) == 0 and name in capsys.readouterr().out

    (tmp_path / "profiles.yaml").write_text(yaml.safe_dump({"tiny": {"seeds": [0], "config": {
        "data": {"dataset": name, "synthetic_train": 256, "synthetic_val": 128, "batch_size": 32},
        "train": {"epochs": 3, "lr": 0.05, "threads": 1}}}}))
    exp = tmp_path / "tiny-stripes.yaml"
    exp.write_text(yaml.safe_dump({"name": "tiny-stripes", "base": {"model": {"name": "resnet20"}},
                                   "runs": [{"variant": "dense", "config": {"method": "dense"}}]}))
    (summary,) = run_experiment(str(exp), "tiny", progress=False)
    run = tracking.client(isolated_stores).get_run(summary["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["dataset"] == name
    assert task_class(resolve({"data": {"dataset": name}})) is Classification
    assert run.data.metrics["val/acc"] > 80                    # chance is 50
