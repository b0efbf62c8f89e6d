"""The launchers' decisions that need no cluster: which GPU and how many threads each local
training process gets, and what a Slurm job asks for (profile, `--set launcher.*`, checks)."""

from __future__ import annotations

import random

import pytest

from reproduce.errors import ConfigError
from reproduce.experiments import plan
from reproduce.launch.devices import physical_gpu, process_slots, visible_gpus
from reproduce.launch.settings import (FIELDS, SlurmSettings, executor_parameters, slurm_settings,
                                       split_launcher)


def test_four_processes_on_two_gpus_go_round_robin():
    slots = process_slots(4, gpus=["0", "1"], cpus=8)
    assert [s.gpu for s in slots] == ["0", "1", "0", "1"]
    assert [s.threads for s in slots] == [2, 2, 2, 2]
    assert slots[3].env()["CUDA_VISIBLE_DEVICES"] == "1"
    assert slots[3].env()["OMP_NUM_THREADS"] == "2"


def test_round_robin_over_any_visible_set_and_core_count():
    rng = random.Random()
    for _ in range(20):
        gpus = [str(g) for g in rng.sample(range(16), rng.randint(1, 8))]
        jobs, cpus = rng.randint(1, 32), rng.randint(1, 64)
        slots = process_slots(jobs, gpus=gpus, cpus=cpus)
        assert [s.gpu for s in slots] == [gpus[i % len(gpus)] for i in range(jobs)]
        assert all(s.threads == max(1, cpus // jobs) for s in slots)
        per_gpu = {g: sum(s.gpu == g for s in slots) for g in gpus}
        assert max(per_gpu.values()) - min(per_gpu.values()) <= 1      # evenly spread


def test_cpu_only_slots_pin_no_gpu():
    slots = process_slots(3, gpus=[], cpus=2)
    assert [s.gpu for s in slots] == [None] * 3
    assert all(s.threads == 1 for s in slots)
    assert "CUDA_VISIBLE_DEVICES" not in slots[0].env()


def test_runs_per_gpu_is_a_cap_the_user_sets():
    assert len(process_slots(4, gpus=["0", "1"], runs_per_gpu=2, cpus=4)) == 4
    with pytest.raises(ConfigError, match="RUNS_PER_GPU=1"):
        process_slots(3, gpus=["0", "1"], runs_per_gpu=1)
    with pytest.raises(ConfigError, match="at least 1"):
        process_slots(0, gpus=["0"])


def test_visible_and_physical_gpu_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert visible_gpus() == ["3", "5"]
    assert physical_gpu(1) == "5"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []


def test_profile_sections_give_each_profile_its_resources():
    smoke = plan("figure-7", "smoke")[0]
    paper = plan("figure-7", "paper")[0]
    imagenet = plan("table-imagenet-resnet50", "paper")[0]
    assert slurm_settings(smoke.launch).gpus == 0 and slurm_settings(smoke.launch).cpus == 1
    assert slurm_settings(paper.launch).gpus == 1
    s = slurm_settings(imagenet.launch)
    assert s.gpus == 8 and s.ranks == 8
    params = executor_parameters(s, "x")
    assert params["tasks_per_node"] == 8 and params["gpus_per_node"] == 8


def test_command_line_overrides_win_and_leave_identity_alone():
    runs, launcher = split_launcher({"budget": {"target": 0.3},
                                     "launcher": {"partition": "gpu", "time_min": 90}})
    assert runs == {"budget": {"target": 0.3}} and launcher == {"partition": "gpu", "time_min": 90}
    pr = plan("figure-7", "paper", runs)[0]
    s = slurm_settings(pr.launch, launcher)
    assert (s.partition, s.time_min, s.gpus) == ("gpu", 90, 1)
    assert plan("figure-7", "paper", runs)[0].hash == pr.hash
    params = executor_parameters(slurm_settings({"account": "lab", "qos": "high"}), "x")
    assert (params["slurm_account"], params["slurm_qos"]) == ("lab", "high")


@pytest.mark.parametrize("layer, message", [
    ({"gpu": 1}, "unknown key 'gpu'; valid keys: " + ", ".join(FIELDS)),
    ({"gpus": -1}, "gpus: expected a whole number >= 0"),
    ({"time_min": 0}, "time_min: expected a whole number >= 1"),
    ({"mem_gb": "lots"}, "mem_gb: expected a positive number"),
    ({"time_min": 2, "signal_delay_s": 90}, "leaves no time to train"),
    ("gpu", "expected a mapping"),
])
def test_bad_settings_stop_with_a_message_naming_them(layer, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        slurm_settings(layer)


def test_a_run_of_k_tasks_without_gpus_is_a_cpu_ddp_job():
    s = slurm_settings({"tasks": 2})
    assert s.ranks == 2 and executor_parameters(s, "x")["tasks_per_node"] == 2
    assert "gpus_per_node" not in executor_parameters(s, "x")


def test_defaults_are_a_cpu_job():
    assert slurm_settings() == SlurmSettings()
    assert "gpus_per_node" not in executor_parameters(SlurmSettings(), "x")


def test_pruning_runs_sharing_a_pretraining_are_one_job(tmp_path, tiny):
    """The pruning runs of one seed that prune one pre-trained network go to one job, in their
    order, with that pre-training; every other run (and every other seed) has a job of its own."""
    import yaml

    from reproduce import tracking
    from reproduce.launch.slurm import _job_units
    from reproduce.runner import pretraining_groups

    seeds = random.sample(range(100), 2)
    (tmp_path / "profiles.yaml").write_text(yaml.safe_dump({"tiny": {"seeds": seeds,
                                                                     "config": tiny}}))
    targets = random.sample([0.3, 0.4, 0.5, 0.6, 0.7], 3)
    runs = [{"variant": f"l1-{t}", "config": {"method": "prune",
                                               "baseline": {"prune_target": t}}} for t in targets]
    runs.insert(random.randrange(4), {"variant": "dense", "config": {"method": "dense"}})
    path = tmp_path / "prune-set.yaml"
    path.write_text(yaml.safe_dump({"name": "prune-set", "figures": [],
                                    "base": {"model": {"name": "resnet20"}}, "runs": runs}))
    planned = plan(str(path), "tiny")
    c = tracking.client()
    units = _job_units(planned, c)
    groups = pretraining_groups(planned, c)
    assert sorted(len(u) for u, _ in units) == [1, 1, 3, 3]
    for unit, sharing in units:
        if len(unit) == 1:
            assert unit[0].cfg.method == "dense" and sharing is None
            continue
        assert {pr.cfg.seed for pr in unit} == {unit[0].cfg.seed}
        assert [pr.cfg.baseline.prune_target for pr in unit] == targets      # in plan order
        assert all(groups[pr.hash] == sharing for pr in unit)
        assert sharing.hashes == frozenset(pr.hash for pr in unit)


def test_every_process_of_a_command_knows_how_many_run_at_once(monkeypatch):
    """Each slot's environment names the command's number of processes, which a run's `device`
    tag then carries; a process alone has a plain tag."""
    from reproduce.config import resolve
    from reproduce.tracked_run import device_tag

    jobs = random.randint(2, 6)
    slots = process_slots(jobs, gpus=[], cpus=8)
    assert {s.env()["REPRODUCE_PROCESSES"] for s in slots} == {str(jobs)}
    cfg = resolve({"train": {"device": "cpu", "threads": 1}})
    monkeypatch.delenv("REPRODUCE_PROCESSES", raising=False)
    assert device_tag(cfg) == "cpu (1 thread)"
    monkeypatch.setenv("REPRODUCE_PROCESSES", str(jobs))
    assert device_tag(cfg) == f"cpu (1 thread), {jobs} runs at once"


def test_a_profile_trained_on_other_ranks_than_it_plans_is_named_with_the_batch_that_keeps_it():
    """paper-imagenet is torchvision's 8 GPUs x 32: its launcher section plans 8 DDP ranks at a
    per-rank batch of 32. Trained on k other ranks the command says which per-rank batch keeps
    the global 256; on the planned ranks, or for a profile of one rank, it says nothing."""
    from reproduce.launch.settings import rank_mismatches

    runs = plan("table-imagenet-resnet50", "paper")
    assert {(r.cfg.data.batch_size, slurm_settings(r.launch).ranks) for r in runs} == {(32, 8)}
    assert rank_mismatches(runs, lambda pr: 8) == []
    k = random.choice([1, 2, 4, 16])
    [line] = rank_mismatches(runs, lambda pr: k)
    assert f"global batch of 256; these runs train on {k} rank(s)" in line
    assert f"--set data.batch_size={256 // k} keeps it" in line
    [odd] = rank_mismatches(runs, lambda pr: 3)
    assert "no whole per-rank batch keeps it" in odd
    smoke = plan("figure-7", "smoke") + plan("figure-7", "paper")
    assert rank_mismatches(smoke, lambda pr: 1) == []
