"""MLflow at the edge: where runs are stored, how they are found again, how epochs are logged.

The names runs are tracked under (tags, metrics, artifacts) live in `contract.py`; this module
opens stores and writes to them. The method core never imports it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import time
from pathlib import Path
from typing import Iterable

from . import contract
from .contract import ARTIFACT_ARCH, ARTIFACT_CONFIG, ARTIFACT_MODEL, ARTIFACT_TRACES, TAGS  # noqa: F401
from .runs_view import SHARE_KEY, experiment_tags

REPO_ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT_PREFIX = "reproduce"


class StoreError(RuntimeError):
    """The tracking store cannot be reached or used; the message says how to fix it."""


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{REPO_ROOT / 'mlflow.db'}"


def _artifact_root(uri: str) -> str | None:
    """Keep a SQLite store's artifacts beside the database file, whatever the working directory."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
    return None


def client(uri: str | None = None):
    """An MlflowClient on a store that answers, or StoreError naming the store and the fix.

    One checked client per store and process: analysis asks for it once per run and artifact.
    """
    return _client(uri or tracking_uri())


@functools.lru_cache(maxsize=8)
def _client(uri: str):
    import logging
    # a tracking server makes MLflow print a "View run ... at" link for every run it ends
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    from mlflow.tracking import MlflowClient

    lock = contextlib.nullcontext()
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):]).resolve()
        if not path.parent.is_dir():
            raise StoreError(f"MLflow store {uri}: directory {path.parent} does not exist. Create "
                             f"it or point MLFLOW_TRACKING_URI at a writable sqlite:///path/mlflow.db.")
        # creating or upgrading the schema is not safe from two processes at once: serialise it
        from filelock import FileLock
        lock = FileLock(str(path) + ".init.lock", timeout=300)
    try:
        with lock:
            c = MlflowClient(tracking_uri=uri)
            c.search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 - any failure here means the store is unusable
        raise StoreError(describe_store_error(uri, e)) from None
    return c


def describe_store_error(uri: str, e: BaseException) -> str:
    """What went wrong with a store, in words that say what to do."""
    first = (str(e).strip().splitlines() or [""])[0]     # not the SQL statement that failed
    text = f"{type(e).__name__}: {first}"
    low = text.lower()
    where = f"MLflow store {uri}"
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if "not a database" in low or "malformed" in low or "file is encrypted" in low:
            return (f"{where} is corrupted or not an SQLite database ({text}). Nothing was written "
                    f"to it. Keep it aside (mv {path} {path}.broken) and a new store is created, "
                    f"or set MLFLOW_TRACKING_URI to another store.")
        if "readonly" in low or "read-only" in low or "permission denied" in low:
            return (f"{where} is read-only ({text}). Nothing was written to it. Make {path} and "
                    f"its folder writable, or set MLFLOW_TRACKING_URI to a writable store.")
        if "database is locked" in low:
            return (f"{where} is locked by another process ({text}). Nothing was written to it. "
                    f"Retry when the other process has finished, or use a tracking server "
                    f"(docs/SEARCH.md) for many concurrent writers.")
        if "no space left" in low or "disk is full" in low or "database or disk is full" in low:
            return (f"{where}: the disk is full ({text}). Free space and run the same command "
                    f"again: interrupted runs resume from their last checkpoint.")
        return (f"{where} cannot be used ({text}). Set MLFLOW_TRACKING_URI to a working store, "
                f"e.g. sqlite:///mlflow.db.")
    if uri.startswith(("http://", "https://")):
        return (f"{where} does not answer ({text}). Start the server (scripts/services.sh start "
                f"starts a local one) or set MLFLOW_TRACKING_URI to a reachable store.")
    return f"{where} cannot be used ({text}). Set MLFLOW_TRACKING_URI to a working store."


def experiment_name(profile: str) -> str:
    return f"{EXPERIMENT_PREFIX}-{profile}"


# The experiment's kind, for MLflow UIs that read it (before the sidebar's GenAI / Model training
# switch). MLflow 3.17's UI does not: there the switch alone, kept per browser, decides whether
# an experiment opens on its runs table or its GenAI overview (see WORKFLOW below, and
# reproduce.mlflow_app, which makes "Model training" the choice of a browser that has none).
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


def experiment_id(c, profile: str, create: bool = True) -> str | None:
    """The profile's experiment; with `create`, made if missing and checked writable (a store
    that cannot be written stops here, before anything is trained), and given the suite's runs
    view and description (`runs_view`)."""
    name = experiment_name(profile)
    try:
        exp = c.get_experiment_by_name(name)
        if exp is not None:
            if create:                     # also the write probe
                c.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
                for key, value in experiment_tags(profile, exp.tags).items():
                    if exp.tags.get(key) != value:
                        c.set_experiment_tag(exp.experiment_id, key, value)
            return exp.experiment_id
        if not create:
            return None
        try:
            return c.create_experiment(name, artifact_location=_artifact_root(c.tracking_uri),
                                       tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND,
                                             **experiment_tags(profile)})
        except Exception:  # noqa: BLE001 - created meanwhile by another process?
            exp = c.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id
    except StoreError:
        raise
    except Exception as e:  # noqa: BLE001 - a store that answers reads but not writes
        raise StoreError(describe_store_error(c.tracking_uri, e)) from None


