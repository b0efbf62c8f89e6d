"""One run on two processes (DDP over gloo, on CPU), as `torchrun --nproc_per_node=2` runs it."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch

from reproduce import tracking

from .test_data import make_tree


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str, overrides: dict) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist

    from reproduce import distributed, runner
    from reproduce.method import architecture_summary, growth

    assert distributed.init_from_env() and distributed.world_size() == world
    samples, states, shards = [], [], []
    sample, execute = growth.GrowthController.sample, runner.execute

    def recording_sample(self, replay=None):
        sample(self, replay)
        samples.append(torch.cat([g.sample for g in self.gates]).clone())

    def recording_execute(*args, **kwargs):
        state = execute(*args, **kwargs)
        states.append(state)
        return state

    growth.GrowthController.sample = recording_sample
    runner.execute = recording_execute
    try:
        runner.run_experiment("figure-7", "smoke", overrides=overrides, progress=False)
    finally:
        growth.GrowthController.sample, runner.execute = sample, execute
    state = states[-1]
    from reproduce.data import build_data
    from reproduce.config import resolve
    data = build_data(resolve(overrides).data, seed=0)
    shards = [y.tolist() for _, y in data.val]
    torch.save({"samples": samples, "model": state.model.state_dict(),
                "arch": architecture_summary(state.model), "final": state.final,
                "val_shard": shards, "train_batches": len(data.train)},
               os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_run_trains_one_network_and_tracks_one_run(tmp_path):
    make_tree(tmp_path / "tree", np.random.default_rng(0), classes=("a", "b", "c"), per_class=6)
    overrides = {
        "data": {"dataset": "imagefolder", "root": str(tmp_path / "tree"), "image_size": 8,
                 "batch_size": 4, "eval_batch_size": 4},
        "model": {"width_multiplier": 0.25},
        "train": {"epochs": 2, "lr": 0.05, "threads": 1},
    }
    out = tmp_path / "out"
    out.mkdir()
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), str(out), overrides), nprocs=2)
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1))

    # the same gates at every step, on both ranks
    assert len(r0["samples"]) == len(r1["samples"]) > 0
    for a, b in zip(r0["samples"], r1["samples"]):
        assert torch.equal(a, b)
    assert any(not torch.equal(r0["samples"][0], s) for s in r0["samples"][1:])  # really sampled
    # the same network at the end: weights, BN statistics, gates, architecture, metrics
    assert r0["model"].keys() == r1["model"].keys()
    for k in r0["model"]:
        assert torch.equal(r0["model"][k], r1["model"][k]), k
    assert r0["arch"] == r1["arch"]
    assert r0["final"]["val/acc"] == r1["final"]["val/acc"]
    # each rank read its own half: 9 training images per rank (3 batches of 4, the last dropped
    # as under half a batch... or kept) and disjoint validation shards covering all 18 images
    assert r0["train_batches"] == r1["train_batches"]
    val = sorted(sum(r0["val_shard"], []) + sum(r1["val_shard"], []))
    assert val == sorted([0] * 6 + [1] * 6 + [2] * 6)

    # rank 0 alone tracked: exactly one run, finished, with one value per epoch
    c = tracking.client()
    exp_id = tracking.experiment_id(c, "smoke", create=False)
    runs = c.search_runs([exp_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    history = c.get_metric_history(runs[0].info.run_id, "val/acc")
    assert sorted(m.step for m in history) == [1, 2]
    assert history[-1].value == r0["final"]["val/acc"]
