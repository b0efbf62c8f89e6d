"""Experiment-file validation, config resolution and run identity."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random

import pytest
import yaml

import reproduce.config as config
from reproduce.config import (ConfigError, RunConfig, config_hash, flatten, parse_overrides, resolve,
                              to_dict, unflatten)
from reproduce.experiments import plan

# sections every run reads (autogrow is read by one trainer only)
SECTIONS = ("data", "model", "gates", "temperature", "budget", "train", "baseline")


def field_metadata(obj=None, prefix: str = "") -> dict[str, dict]:
    """Every field of the config, dotted, with its own metadata."""
    obj = RunConfig() if obj is None else obj
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.update(field_metadata(value, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = dict(f.metadata)
    return out


def another_value(value):
    """Another valid value of a field's type (numbers in (0, 1] suit every range)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + random.randint(1, 50)
    new = round(random.uniform(0.1, 1.0), 4)
    return new if new != value else new / 2


def config_with_knob(section: str, default: int, **meta) -> type:
    """RunConfig with one more integer field, `<section>.knob`, declared with metadata `meta`."""
    base = type(getattr(RunConfig(), section))
    knob = dataclasses.field(default=default, metadata=meta)
    plus = dataclasses.make_dataclass(base.__name__ + "Plus", [("knob", int, knob)], bases=(base,),
                                      frozen=base.__dataclass_params__.frozen)
    return dataclasses.make_dataclass("RunConfigPlus", [
        (section, plus, dataclasses.field(default_factory=plus))], bases=(RunConfig,))


def write_experiment(tmp_path, body: dict, profiles: dict | None = None):
    (tmp_path / "profiles.yaml").write_text(yaml.safe_dump(profiles or {
        "smoke": {"seeds": [0], "config": {"data": {"dataset": "synthetic"}}}}))
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


@pytest.mark.parametrize("body, needle", [
    ({"base": {"budget": {"targte": 0.3}}}, "budget.targte"),
    ({"base": {"gates": {"sampling": "gumbel"}}}, "gumbel"),
    ({"base": {"temperature": {"schedule": "cyclic"}}}, "cyclic"),
    ({"base": {"train": {"epochs": "many"}}}, "train.epochs"),
    ({"base": {"budget": {"target": 1.5}}}, "budget.target"),
    ({"base": {"model": {"name": "resnet21"}}}, "resnet21"),
    ({"runs": [{"variant": "a", "confg": {}}]}, "confg"),
    ({"bogus": 1}, "bogus"),
    ({"profiles": {"smoke": {"sedes": [0]}}}, "sedes"),
])
def test_bad_experiment_file_names_the_problem(tmp_path, body, needle):
    path = write_experiment(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        plan(path, "smoke")
    assert needle in str(err.value)
    assert str(path) in str(err.value)


def test_unknown_value_lists_the_choices():
    with pytest.raises(ConfigError, match="bernoulli, straight_through, deterministic"):
        resolve({"gates": {"sampling": "nope"}})


def test_unknown_profile_lists_known_ones(tmp_path):
    path = write_experiment(tmp_path, {"runs": [{"variant": "a"}]})
    with pytest.raises(ConfigError, match="unknown profile 'gpu'.*smoke"):
        plan(path, "gpu")


def test_layers_apply_in_order_and_seeds_expand(tmp_path):
    path = write_experiment(
        tmp_path,
        {"base": {"budget": {"target": 0.4}, "train": {"epochs": 7}},
         "profiles": {"smoke": {"seeds": [3, 5], "config": {"train": {"epochs": 9}}}},
         "runs": [{"variant": "a"},
                  {"variant": "b", "config": {"budget": {"target": 0.2}},
                   "profiles": {"smoke": {"seeds": [1]}}}]},
        profiles={"smoke": {"seeds": [0], "config": {"data": {"dataset": "synthetic"},
                                                     "train": {"epochs": 2, "lr": 0.3}}}})
    runs = plan(path, "smoke", overrides={"train": {"lr": 0.01}})
    assert [(r.cfg.variant, r.cfg.seed) for r in runs] == [("a", 3), ("a", 5), ("b", 1)]
    a = runs[0].cfg
    assert (a.data.dataset, a.train.epochs, a.budget.target, a.train.lr) == ("synthetic", 9, 0.4, 0.01)
    assert runs[2].cfg.budget.target == 0.2
    assert len({r.hash for r in runs}) == 3


def test_hash_tracks_identity_fields_only():
    cfg = resolve({})
    h = config_hash(cfg)
    flat = flatten(to_dict(cfg))
    # every identity field changes the hash; pick a few at random each time
    meta = field_metadata()
    numeric = [k for k, v in flat.items() if isinstance(v, float) and not k.startswith("data.")
               and meta[k].get("identity", True) and k.split(".")[0] in SECTIONS]
    for key in random.sample(numeric, 5):
        changed = resolve(unflatten({key: flat[key] * 0.5 + 0.01}))
        assert config_hash(changed) != h, key
    # fields that cannot change a result do not
    same = resolve({"train": {"device": "cpu", "threads": 3, "checkpoint_minutes": 1.5},
                    "data": {"root": "/elsewhere", "num_workers": 7}})
    assert config_hash(same) == h
    # a trainer's own section counts only for runs of that trainer
    other = resolve({"autogrow": {"patience": 4}})
    assert config_hash(other) == h
    assert config_hash(resolve({"method": "autogrow", "autogrow": {"patience": 4}})) != \
        config_hash(resolve({"method": "autogrow"}))


def test_resample_every_counts_only_when_set():
    """gates.resample_every joined the config after runs were tracked: at its default (1) a
    run keeps the identity it had, set to anything else it is a different run."""
    base = config_hash(resolve({}))
    assert config_hash(resolve({"gates": {"resample_every": 1}})) == base
    k = random.randint(2, 50)
    assert config_hash(resolve({"gates": {"resample_every": k}})) != base
    assert resolve({"gates": {"resample_every": k}}).gates.resample_every == k
    with pytest.raises(ConfigError, match="resample_every"):
        resolve({"gates": {"resample_every": 0}})
    with pytest.raises(ConfigError, match="resample_every"):
        resolve({"gates": {"resample_every": 4, "sampling": "hard"}})


def test_overrides_parse_yaml_scalars():
    value = round(random.uniform(0.01, 0.9), 4)
    assert parse_overrides([f"budget.target={value}", "gates.sampling=deterministic",
                            "train.milestones=[0.3, 0.6]"]) == {
        "budget": {"target": value}, "gates": {"sampling": "deterministic"},
        "train": {"milestones": [0.3, 0.6]}}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["budget.target"])


