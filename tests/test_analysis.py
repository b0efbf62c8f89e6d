"""The analysis layer's shared parts: the run taxonomy."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from analysis import variants


@pytest.fixture
def rng():
    seed = random.SystemRandom().randrange(2**31)
    print(f"numpy seed {seed}")
    return np.random.default_rng(seed)


# -- the run taxonomy -----------------------------------------------------------------------------

def test_one_taxonomy_names_every_kind_of_run(rng):
    narrow = round(float(rng.uniform(0.3, 0.9)), 3)
    seed = round(float(rng.uniform(0.05, 0.95)), 3)
    tau = round(float(rng.uniform(0.2, 0.8)), 3)
    cases = [  # config, then kind, start, family, gates
        ({"method": "dense"}, "dense", "", "dense", ""),
        ({"method": "dense", "model.width_multiplier": narrow}, "uniform", "", "dense", ""),
        ({"method": "grow", "gates.seed_fraction": seed}, "grow", "seed", "growing", "channels"),
        ({"method": "grow", "gates.seed_fraction": 1.0}, "grow", "full", "pruning from full",
         "channels"),
        ({"method": "grow", "gates.seed_fraction": 1.0, "model.gate_blocks": True},
         "grow", "seed", "growing", "blocks+channels"),       # blocks still grow from the seed
        ({"method": "grow", "gates.seed_fraction": 1.0, "model.gate_blocks": True,
          "gates.seed_blocks": "all"}, "grow", "full", "pruning from full", "blocks+channels"),
        ({"method": "grow", "model.gate_blocks": True, "model.gate_channels": False},
         "grow", "seed", "growing", "blocks"),
        ({"method": "prune", "baseline.criterion": "l1_norm"}, "l1_norm", "", "pruning baseline",
         "channels"),
        ({"method": "prune", "baseline.criterion": "slimming"}, "slimming", "", "pruning baseline",
         "channels"),
        ({"method": "autogrow"}, "autogrow", "", "growing", "channels"),
    ]
    defaults = {"method": "grow", "model.width_multiplier": 1.0, "gates.seed_fraction": 0.25,
                "gates.seed_blocks": "one_per_stage", "model.gate_blocks": False,
                "model.gate_channels": True, "baseline.criterion": "l1_norm",
                "budget.metric": "macs", "budget.target": tau}
    order = rng.permutation(len(cases))
    runs = pd.DataFrame([{f"param.{k}": str(v) for k, v in {**defaults, **cases[i][0]}.items()}
                         for i in order], index=rng.permutation(100)[:len(cases)])
    expected = pd.DataFrame([cases[i][1:] for i in order], index=runs.index,
                            columns=["kind", "start", "family", "gates"])
    for axis in expected.columns:
        assert list(getattr(variants, axis)(runs)) == list(expected[axis]), axis
    target = variants.target(runs)
    dense = expected["kind"].isin(["dense", "uniform"])
    assert target[dense].isna().all() and (target[~dense] == tau).all()


def test_ablation_names_the_part_of_the_method_a_run_changes():
    runs = pd.DataFrame({"param.budget.metric": ["macs", "none", "macs", "macs", "none"],
                         "param.gates.sampling": ["bernoulli", "bernoulli", "deterministic",
                                                  "bernoulli", "deterministic"],
                         "param.temperature.schedule": ["global", "global", "global",
                                                        "separate_decayed", "separate"]})
    assert list(variants.ablation(runs)) == ["ours", "w/o budget (fixed λ)", "w/o sampling",
                                             "separate_decayed β", "w/o budget (fixed λ)"]
