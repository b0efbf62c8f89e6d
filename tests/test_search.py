"""Optuna search: spec validation, a tracked study, two workers on one storage, pruning, retries.

Every study and MLflow store lives in tmp_path (conftest points OPTUNA_STORAGE and
MLFLOW_TRACKING_URI there). Trials are the figure-7 run shrunk by the `tiny` overrides.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from reproduce import search, tracking
from reproduce.cli import main
from reproduce.config import ConfigError
from reproduce.experiments import EXPERIMENTS_DIR, plan

REPO = Path(__file__).resolve().parents[1]


def write_spec(tmp_path: Path, tiny: dict, name: str = "spec", **changes) -> Path:
    spec = {
        "name": "test-search",
        "base": "figure-7",
        "set": tiny,
        "objectives": [{"metric": "val/acc", "direction": "maximize"}],
        "constraints": [{"metric": "budget/usage", "max": 0.9}],
        "space": {
            "budget.lambda_base": {"type": "float", "low": 0.01, "high": 0.3, "log": True},
            "temperature.schedule": {"type": "categorical", "choices": ["global", "separate"]},
        },
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "trials": 4,
    }
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def study_of(spec_path: Path, profile: str = "smoke"):
    spec = search.load_spec(str(spec_path), profile)
    return spec, search.load_study_for(spec)


def mlflow_runs(profile: str = "smoke"):
    c = tracking.client()
    exp_id = tracking.experiment_id(c, profile, create=False)
    runs = c.search_runs([exp_id], max_results=1000) if exp_id else []
    parents = [r for r in runs if r.data.tags.get("run_kind") == "search"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return c, parents, children


# ------------------------------------------------------------------------- invalid specs

@pytest.mark.parametrize("changes, message", [
    ({"space": {"budget.lambda": {"type": "float", "low": 0.1, "high": 0.2}}},
     r"space\.budget\.lambda: 'budget\.lambda' is not a config field.*lambda_base"),
    ({"space": {"budget": {"type": "float", "low": 0.1, "high": 0.2}}},
     r"config section, not a field"),
    ({"space": {"budget.lambda_base": {"type": "float", "low": 0.3, "high": 0.1}}},
     r"low \(0\.3\) must be smaller than high \(0\.1\)"),
    ({"space": {"budget.lambda_base": {"type": "float", "low": 0.0, "high": 0.3, "log": True}}},
     r"log: true needs low > 0"),
    ({"space": {"budget.lambda_base": {"type": "uniform", "low": 0.0, "high": 0.3}}},
     r"unknown type 'uniform'"),
    ({"space": {"budget.lambda_base": {"type": "float", "low": 0.01, "high": 0.3, "lg": True}}},
     r"unknown key 'lg'"),
    ({"space": {"temperature.schedule": {"type": "categorical", "choices": ["global", "hot"]}}},
     r"space\.temperature\.schedule: value 'hot' is not valid.*choose one of global"),
    ({"space": {"temperature.schedule": {"type": "float", "low": 0.1, "high": 0.2}}},
     r"not a number; use type: categorical"),
    ({"space": {"train.epochs": {"type": "float", "low": 1, "high": 3}}}, r"use type: int"),
    ({"space": {"gates.seed_fraction": {"type": "float", "low": 0.5, "high": 1.5}}},
     r"value 1\.5 is not valid.*gates\.seed_fraction"),
    ({"space": {"temperature.decay": {"type": "float", "low": 0.5, "high": 0.9,
                                      "when": {"temperature.schedule": "separate"}}}},
     r"when: 'temperature\.schedule' must be a categorical key listed earlier"),
    ({"sampler": {"name": "bayes"}}, r"unknown sampler 'bayes'; choose one of tpe"),
    ({"sampler": {"name": "tpe", "n_startup": 3}}, r"unknown key 'n_startup'.*n_startup_trials"),
    ({"pruner": {"name": "early"}}, r"unknown pruner 'early'"),
    ({"objectives": [{"metric": "val/accuracy", "direction": "maximize"}]},
     r"unknown metric 'val/accuracy'"),
    ({"objectives": [{"metric": "val/acc", "direction": "maximize"},
                     {"metric": "cost/macs_ratio", "direction": "minimize"}],
      "pruner": {"name": "median"}}, r"cannot prune multi-objective"),
    ({"trails": 3}, r"unknown key 'trails'"),
    ({"space": None}, r"missing required key 'space'"),
])
def test_invalid_spec_fails_with_a_clear_message(tmp_path, tiny, changes, message):
    path = write_spec(tmp_path, tiny, **changes)
    with pytest.raises(ConfigError, match=message) as err:
        search.load_spec(str(path), "smoke")
    assert str(path) in str(err.value)            # names the file


def test_invalid_spec_on_the_command_line(tmp_path, tiny, capsys):
    path = write_spec(tmp_path, tiny, space={
        "budget.lambda_base": {"type": "float", "low": -0.1, "high": 0.3, "log": True}})
    assert main(["search", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "space.budget.lambda_base" in err and "low > 0" in err
    assert not (tmp_path / "optuna.db").exists()          # nothing was started


def test_shipped_specs_are_valid():
    for path in sorted(EXPERIMENTS_DIR.glob("search-*.yaml")):
        if not search.is_spec(path):
            continue                                    # e.g. a written search-*-best.yaml
        for profile in ("smoke", "paper"):
            spec = search.load_spec(str(path), profile)
            assert spec.trials >= 1 and spec.space


def test_pareto_front_and_dominance():
    import optuna
    from optuna.distributions import FloatDistribution

    study = optuna.create_study(directions=["maximize", "minimize"])
    points = [(90, 0.5), (95, 0.8), (85, 0.3), (89, 0.6), (95, 0.9)]
    study.add_trials([optuna.trial.create_trial(values=list(v), params={"x": 0.1},
                                                distributions={"x": FloatDistribution(0, 1)})
                      for v in points])
    front = search.pareto_trials(study)
    assert [t.number for t in front] == [1, 0, 2]    # best accuracy first; 3 and 4 dominated
    # the figure's accuracy/MACs front uses the same dominance
    assert search.pareto_mask(points, ("maximize", "minimize")) == [True, True, True, False, False]


def scored_study(tmp_path, tiny, outcomes):
    """A study of the test spec whose trials were scored by the objective, without training:
    each outcome is (val/acc, budget/usage); the spec's constraint is budget/usage <= 0.9."""
    from reproduce.search.objective import TrialObjective

    spec = search.load_spec(str(write_spec(tmp_path, tiny)), "smoke")
    study, _ = search.open_study(spec, search.make_storage(search.storage_url(), spec.heartbeat))
    objective = TrialObjective(spec, None, "0", "parent", search.storage_url())
    for acc, usage in outcomes:
        trial = study.ask()
        values, _ = objective._score(trial, {"val/acc": acc, "budget/usage": usage})
        study.tell(trial, values[0])
    return spec, study


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_optuna_best_trial_is_the_suites_choice_under_constraints(tmp_path, tiny):
    from optuna_dashboard import get_note

    from analysis.search_plots import _best, trials_frame
    from reproduce.search.study import record_best

    # trial 0 is the most accurate but breaks the constraint
    spec, study = scored_study(tmp_path, tiny, [(95.0, 0.95), (80.0, 0.5), (70.0, 0.4)])
    trials = study.get_trials()
    assert [t.user_attrs["feasible"] for t in trials] == [False, True, True]
    assert [search.is_feasible(t) for t in trials] == [False, True, True]
    assert study.best_trial.number == 1                     # Optuna applies the constraint
    assert search.best_trial(study).number == 1
    assert search.choose_trial(study, spec).number == 1      # what search-best writes
    df = trials_frame(study, spec)
    assert list(df["feasible"]) == [False, True, True]
    assert _best(df[df["feasible"]], study).number == 1      # the Pareto figure's star
    # optuna-dashboard ignores constraints when it marks a best trial: the study says which
    record_best(study, spec)
    assert study.user_attrs["best_feasible_trials"] == [1]
    note = get_note(study)
    assert "#1" in note and "budget/usage <= 0.9" in note
    # a note someone wrote in the dashboard is left alone
    from optuna_dashboard import save_note
    save_note(study, "my own note")
    record_best(study, spec)
    assert get_note(study) == "my own note"


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_the_suites_dashboard_names_the_feasible_best_trial(tmp_path, tiny):
    import io
    import json
    from wsgiref.util import setup_testing_defaults

    from reproduce.dashboard import FeasibilityStorage, create_app, open_storage

    _, study = scored_study(tmp_path, tiny, [(95.0, 0.95), (80.0, 0.5), (70.0, 0.4)])
    storage = open_storage(search.storage_url())
    shown = FeasibilityStorage(storage)
    sid = study._study_id
    assert storage.get_best_trial(sid).number == 0          # what optuna-dashboard alone shows
    assert shown.get_best_trial(sid).number == 1            # the best feasible trial
    # the constraint values also as the older list, which the dashboard greys out by
    assert [t.system_attrs["constraints"] for t in shown.get_all_trials(sid)] == \
        [list(t.constraints.values()) for t in study.trials]
    assert "constraints" not in storage.get_trial(study.trials[0]._trial_id).system_attrs

    env = {"PATH_INFO": f"/api/studies/{sid}", "REQUEST_METHOD": "GET"}
    setup_testing_defaults(env)
    env["wsgi.input"] = io.BytesIO()
    status = []
    body = b"".join(create_app(storage)(env, lambda s, h, *a: status.append(s)))
    assert status == ["200 OK"]
    detail = json.loads(body)
    assert [t["number"] for t in detail["best_trials"]] == [1]
    assert [bool(t["constraints"]) and all(v <= 0 for v in t["constraints"])
            for t in detail["trials"]] == [False, True, True]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_resumed_study_must_keep_its_constraints(tmp_path, tiny):
    spec, study = scored_study(tmp_path, tiny, [(80.0, 0.5)])
    path = write_spec(tmp_path, tiny, constraints=[{"metric": "budget/usage", "max": 0.5}])
    changed = search.load_spec(str(path), "smoke")
    with pytest.raises(ConfigError, match=r"exists with constraints \['budget/usage <= 0\.9'\].*"
                                          r"budget/usage <= 0\.5.*--study-name"):
        search.load_study_for(changed)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_parent_run_is_terminated_with_an_end_time_when_the_study_is_complete(tmp_path, tiny):
    from reproduce.search.mlflow_side import client_and_experiment, finish_parent, parent_run

    spec, study = scored_study(tmp_path, tiny, [(80.0, 0.5)] * 3)
    c, exp_id = client_and_experiment("smoke")
    parent = parent_run(c, exp_id, study, spec, search.storage_url(), created=True)
    assert c.get_run(parent).info.status == "RUNNING" and c.get_run(parent).info.end_time is None
    assert not finish_parent(c, parent, study, spec)        # 3 of 4 trials: still running
    assert c.get_run(parent).info.end_time is None
    study.tell(study.ask(), 70.0)
    assert finish_parent(c, parent, study, spec)
    run = c.get_run(parent).info
    assert run.status == "FINISHED" and run.end_time >= run.start_time