def ui_base(port: str | int | None = None, host: str = "127.0.0.1") -> str:
    """Where `make mlflow-ui` serves the UI: 127.0.0.1 on $PORT (default 5000)."""
    return f"http://{host}:{port or os.environ.get('PORT') or 5000}"


# MLflow 3 opens experiments and runs in its GenAI mode (overview, traces, "Evaluation run")
# until a browser chooses otherwise, whatever the experiment's kind tag says: every link the
# suite prints names the model-training mode.
WORKFLOW = "workflowType=machine_learning"


def runs_table_url(experiment: str, base: str | None = None) -> str:
    """The link to an experiment's runs table in the suite's view (columns and charts of
    `runs_view`), in the UI's model-training mode."""
    return f"{base or ui_base()}/#/experiments/{experiment}/runs?{WORKFLOW}&viewStateShareKey={SHARE_KEY}"


def run_url(experiment: str, run_id: str, base: str | None = None) -> str:
    """The link to one run's page, shown as a training run."""
    return f"{base or ui_base()}/#/experiments/{experiment}/runs/{run_id}?{WORKFLOW}"


def find_finished(c, exp_id: str, config_hash: str):
    """The newest finished run with this config hash, or None."""
    runs = c.search_runs([exp_id], f"tags.config_hash = '{config_hash}' and "
                         f"attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"],
                         max_results=1)
    return runs[0] if runs else None


def find_unfinished(c, exp_id: str, config_hash: str):
    """The newest run with this config hash that was interrupted (KILLED) or is still marked
    RUNNING (its process may have died without a word), or None. FAILED runs are not resumed."""
    runs = c.search_runs([exp_id], f"tags.config_hash = '{config_hash}'",
                         order_by=["attributes.start_time DESC"], max_results=50)
    runs = [r for r in runs if r.info.status in ("RUNNING", "KILLED")]
    # runs stopped on purpose (a pruned search trial) and search trials are not resumed here
    runs = [r for r in runs if "stop_reason" not in r.data.tags
            and "mlflow.parentRunId" not in r.data.tags]
    return runs[0] if runs else None


def last_step(c, run_id: str, key: str) -> int:
    """The last step logged for `key` in a run (-1 when none)."""
    history = c.get_metric_history(run_id, key)
    return max((m.step for m in history), default=-1)


def state_dir(uri: str | None = None) -> Path:
    """Where checkpoints and claims live: beside a SQLite store's file; for a server, in
    $REPRODUCE_STATE_DIR (a folder every machine sharing the server can reach) or ./.state."""
    uri = uri or tracking_uri()
    if os.environ.get("REPRODUCE_STATE_DIR"):
        return Path(os.environ["REPRODUCE_STATE_DIR"])
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).resolve().parent / "checkpoints"
    return REPO_ROOT / ".state"


def claim(uri: str | None, exp_id: str, config_hash: str, wait: bool = False):
    """A lock that one process at a time holds while it trains a config: None if another holds
    it, or with `wait`, the lock once the other has let it go. The operating system releases it
    when the holder dies, however it dies."""
    from filelock import FileLock, Timeout

    folder = state_dir(uri) / "claims"
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / f"{exp_id}-{config_hash}.lock"))
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except Timeout:
        return None
    return lock


def add_figures(c, run, figures: Iterable[str]) -> None:
    """Record that more figures use an existing run (union of the `figures` tag)."""
    have = [f for f in run.data.tags.get("figures", "").split(",") if f]
    merged = sorted(set(have) | set(figures))
    if merged != sorted(have):
        c.set_tag(run.info.run_id, "figures", ",".join(merged))


def log_metrics(c, run_id: str, metrics: dict[str, float], step: int) -> None:
    """One batch call per epoch (chunked at MLflow's 1000-metric limit)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    for i in range(0, len(items), 1000):
        c.log_batch(run_id, metrics=items[i:i + 1000], synchronous=True)


def split_epoch_stats(stats: dict[str, float], constant: set[str],
                      shared_temperature: bool) -> tuple[dict[str, float], dict[str, float]]:
    """A step's stats as (series, constants): what is logged per epoch, and what keeps its value
    for the whole run (`constant`, contract.CONSTANT_PREFIXES) and is logged once as params.
    Under a shared β the per-layer temperatures, which repeat one number, become the one
    contract.TEMPERATURE_GLOBAL (a constant when they are)."""
    series, constants = {}, {}
    temps = {k: v for k, v in stats.items() if k.startswith(contract.TEMPERATURE)}
    for key, value in stats.items():
        if shared_temperature and key in temps:
            continue
        (constants if key in constant else series)[key] = value
    if shared_temperature and temps:
        fixed = all(k in constant for k in temps)
        (constants if fixed else series)[contract.TEMPERATURE_GLOBAL] = next(iter(temps.values()))
    return series, constants


def log_params(c, run_id: str, params: dict) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        c.log_batch(run_id, params=items[i:i + 100], synchronous=True)


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=5).stdout
        return (sha or "unknown") + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