def test_flatten_roundtrip():
    d = to_dict(RunConfig())
    assert unflatten(flatten(d)) == d


def test_every_shipped_experiment_resolves():
    """Every experiment file in experiments/ is valid for every profile it can run under."""
    from reproduce.experiments import EXPERIMENTS_DIR, PROFILES_FILE, load_profiles

    profiles = load_profiles(EXPERIMENTS_DIR)
    files = [p for p in EXPERIMENTS_DIR.glob("*.yaml")
             if p.name != PROFILES_FILE and not p.stem.startswith("search-")]
    assert files
    for path in files:
        for profile in profiles:
            assert plan(path, profile), path


def test_the_method_sections_are_the_methods_own_options():
    """A method knob is declared once: the config's gates, temperature and budget sections are the
    method's frozen option dataclasses (plus the gates' run-only fields), handed to the method as
    they are, with its defaults and its checks."""
    from reproduce.method.options import (BudgetOptions, GateOptions, OptionError,
                                          TemperatureOptions)
    target, k = round(random.uniform(0.05, 1.0), 3), random.randint(2, 9)
    cfg = resolve({"budget": {"target": target}, "gates": {"resample_every": k}})
    assert cfg.budget == BudgetOptions(target=target)
    assert cfg.temperature == TemperatureOptions()
    assert isinstance(cfg.gates, GateOptions) and cfg.gates.resample_every == k
    defaults = flatten(to_dict(RunConfig()))
    for section, options in (("gates", GateOptions), ("temperature", TemperatureOptions),
                             ("budget", BudgetOptions)):
        for f in dataclasses.fields(options):
            assert defaults[f"{section}.{f.name}"] == f.default, f"{section}.{f.name}"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.gates.sampling = "hard"            # changed with dataclasses.replace, which checks
    with pytest.raises(OptionError, match="gates.resample_every"):
        dataclasses.replace(cfg.gates, sampling="hard")
    with pytest.raises(OptionError, match=r"gates.mask_lr = -0.5: must be >= 0"):
        dataclasses.replace(cfg.gates, mask_lr=-0.5)