# ----------------------------------------------------------------------- a tracked study

@pytest.mark.slow
def test_search_tracks_a_nested_study_resumes_and_reuses(tmp_path, tiny, capsys):
    import optuna
    from optuna.trial import TrialState

    # the profile's own `set` overlaps a searched key: the sampled value must win
    path = write_spec(tmp_path, tiny, profiles={"smoke": {"set": {
        "train": {"lr": 0.04}, "budget": {"lambda_base": 0.02}}}})
    assert main(["search", str(path), "--quiet"]) == 0
    spec, study = study_of(path)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    epochs = tiny["train"]["epochs"]

    c, parents, children = mlflow_runs()
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.info.end_time >= parent.info.start_time   # the study's duration
    assert parent.data.tags["optuna.study_name"] == spec.study_name == "test-search-smoke"
    assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    assert parent.data.metrics["trials/complete"] == 4
    assert len(children) == 4
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in children}
    assert sorted(by_number) == [0, 1, 2, 3]
    for t in trials:
        run = by_number[t.number]
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED" and tags["optuna.state"] == "COMPLETE"
        assert t.user_attrs["mlflow_run_id"] == run.info.run_id
        for key in tracking.TAGS:                  # a normal, fully tracked run
            assert key in tags, key
        assert tags["config_hash"] == t.user_attrs["config_hash"]
        assert float(run.data.params["budget.lambda_base"]) == pytest.approx(
            t.params["budget.lambda_base"])
        assert run.data.params["train.lr"] == "0.04"
        assert run.data.params["temperature.schedule"] == t.params["temperature.schedule"]
        assert run.data.metrics["objective/val/acc"] == pytest.approx(t.values[0])
        inter = c.get_metric_history(run.info.run_id, "optuna/intermediate_value")
        assert [m.step for m in inter] == list(range(1, epochs + 1))
        assert t.intermediate_values == {m.step: pytest.approx(m.value) for m in inter}
        assert set(t.user_attrs["metrics"]) >= {"val/acc", "cost/macs_ratio", "budget/usage"}
        assert t.constraints                       # constraint values for samplers and best

    # resume: the same command with more trials continues the study; a trial whose config was
    # already trained reuses that run instead of training it again
    first = trials[0]
    study.enqueue_trial(first.params)
    assert main(["search", str(path), "--trials", "5", "--quiet"]) == 0
    trials = study.get_trials()
    assert len(trials) == 5 and trials[4].state == TrialState.COMPLETE
    assert trials[4].values == first.values
    assert trials[4].user_attrs["reused_run_id"] == first.user_attrs["mlflow_run_id"]
    c, parents, children = mlflow_runs()
    assert len(parents) == 1 and len(children) == 5
    marker = next(r for r in children if r.data.tags["optuna.trial_number"] == "4")
    assert marker.data.tags["state"] == "reused" and "config_hash" not in marker.data.tags
    assert marker.data.tags["mlflow.parentRunId"] == parent.info.run_id

    # the best trial as a runnable experiment file that resolves to the trial's exact config
    shutil.copy(EXPERIMENTS_DIR / "profiles.yaml", tmp_path / "profiles.yaml")
    out = tmp_path / "best.yaml"
    assert main(["search-best", str(path), "--out", str(out)]) == 0
    best = search.best_trial(study)
    assert plan(out, "smoke")[0].hash == best.user_attrs["config_hash"]
    assert study.user_attrs["best_feasible_trials"] == [best.number]    # shown by the dashboard
    assert yaml.safe_load(out.read_text())["name"] == "test-search-best"

    # figures: accuracy vs MACs with the Pareto front, importances
    capsys.readouterr()
    assert main(["pareto", str(path)]) == 0
    figs = Path(os.environ["FIGURES_DIR"])
    for name in ("test-search-pareto.png", "test-search-pareto.pdf",
                 "test-search-importance.png", "test-search-pareto.runs.json"):
        assert (figs / name).stat().st_size > 0, name
    assert optuna.load_study(study_name=spec.study_name, storage=os.environ["OPTUNA_STORAGE"])


@pytest.mark.slow
def test_multi_objective_search_and_pareto_point(tmp_path, tiny, capsys):
    from optuna.trial import TrialState

    path = write_spec(tmp_path, tiny, constraints=None, trials=3, objectives=[
        {"metric": "val/acc", "direction": "maximize"},
        {"metric": "cost/macs_ratio", "direction": "minimize"}],
        space={"budget.target": {"type": "float", "low": 0.2, "high": 0.9}},
        sampler={"name": "nsga2", "seed": 0, "population_size": 2})
    assert main(["search", str(path), "--quiet"]) == 0
    spec, study = study_of(path)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 3
    assert study.metric_names == ["val/acc", "cost/macs_ratio"]
    front = search.pareto_trials(study)
    capsys.readouterr()
    out = tmp_path / "best.yaml"
    last = len(front) - 1
    assert main(["search-best", str(path), "--pareto-index", str(last), "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "Pareto front" in table and f"trial {front[last].number} " in table
    doc = yaml.safe_load(out.read_text())
    assert doc["runs"][0]["config"]["budget"]["target"] == pytest.approx(
        front[last].params["budget.target"])
    assert main(["pareto", str(path)]) == 0
    assert (Path(os.environ["FIGURES_DIR"]) / "test-search-pareto.png").exists()


# ------------------------------------------------------------------- several workers

@pytest.mark.slow
def test_two_worker_processes_share_one_study(tmp_path, tiny):
    from optuna.trial import TrialState

    path = write_spec(tmp_path, tiny, trials=4)
    cmd = [sys.executable, "-m", "reproduce", "search", str(path), "--quiet"]
    procs = [subprocess.Popen(cmd + ["--worker-index", str(i)], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out
    spec, study = study_of(path)
    trials = study.get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4
    assert len({t.number for t in trials}) == len(trials)
    # anything else can only be a trial one worker asked for at the same moment as the other
    assert all(t.user_attrs.get("surplus") for t in trials if t not in finished)
    c, parents, children = mlflow_runs()
    assert len(parents) == 1
    assert len(children) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in children) == \
        sorted(t.number for t in finished)
    assert {r.data.tags["optuna.state"] for r in children} == {"COMPLETE"}


@pytest.mark.slow
def test_dead_workers_trial_is_retried(tmp_path, tiny):
    """A trial whose worker stopped sending heartbeats is failed and re-run with its parameters."""
    from optuna.trial import TrialState

    path = write_spec(tmp_path, tiny, trials=1, heartbeat={"interval": 1, "grace_period": 2,
                                                           "max_retry": 1})
    spec = search.load_spec(str(path), "smoke")
    storage = search.make_storage(search.storage_url(), spec.heartbeat)
    study, created = search.open_study(spec, storage)
    assert created
    with pytest.warns(UserWarning, match="Heartbeat"):
        dead = study.ask()                               # a worker takes a trial ...
    lam = dead.suggest_float("budget.lambda_base", 0.01, 0.3, log=True)
    storage.record_heartbeat(dead._trial_id)
    c = tracking.client()
    orphan = c.create_run(tracking.experiment_id(c, "smoke"), tags={"orphan": "1"}).info.run_id
    dead.set_user_attr("mlflow_run_id", orphan)
    time.sleep(3)                                        # ... and dies: no heartbeat since
    assert main(["search", str(path), "--quiet"]) == 0
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    retry = trials[1]
    assert retry.params["budget.lambda_base"] == pytest.approx(lam)
    assert retry.system_attrs["failed_trial"] == 0
    assert retry.user_attrs["mlflow_run_id"] != orphan
    assert c.get_run(orphan).info.status == "KILLED"      # the dead worker's MLflow run is closed


# ------------------------------------------------------------------------------ pruning

@pytest.mark.slow
def test_pruned_trial_is_pruned_in_optuna_and_mlflow(tmp_path, tiny):
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState

    from reproduce.store import Store

    path = write_spec(tmp_path, tiny, trials=2,
                      space={"budget.lambda_base": {"type": "float", "low": 0.01, "high": 0.3}},
                      pruner={"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0})
    spec = search.load_spec(str(path), "smoke")
    study, _ = search.open_study(spec, search.make_storage(search.storage_url(), spec.heartbeat))
    # an earlier trial that reached 100 % every epoch: anything below is under the median
    epochs = tiny["train"]["epochs"]
    study.add_trial(optuna.trial.create_trial(
        values=[100.0], params={"budget.lambda_base": 0.05},
        distributions={"budget.lambda_base": FloatDistribution(0.01, 0.3)},
        intermediate_values={s: 100.0 for s in range(1, epochs + 1)}))
    assert main(["search", str(path), "--quiet"]) == 0
    trial = study.get_trials()[1]
    assert trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]               # stopped after the first epoch
    assert "pruned by the median pruner after epoch 1" in trial.user_attrs["stop_reason"]

    c, parents, children = mlflow_runs()
    (run,) = children
    assert run.data.tags["optuna.state"] == "PRUNED" and run.data.tags["state"] == "pruned"
    assert run.info.status == "KILLED"                          # never a finished result
    assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    assert [m.step for m in c.get_metric_history(run.info.run_id, "val/acc")] == [1]
    h = run.data.tags["config_hash"]
    assert tracking.find_finished(c, tracking.experiment_id(c, "smoke"), h) is None
    assert Store().runs("smoke", {h}).empty                        # not figure material