def test_lr_factor_warmup_step_and_cosine():
    import math

    from reproduce.config import TrainConfig
    from reproduce.train import lr_factor

    tc = TrainConfig(epochs=10, lr_schedule="cosine", warmup_epochs=2)
    assert lr_factor(tc, 0.0) == pytest.approx(1e-3 / 2)            # warm-up starts near 0 ...
    assert lr_factor(tc, 1.0) == pytest.approx((1 + 1e-3) / 2)      # ... and is linear
    assert lr_factor(tc, 2.0) == pytest.approx(1.0)                 # cosine from its top
    assert lr_factor(tc, 6.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(tc, 10.0) == pytest.approx(0.0, abs=1e-12)
    step = TrainConfig(epochs=8, lr_schedule="step", milestones=[0.5, 0.75], lr_gamma=0.1)
    assert [lr_factor(step, e) for e in (0, 3.9, 4, 5.9, 6, 7.9)] == \
        pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    assert lr_factor(TrainConfig(lr_schedule="constant"), 17.3) == 1.0


def test_poly_lr_decays_to_zero_after_the_warm_up():
    from reproduce.config import TrainConfig
    from reproduce.train import lr_factor

    epochs, warmup = int(random.randint(5, 40)), 1
    power = round(random.uniform(0.5, 2.0), 3)
    tc = TrainConfig(epochs=epochs, lr_schedule="poly", lr_power=power, warmup_epochs=warmup)
    t = random.uniform(warmup, epochs)
    assert lr_factor(tc, warmup) == pytest.approx(1.0)
    assert lr_factor(tc, t) == pytest.approx((1 - (t - warmup) / (epochs - warmup)) ** power)
    assert lr_factor(tc, epochs) == 0.0 and lr_factor(tc, epochs + 0.5) == 0.0   # never complex
    assert lr_factor(tc, 0.5) == pytest.approx((0.5 + 1e-3) / warmup)            # warm-up as usual


def test_fields_added_later_leave_earlier_identities_alone():
    """A field declared `added_later` is not part of the hash at its old-behaviour value (runs
    tracked before it existed keep their identity); any other value is."""
    meta = field_metadata()
    later = {k: m["added_later"] for k, m in meta.items() if "added_later" in m}
    assert {"data.sbd", "gates.resample_every"} <= set(later)
    cfg = resolve({"data": {"dataset": "voc"}, "train": {"lr": random.uniform(0.01, 1)}})
    flat = {k: v for k, v in flatten(to_dict(cfg)).items()
            if meta[k].get("identity", True) and k not in later and not k.startswith("autogrow.")
            and ("read_with" not in meta[k] or config._flag(cfg, meta[k]["read_with"]))}
    before = hashlib.sha256(json.dumps(flat, sort_keys=True, separators=(",", ":")).encode())
    assert config_hash(cfg) == before.hexdigest()[:16]
    for key, old in later.items():
        # the default reproduces the runs tracked before the field (changing it means dropping
        # `added_later` and new pins); a field one method reads is changed in a run of it
        run = cfg if meta[key].get("read_by", cfg.method) == cfg.method else \
            resolve(to_dict(cfg), {"method": meta[key]["read_by"]})
        assert flatten(to_dict(run))[key] == old, key
        assert config_hash(resolve(to_dict(run), unflatten({key: another_value(old)}))) != \
            config_hash(run), key
    with pytest.raises(ConfigError, match="data.sbd.*data.dataset: voc"):
        resolve({"data": {"sbd": True}})


def test_a_new_field_declared_added_later_keeps_every_pinned_identity(monkeypatch):
    """Adding a knob with `added_later` metadata at its default leaves every tracked run's
    identity alone; setting it makes a different run. Without the declaration it would not."""
    from tests.test_architecture import PINS, resolved_hashes

    section, old = random.choice(SECTIONS), random.randint(-1000, 1000)
    base = config_hash(resolve({}))
    monkeypatch.setattr(config, "RunConfig", config_with_knob(section, old, added_later=old))
    assert resolve({}).__class__.__name__ == "RunConfigPlus"
    assert resolved_hashes() == json.loads(PINS.read_text())
    assert config_hash(resolve({section: {"knob": old}})) == base
    assert config_hash(resolve({section: {"knob": old + random.randint(1, 50)}})) != base
    monkeypatch.setattr(config, "RunConfig", config_with_knob(section, old))
    assert config_hash(resolve({})) != base, "a plain new field changes every identity"


def test_identity_metadata_of_a_new_field_is_honoured(monkeypatch):
    """`identity: False` keeps a field out of every hash; `read_by` keeps it out of the other
    methods' runs, or with `others_at` hashes it there at that fixed value."""
    section, v = random.choice(SECTIONS), random.randint(-1000, 1000)
    other = v + random.randint(1, 50)
    base = {m: config_hash(resolve({"method": m})) for m in ("grow", "autogrow")}

    def hashes(**meta):
        monkeypatch.setattr(config, "RunConfig", config_with_knob(section, v, **meta))
        return {(m, k): config_hash(resolve({"method": m, section: {"knob": k}}))
                for m in ("grow", "autogrow") for k in (v, other)}

    h = hashes(identity=False)
    assert all(h[m, k] == base[m] for m, k in h)
    h = hashes(read_by="autogrow")
    assert h["grow", v] == h["grow", other] == base["grow"]
    assert len({h["autogrow", v], h["autogrow", other], base["autogrow"]}) == 3
    h = hashes(read_by="autogrow", others_at=v)
    assert h["grow", v] == h["grow", other] != base["grow"]
    assert h["autogrow", v] != h["autogrow", other]


def test_an_experiment_profile_can_start_from_another_shared_profile(tmp_path):
    """`paper: {shared: paper-imagenet}`: the runs take that profile's seeds and config (and
    their own on top) and are still planned under `paper`."""
    epochs = random.randint(2, 50)
    profiles = {"smoke": {"seeds": [0], "config": {"data": {"dataset": "digits"}}},
                "smoke-other": {"seeds": [4, 7], "config": {"data": {"dataset": "synthetic"},
                                                            "train": {"epochs": epochs, "lr": 0.2}}}}
    path = write_experiment(tmp_path, {"profiles": {"smoke": {"shared": "smoke-other",
                                                              "config": {"train": {"lr": 0.3}}}},
                                       "runs": [{"variant": "a"}]}, profiles)
    runs = plan(path, "smoke")
    assert [(r.cfg.seed, r.profile) for r in runs] == [(4, "smoke"), (7, "smoke")]
    cfg = runs[0].cfg
    assert (cfg.data.dataset, cfg.train.epochs, cfg.train.lr) == ("synthetic", epochs, 0.3)
    bad = write_experiment(tmp_path, {"profiles": {"smoke": {"shared": "smoke-typo"}}}, profiles)
    with pytest.raises(ConfigError, match=r"profiles.smoke.shared.*'smoke-typo'.*smoke-other"):
        plan(bad, "smoke")


@pytest.mark.parametrize("profile", ["smoke", "paper"])
def test_imagenet_experiments_share_their_mobilenet_runs_and_state_their_recipe(profile):
    """figure-3 and table-imagenet train MobileNetV1's dense and grow-50 runs once; the paper
    profile is ImageNet at the model's 224 px with the stated recipe, the smoke one the
    generated tree at 48 px."""
    fig = {r.cfg.variant: r for r in plan("figure-3", profile)}
    table = {r.cfg.variant: r for r in plan("table-imagenet-mobilenet", profile)}
    for variant in ("dense", "grow-50"):
        assert fig[variant].hash == table[variant].hash
    resnet = plan("table-imagenet-resnet50", profile)
    for run in [*fig.values(), *table.values(), *resnet]:
        cfg = run.cfg
        assert run.profile == profile
        if profile == "paper":
            assert (cfg.data.dataset, cfg.data.image_size, cfg.train.epochs) == ("imagenet", 224, 90)
            assert (cfg.train.lr, cfg.train.lr_schedule, cfg.train.weight_decay) == (0.1, "step", 1e-4)
            assert cfg.train.amp and cfg.train.channels_last and not cfg.train.nesterov
            assert [round(m * 90) for m in cfg.train.milestones] == [30, 60]
        else:
            assert (cfg.data.dataset, cfg.data.image_size) == ("imagenet_smoke", 48)
    assert sorted(fig[v].cfg.model.width_multiplier for v in fig if v.startswith(("dense", "uni"))) \
        == [0.25, 0.5, 0.75, 1.0]


def test_fields_only_growing_reads_leave_baseline_identities_alone():
    """budget.growth_push is read by the growing method only: a baseline's identity does not
    depend on it (its tracked runs stay valid when the default changes); a growing run's does."""
    grow_only = {k: m for k, m in field_metadata().items() if m.get("read_by") == "grow"}
    assert "budget.growth_push" in grow_only
    lr = random.uniform(0.01, 1)
    for method in ("dense", "prune", "autogrow"):
        base = resolve({"method": method, "train": {"lr": lr}})
        flat = flatten(to_dict(base))
        for key, meta in grow_only.items():
            value = random.choice([c for c in meta["choices"] if c != flat[key]]) \
                if "choices" in meta else another_value(flat[key])
            flipped = resolve(to_dict(base), unflatten({key: value}))
            assert flatten(to_dict(flipped))[key] == value
            assert config_hash(flipped) == config_hash(base), (method, key)
    grow = resolve({"method": "grow", "train": {"lr": lr}})
    assert config_hash(resolve(to_dict(grow), unflatten({"budget.growth_push": "uniform"}))) != \
        config_hash(resolve(to_dict(grow), unflatten({"budget.growth_push": "cost"})))
    # the channel multiple is part of a growing run's identity unless it trains masked
    multiple = random.choice([m for m in range(1, 33) if m != grow.train.channel_multiple])
    for execution, counts in (("masked", False), ("auto", True), ("restructured", True)):
        run = resolve(to_dict(grow), unflatten({"train.execution": execution}))
        other = resolve(to_dict(run), unflatten({"train.channel_multiple": multiple}))
        assert (config_hash(other) != config_hash(run)) == counts, execution
